# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The `mcd` command.

    mcd eval zero-shot        --model PATH --data FOLDER [--dataset cifar10]
    mcd eval retrieval        --model PATH --data captions.jsonl|FOLDER [--split test]
    mcd eval linear-probe     --model PATH --data FOLDER [--train-split train --test-split test]
    mcd eval compositionality --model PATH --data SUGARCREPE_JSONS --images IMAGE_FOLDER
    mcd export --model PATH --output-dir STOCK_FOLDER
    mcd card MODEL_DIR [--results eval.json ...] [--repo-id org/name]
    mcd push MODEL_DIR org/name [--private] [--token TOKEN] [--commit-message MSG] [--stock]
    mcd analyze MODEL_DIR [--data synthetic|captions.jsonl] [--output-dir DIR] [--overwrite]

Every `eval` task takes `--batch-size`, `--device` and `--output-json`, prints a table of its metrics with the
chance level of each and returns 0. A model folder may hold an `MCDModel`, a `CLIPModel` or a
`VisionTextDualEncoderModel`. A user mistake ends any command in one `mcd: error: ...` line (exit code 2; 1 when
the Hub cannot be reached), a bug in a traceback; `mcd --debug` shows the traceback of every error
(`modeling_mcd.cli_errors`).

Each command is one `add_*_parser(commands)` function plus one function per task that takes the parsed
arguments and returns the exit code, so new commands plug into [`build_parser`].
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .cli_errors import (
    DUAL_ENCODER_TYPES,
    ArgumentParser,
    at_least,
    check_model_folder,
    check_model_output,
    check_output_file,
    check_output_folder,
    check_utf8_lines,
    positive_int,
    run_command,
    torch_device,
)
from .evaluation import (
    build_zero_shot_classifier,
    compositionality_metrics,
    encode_images,
    encode_texts,
    get_templates,
    linear_probe_metrics,
    load_captioned_images,
    load_labelled_images,
    load_model_and_processor,
    load_prompts,
    load_sugarcrepe,
    retrieval_metrics,
    zero_shot_metrics,
)
from .evaluation.data import ON_BAD_IMAGE_CHOICES
from .evaluation.report import eval_chance, format_metrics
from .evaluation.templates import available_datasets, check_templates


# ------------------------------------------------------------------------------------------- output
def report(args: argparse.Namespace, task: str, metrics: dict, num_classes: int | None = None) -> int:
    """Print the metrics next to their chance levels, and write both, with the run's arguments, to `--output-json`."""
    chance = eval_chance(task, metrics, num_classes)
    print(format_metrics(f"mcd eval {task}: {args.model}", metrics, chance))
    if args.output_json:
        settings = {key: value for key, value in vars(args).items() if key != "func"}
        path = Path(args.output_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        result = {"task": task, "args": settings, "metrics": metrics, "chance": chance}
        path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _read_string_list(path: str, what: str) -> list[str]:
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"--{what} {path} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--{what} {path}: {error}") from error
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"--{what} {path} must hold a JSON list of strings")
    return values


# ----------------------------------------------------------------------------------------- eval tasks
def _labelled_images(args: argparse.Namespace, split: str | None):
    """`--data` (and `split`) read with `load_labelled_images`; prints how many images are used (and which were
    skipped)."""
    data = load_labelled_images(args.data, split, args.image_column, args.label_column, args.on_bad_image)
    where = f"{args.data} (split {split})" if split else args.data
    print(f"mcd eval {args.task}: {data.describe(where)}")
    return data


def _check_eval_arguments(args: argparse.Namespace, tokenizer: bool = True) -> None:
    """What can be checked before any data is read or any weights are loaded: the model folder, `--output-json`."""
    check_model_folder(args.model, "--model", image_processor=True, tokenizer=tokenizer)
    check_output_file(args.output_json, "--output-json")


