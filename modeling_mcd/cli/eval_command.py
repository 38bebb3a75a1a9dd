# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""`mcd eval <task>`: zero-shot classification, retrieval, linear probe and compositionality on a saved dual encoder.

    mcd eval zero-shot        --model PATH --data FOLDER [--dataset cifar10] [--classnames ...] [--templates ...]
    mcd eval retrieval        --model PATH --data captions.jsonl|FOLDER [--split test]
    mcd eval linear-probe     --model PATH --data FOLDER [--train-split train --test-split test]
    mcd eval compositionality --model PATH --data SUGARCREPE_JSONS --images IMAGE_FOLDER

Each task takes `--batch-size`, `--device` and `--output-json`, prints a table of its metrics with the chance level of
each and returns 0. The image data may be a class folder, a saved `datasets` dataset or a CLIP_benchmark webdataset
folder (`evaluation.wds`); class names and templates may come in CLIP_benchmark's files (`evaluation.prompt_files`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..evaluation import (
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
from ..evaluation.datasets import ON_BAD_IMAGE_CHOICES
from ..evaluation.prompt_files import assign_classnames, data_dataset_names, read_prompt_values
from ..evaluation.report import eval_chance, format_metrics
from ..evaluation.templates import available_datasets, check_templates
from .errors import (
    ArgumentParser,
    check_model_folder,
    check_output_file,
    check_utf8_lines,
    positive_int,
    torch_device,
)


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


def _zero_shot_prompt_files(args: argparse.Namespace):
    """`--templates` and `--classnames` read (the entry of `--dataset`, else of the data's name, in a
    `{dataset: [...]}` file), and whether `--dataset` names shipped prompts; before any data is read."""
    named = args.dataset is not None
    datasets = [args.dataset, args.dataset.removeprefix("wds/")] if named else data_dataset_names(args.data)
    templates = read_prompt_values(args.templates, "--templates", datasets, named) if args.templates else None
    classnames = None
    if args.classnames:
        classnames = read_prompt_values(args.classnames, "--classnames", datasets, named, mapping=True)
    shipped = named and args.dataset.lower() in available_datasets()
    keyed = any(given is not None and given.entry is not None for given in (templates, classnames))
    if named and not shipped and not keyed:
        raise ValueError(f"--dataset {args.dataset!r} has no prompts; known: {available_datasets()} (or name an "
                         "entry of a {dataset: [...]} --templates or --classnames file)")  # fmt: skip
    return templates, classnames, shipped


def eval_zero_shot(args: argparse.Namespace) -> int:
    _check_eval_arguments(args)
    templates, classnames, shipped = _zero_shot_prompt_files(args)
    if templates is not None:
        check_templates(templates.values, source=f"--templates {args.templates}")
    data = _labelled_images(args, args.split)
    if classnames is not None:
        given, source = classnames, f"--classnames {args.classnames}"
    elif shipped:
        given, source = list(load_prompts(args.dataset).classnames), f"--dataset {args.dataset}"
    else:
        given, source = None, args.data
    names, line = assign_classnames(given, data, source)
    print(f"mcd eval zero-shot: {line}")
    if len(names) <= int(data.labels.max()):
        raise ValueError(f"{len(names)} class names, but the labels reach {int(data.labels.max())}")
    if len(names) < 2:  # one class: every image is right, and the accuracy says nothing
        raise ValueError(f"zero-shot classification needs at least 2 classes; {source} gives {len(names)}")
    if templates is not None:
        prompts = templates.values
    elif shipped or data.templates is None:
        prompts = list(get_templates(args.dataset))
    else:
        prompts = data.templates
        check_templates(prompts, source=f"the templates of {args.data}")

    model, preprocess, tokenizer = load_model_and_processor(args.model, device=args.device)
    classifier = build_zero_shot_classifier(model, tokenizer, names, prompts, batch_size=args.batch_size)
    image_features = encode_images(model, data.images, preprocess, batch_size=args.batch_size)
    return report(args, "zero-shot", zero_shot_metrics(image_features, classifier, data.labels), len(names))


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
        "--data",
        required=True,
        help="image folder (<class>/<image>, optional classnames.json), CLIP_benchmark webdataset folder "
        "(classnames.txt + <split>/*.tar) or saved dataset",
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
    zero_shot.add_argument("--split", help="split of a dataset with several (default for a webdataset folder: test)")
    zero_shot.add_argument(
        "--dataset",
        help=f"use this dataset's class names and templates ({', '.join(available_datasets())}); or pick this "
        "entry of a CLIP_benchmark {dataset: [...]} --classnames / --templates file (default: the data folder's "
        "name, e.g. cifar10 for cifar10/test or wds_cifar10)",
    )
    zero_shot.add_argument(
        "--classnames",
        help="class names: a list (JSON file, classnames.txt with one name a line, or inline JSON) given to the "
        "classes in label order, which for an image folder is the SORTED order of its folder names (for a "
        "webdataset folder, its .cls label ids); the pairing is printed. Or a {folder: name} JSON object (file or "
        "inline), in any order; or a CLIP_benchmark {dataset: [names]} file",
    )
    zero_shot.add_argument(
        "--templates",
        help="prompt templates with one '{}' or '{c}': a JSON list, a .txt file with one a line, or a CLIP_benchmark "
        "{dataset: [templates]} file (default: the dataset's, a webdataset folder's "
        "zeroshot_classification_templates.txt, else CLIP's 80)",
    )
    zero_shot.set_defaults(func=eval_zero_shot)

    retrieval = tasks.add_parser("retrieval", parents=[common], help="image-text retrieval, R@1/5/10")
    retrieval.add_argument(
        "--data",
        required=True,
        help="captions.jsonl (file_name + captions), the folder that holds it, or a CLIP_benchmark webdataset "
        "retrieval folder (<split>/*.tar with .txt captions)",
    )
    retrieval.add_argument(
        "--split", default="test", help="keep rows with this 'split', or read this split folder (default: test)"
    )
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


__all__ = [
    "add_eval_parser",
    "eval_compositionality",
    "eval_linear_probe",
    "eval_retrieval",
    "eval_zero_shot",
    "report",
]
