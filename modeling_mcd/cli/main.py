# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""The `mcd` command.

    mcd eval zero-shot        --model PATH --data FOLDER [--dataset cifar10] [--classnames ...] [--templates ...]
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
(`modeling_mcd.cli.errors`).

Each command is one `add_*_parser(commands)` function plus one function per task that takes the parsed
arguments and returns the exit code, so new commands plug into [`build_parser`]; the `eval` tasks live in
`modeling_mcd.cli.eval_command`.
"""

from __future__ import annotations

import argparse
import sys

from .errors import (
    DUAL_ENCODER_TYPES,
    ArgumentParser,
    at_least,
    check_model_folder,
    check_model_output,
    check_output_folder,
    positive_int,
    run_command,
)
from .eval_command import add_eval_parser


def export_command(args: argparse.Namespace) -> int:
    """`mcd export`: a saved MCD folder -> a stock VisionTextDualEncoderModel folder (no custom code)."""
    from ..export import export_to_vision_text_dual_encoder

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
    from ..hub.model_card import refresh_model_card

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
    from ..hub.push import push_model

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
        f"pushed {kind}{args.model_dir} to https://huggingface.co/{args.repo_id} "
        f"({getattr(commit, 'commit_url', commit)})"
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
    from ..evaluation.analysis import analyze

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