def eval_zero_shot(args: argparse.Namespace) -> int:
    _check_eval_arguments(args)
    if args.dataset and args.dataset.lower() not in available_datasets():
        raise ValueError(f"--dataset {args.dataset!r} has no prompts; known: {available_datasets()}")
    data = _labelled_images(args, args.split)
    if args.classnames:
        classnames = _read_string_list(args.classnames, "classnames")
    elif args.dataset:
        classnames = list(load_prompts(args.dataset).classnames)
    else:
        classnames = data.classnames
    if classnames is None:
        raise ValueError(f"{args.data}: the labels have no class names; give --classnames or --dataset")
    source = "--classnames" if args.classnames else f"--dataset {args.dataset}" if args.dataset else args.data
    if data.num_classes is not None and len(classnames) != data.num_classes:
        raise ValueError(
            f"{len(classnames)} class names ({source}) do not match the {data.num_classes} classes of {args.data}"
        )
    if len(classnames) <= int(data.labels.max()):
        raise ValueError(f"{len(classnames)} class names, but the labels reach {int(data.labels.max())}")
    if len(classnames) < 2:  # one class: every image is right, and the accuracy says nothing
        raise ValueError(f"zero-shot classification needs at least 2 classes; {source} gives {len(classnames)}")
    templates = _read_string_list(args.templates, "templates") if args.templates else list(get_templates(args.dataset))
    check_templates(templates, source="--templates" if args.templates else "templates")

    model, preprocess, tokenizer = load_model_and_processor(args.model, device=args.device)
    classifier = build_zero_shot_classifier(model, tokenizer, classnames, templates, batch_size=args.batch_size)
    image_features = encode_images(model, data.images, preprocess, batch_size=args.batch_size)
    return report(args, "zero-shot", zero_shot_metrics(image_features, classifier, data.labels), len(classnames))


def eval_retrieval(args: argparse.Namespace) -> int:
    _check_eval_arguments(args)
    data = load_captioned_images(args.data, split=args.split)
    if len(data.images) < 2:  # one image: every caption finds it, and the recall says nothing
        raise ValueError(f"retrieval needs at least 2 images; {args.data} (split {args.split}) has {len(data.images)}")
    model, preprocess, tokenizer = load_model_and_processor(args.model, device=args.device)
    image_features = encode_images(model, data.images, preprocess, batch_size=args.batch_size)
    text_features = encode_texts(model, tokenizer, data.captions, batch_size=args.batch_size)
    return report(args, "retrieval", retrieval_metrics(image_features, text_features, data.text_to_image))


def eval_linear_probe(args: argparse.Namespace) -> int:
    _check_eval_arguments(args, tokenizer=False)
    if args.train_split == args.test_split:
        raise ValueError(f"--train-split and --test-split are both {args.train_split!r}: the probe would be tested on "
                         "the images it was fitted on")  # fmt: skip
    model, preprocess, _ = load_model_and_processor(args.model, device=args.device)
    splits = {"train": args.train_split, "val": args.val_split, "test": args.test_split}
    features, num_classes = {}, None
    for name, split in splits.items():
        if split is None:
            continue
        data = _labelled_images(args, split)
        if name == "train":
            num_classes = data.num_classes or int(data.labels.max()) + 1
            if num_classes < 2:
                raise ValueError(f"a linear probe needs at least 2 classes; split {split!r} has {num_classes}")
        features[name] = (encode_images(model, data.images, preprocess, batch_size=args.batch_size), data.labels)
    val_features, val_labels = features.get("val", (None, None))
    metrics = linear_probe_metrics(
        *features["train"],
        *features["test"],
        val_features=val_features,
        val_labels=val_labels,
        max_iter=args.max_iter,
        seed=args.seed,
    )
    return report(args, "linear-probe", metrics, num_classes)


def eval_compositionality(args: argparse.Namespace) -> int:
    _check_eval_arguments(args)
    annotations = Path(args.data)  # read as UTF-8 by the loader, whose error would name no file
    check_utf8_lines(*(sorted(annotations.glob("*.json")) if annotations.is_dir() else [annotations]))
    data = load_sugarcrepe(args.data, args.images)
    model, preprocess, tokenizer = load_model_and_processor(args.model, device=args.device)
    image_features = encode_images(model, data.images, preprocess, batch_size=args.batch_size)  # (distinct, P)
    captions = encode_texts(model, tokenizer, data.captions, batch_size=args.batch_size)  # (N, P)
    negatives = encode_texts(model, tokenizer, data.negative_captions, batch_size=args.batch_size)  # (N, P)
    metrics = compositionality_metrics(image_features[data.image_index], captions, negatives, data.categories)
    return report(args, "compositionality", metrics)


# -------------------------------------------------------------------------------------------- parsers
def _common_eval_arguments() -> argparse.ArgumentParser:
    common = ArgumentParser(add_help=False)
    common.add_argument("--model", required=True, help="folder of an MCDModel, CLIPModel or VisionTextDualEncoderModel")
    common.add_argument("--batch-size", type=positive_int, default=64, help="images or texts encoded at once")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    common.add_argument(
        "--device", type=torch_device, default=default_device, help=f"torch device (default: {default_device})"
    )
    common.add_argument("--output-json", help="also write the metrics and arguments to this JSON file")
    return common


