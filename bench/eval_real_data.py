# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Real-data evaluation of one saved model: CIFAR-10 zero-shot and Flickr8k test retrieval.

    python bench/eval_real_data.py --model PATH [--data-root ../shared/data] [--output-json FILE]

- CIFAR-10 test (1,000 images, 10 classes x 100), CLIP's 18 CIFAR-10 templates: top-1 / top-5 and
  mean per-class accuracy.
- Flickr8k test (1,000 images x 5 captions, 64x64): image->text and text->image R@1/5/10, ranks.

Every metric is printed next to its chance level (a random ranking), with the seconds each stage took. The tasks are
those a training run evaluates (`modeling_mcd.evaluation.tasks.build_eval_tasks`). The model folder may hold an
MCDModel, a CLIPModel or a VisionTextDualEncoderModel.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from modeling_mcd.evaluation import load_model_and_processor
from modeling_mcd.evaluation.report import format_metrics
from modeling_mcd.evaluation.tasks import build_eval_tasks

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="saved MCDModel / CLIPModel / VisionTextDualEncoderModel folder")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="the shared data folder")
    parser.add_argument("--batch-size", type=int, default=128, help="images encoded at once")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output-json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    # 1. Load the model and its processor.
    start = time.perf_counter()
    model, preprocess, tokenizer = load_model_and_processor(args.model, device=args.device)
    print(f"model {args.model}: {type(model).__name__}, loaded in {time.perf_counter() - start:.1f} s on {args.device}")

    # 2. Run each benchmark, timing it: the same evaluation tasks as a training run's.
    tasks = build_eval_tasks(
        zero_shot_folder=str(args.data_root / "cifar10" / "test"),
        zero_shot_templates="cifar10",
        retrieval_file=str(args.data_root / "flickr8k" / "captions.jsonl"),
    )
    results = {}
    for task in tasks:
        start = time.perf_counter()
        metrics = task.run(model, tokenizer, preprocess, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        chance = task.chance_metrics()
        print("\n" + format_metrics(f"{task.name} ({len(task.images)} images, {seconds:.1f} s)", metrics, chance))
        results[task.name] = {"metrics": metrics, "chance": chance, "seconds": seconds}

    # 3. Save.
    if args.output_json:
        args.output_json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"model": args.model, "device": args.device, **results}
        args.output_json.write_text(json.dumps(summary, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