def _labelled_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="image folder (<class>/<image>, optional classnames.json) or saved dataset"
    )
    parser.add_argument("--image-column", default="image", help="image column of a datasets dataset")
    parser.add_argument("--label-column", default="label", help="label column of a datasets dataset")
    parser.add_argument(
        "--on-bad-image",
        choices=ON_BAD_IMAGE_CHOICES,
        default="skip",
        help="an image of the folder that cannot be read: leave it out, counted and named (skip), or stop (raise)",
    )


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    """`mcd eval <task>`: one sub-parser per evaluation task."""
    eval_parser = commands.add_parser("eval", help="evaluate a dual encoder")
    tasks = eval_parser.add_subparsers(dest="task", required=True, metavar="TASK")
    common = _common_eval_arguments()

    zero_shot = tasks.add_parser("zero-shot", parents=[common], help="zero-shot image classification")
    _labelled_data_arguments(zero_shot)
    zero_shot.add_argument("--split", help="split of a dataset with several")
    zero_shot.add_argument(
        "--dataset", help=f"use this dataset's class names and templates ({', '.join(available_datasets())})"
    )
    zero_shot.add_argument("--classnames", help="JSON list of class names in label order")
    zero_shot.add_argument("--templates", help="JSON list of prompt templates with one '{}' (default: CLIP's 80)")
    zero_shot.set_defaults(func=eval_zero_shot)

    retrieval = tasks.add_parser("retrieval", parents=[common], help="image-text retrieval, R@1/5/10")
    retrieval.add_argument(
        "--data", required=True, help="captions.jsonl (file_name + captions) or the folder that holds it"
    )
    retrieval.add_argument("--split", default="test", help="keep rows with this 'split' (default: test)")
    retrieval.set_defaults(func=eval_retrieval)

    probe = tasks.add_parser("linear-probe", parents=[common], help="logistic regression on frozen image features")
    _labelled_data_arguments(probe)
    probe.add_argument("--train-split", default="train")
    probe.add_argument("--val-split", help="picks the L2 strength; default: 20%% of the training split")
    probe.add_argument("--test-split", default="test")
    probe.add_argument("--max-iter", type=positive_int, default=1000, help="L-BFGS iterations")
    probe.add_argument("--seed", type=int, default=0)
    probe.set_defaults(func=eval_linear_probe)

    compositionality = tasks.add_parser("compositionality", parents=[common], help="SugarCrepe accuracy")
    compositionality.add_argument("--data", required=True, help="SugarCrepe JSON file or folder of them")
    compositionality.add_argument("--images", required=True, help="folder the 'filename' fields are relative to")
    compositionality.set_defaults(func=eval_compositionality)


def export_command(args: argparse.Namespace) -> int:
    """`mcd export`: a saved MCD folder -> a stock VisionTextDualEncoderModel folder (no custom code)."""
    from .export import export_to_vision_text_dual_encoder

    check_model_folder(args.model, "--model", model_types=("mcd",), image_processor=True, tokenizer=True)
    check_model_output(args.output_dir, args.model, args.overwrite)
    out = export_to_vision_text_dual_encoder(args.model, args.output_dir)
    print(f"wrote a VisionTextDualEncoderModel folder to {out}")
    return 0


def add_export_parser(commands) -> None:
    parser = commands.add_parser(
        "export", help="convert a saved MCD model to a stock transformers VisionTextDualEncoderModel folder"
    )
    parser.add_argument("--model", required=True, help="folder written by MCDModel.save_pretrained (+ processor)")
    parser.add_argument("--output-dir", required=True, help="where to write the VisionTextDualEncoderModel folder")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --output-dir")
    parser.set_defaults(func=export_command)


def card_command(args: argparse.Namespace) -> int:
    """`mcd card`: render (or refresh) the model card of a saved folder."""
    from .model_card import refresh_model_card

    path = refresh_model_card(args.model_dir, results=args.results or (), repo_id=args.repo_id)
    print(f"wrote the model card {path}")
    return 0


def add_card_parser(commands: argparse._SubParsersAction) -> None:
    """`mcd card MODEL_DIR [--results FILE ...] [--repo-id ID]`."""
    parser = commands.add_parser(
        "card", help="render or refresh the model card (README.md) of a saved MCD folder or its stock export"
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the saved folder (e.g. runs/demo/mcd-model)")
    parser.add_argument(
        "--results",
        action="append",
        metavar="FILE",
        help="evaluation JSON to add to the card: `mcd eval ... --output-json` or a run's eval_results.json "
        "(repeatable)",
    )
    parser.add_argument(
        "--repo-id", help="the Hub repository the card's snippets load from (default: the recorded one)"
    )
    parser.set_defaults(func=card_command)


def push_command(args: argparse.Namespace) -> int:
    """`mcd push`: push a saved folder (or its stock export) to the Hub."""
    from .hub import push_model

    # `--stock` exports an MCDModel; the folder itself may hold any dual encoder (pushed as it is).
    check_model_folder(args.model_dir, None, model_types=("mcd",) if args.stock else DUAL_ENCODER_TYPES)
    commit = push_model(
        args.model_dir,
        args.repo_id,
        private=True if args.private else None,
        token=args.token,
        commit_message=args.commit_message,
        stock=args.stock,
    )
    kind = "the stock VisionTextDualEncoderModel export of " if args.stock else ""
    print(
        f"pushed {kind}{args.model_dir} to https://huggingface.co/{args.repo_id} ({getattr(commit, 'commit_url', commit)})"
    )
    return 0


def add_push_parser(commands: argparse._SubParsersAction) -> None:
    """`mcd push MODEL_DIR REPO_ID [--private] [--token] [--commit-message] [--stock]`."""
    parser = commands.add_parser("push", help="push a saved MCD folder (weights, code, processor, card) to the Hub")
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the saved folder (e.g. runs/demo/mcd-model)")
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub repository, org/name (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN, then the one `hf auth login` saved)")
    parser.add_argument("--commit-message", help="message of the upload commit")
    parser.add_argument(
        "--stock",
        action="store_true",
        help="push the stock transformers VisionTextDualEncoderModel export instead (no custom code; pooler pooling)",
    )
    parser.set_defaults(func=push_command)


def analyze_command(args: argparse.Namespace) -> int:
    """`mcd analyze`: the teacher's misalignment ratios against what the augmented crop still shows."""
    from .analysis import analyze

    check_model_folder(args.model, None, tokenizer=True)
    check_output_folder(args.output_dir, "--output-dir")
    result, paths = analyze(
        args.model,
        args.data,
        args.output_dir,
        args.samples,
        args.seed,
        args.synthetic_image_size,
        base_image_size=args.base_image_size,
        overwrite=args.overwrite,
    )
    if result.note:
        print(f"mcd analyze: {result.note}")
    print(f"{result.encoder} log distance ratio vs {result.measure}: Spearman {result.spearman:.4f} over "
          f"{len(result.log_ratios)} pairs; wrote {paths['json']} and {paths['png']}")  # fmt: skip
    return 0


def add_analyze_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "analyze", help="misalignment analysis: the teacher's log distance ratios vs what the crop still shows"
    )
    parser.add_argument(
        "model",
        help="a training checkpoint (its EMA teacher; the student when the run trained no teacher) or a saved dual "
        "encoder folder",
    )
    parser.add_argument("--data", default="synthetic", help="'synthetic' or a captions.jsonl (its test split)")
    parser.add_argument(
        "--output-dir", default=".", help="where <run>-<folder>_<data>_<encoder>_misalignment.json and .png go"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier analysis")
    parser.add_argument("--samples", type=at_least(3), default=500, help="pairs analysed (at least 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the views")
    parser.add_argument("--synthetic-image-size", type=positive_int, default=64, help="side of the synthetic scenes")
    parser.add_argument(
        "--base-image-size", type=positive_int, help="the run's --base_image_size (default: 8/7 of the model's)"
    )
    parser.set_defaults(func=analyze_command)


def build_parser() -> argparse.ArgumentParser:
    """The `mcd` parser; each command adds its own sub-parser."""
    parser = ArgumentParser(prog="mcd", description="MCD: evaluate, export, document and share models")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_eval_parser(commands)
    add_export_parser(commands)
    add_analyze_parser(commands)
    add_card_parser(commands)
    add_push_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `mcd` with `argv` (defaults to `sys.argv[1:]`) and return the exit code: 0, or that of the error
    ([`cli_errors.describe_error`]); a bug's exception propagates, as every one does with `--debug`."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
