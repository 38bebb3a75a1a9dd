# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Real-data evaluation of one saved model: CIFAR-10 zero-shot and Flickr8k test retrieval.

    python bench/eval_real_data.py --model PATH [--data-root ../shared/data] [--output-json FILE]

- CIFAR-10 test (1,000 images, 10 classes x 100), CLIP's 18 CIFAR-10 templates: top-1 / top-5 and
  mean per-class accuracy.
- Flickr8k test (1,000 images x 5 captions, 64x64): image->text and text->image R@1/5/10, ranks.

Every metric is printed next to its chance level (random embeddings) and the ratio of the two, all
measured in this one run, with the seconds each stage took. The model folder may hold an MCDModel, a
CLIPModel or a VisionTextDualEncoderModel.
"""

from __future__ import annotations

import argparse
import json
import time
from math import comb
from pathlib import Path

import torch

from modeling_mcd.evaluation import (
    build_zero_shot_classifier,
    encode_images,
    encode_texts,
    load_captioned_images,
    load_labelled_images,
    load_model_and_processor,
    load_prompts,
    retrieval_metrics,
    zero_shot_metrics,
)

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def zero_shot_cifar10(model, preprocess, tokenizer, data_root: Path, batch_size: int) -> tuple[dict, dict]:
    """CIFAR-10 zero-shot metrics and their chance levels."""
    data = load_labelled_images(data_root / "cifar10" / "test")
    prompts = load_prompts("cifar10")
    if data.classnames != list(prompts.classnames):
        raise ValueError(f"{data_root}/cifar10 class order {data.classnames} differs from the CIFAR-10 prompts")
    classifier = build_zero_shot_classifier(model, tokenizer, prompts.classnames, prompts.templates, batch_size=256)
    image_features = encode_images(model, data.images, preprocess, batch_size=batch_size)
    metrics = zero_shot_metrics(image_features, classifier, data.labels)
    num_classes = len(prompts.classnames)
    chance = {"top1": 1 / num_classes, "top5": min(5, num_classes) / num_classes}
    chance["mean_per_class_accuracy"] = 1 / num_classes
    return metrics, chance


def retrieval_flickr8k(model, preprocess, tokenizer, data_root: Path, batch_size: int) -> tuple[dict, dict]:
    """Flickr8k test retrieval metrics and their chance levels."""
    data = load_captioned_images(data_root / "flickr8k", split="test")
    image_features = encode_images(model, data.images, preprocess, batch_size=batch_size)
    text_features = encode_texts(model, tokenizer, data.captions, batch_size=256)
    metrics = retrieval_metrics(image_features, text_features, data.text_to_image)
    num_images, num_texts = len(data.images), len(data.captions)
    per_image = num_texts // num_images
    chance = {}
    for k in (1, 5, 10):
        # A caption's image is one of I; an image hits when any of its captions is among K of T positions.
        chance[f"text_to_image_R@{k}"] = k / num_images
        chance[f"image_to_text_R@{k}"] = 1 - comb(num_texts - per_image, k) / comb(num_texts, k)
    chance["text_to_image_mean_rank"] = (num_images + 1) / 2
    chance["image_to_text_mean_rank"] = (num_texts + 1) / (per_image + 1)  # the best of `per_image` random ranks
    return metrics, chance


def print_table(title: str, metrics: dict, chance: dict, seconds: float) -> None:
    print(f"\n{title}  ({seconds:.1f} s)")
    print(f"{'metric':<28}{'value':>10}{'chance':>10}{'ratio':>8}")
    for name, value in metrics.items():
        if name not in chance:
            continue
        print(f"{name:<28}{value:>10.4f}{chance[name]:>10.4f}{value / chance[name]:>8.2f}")


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

    # 2. Run each benchmark, timing it.
    results = {}
    for name, run in (("cifar10_zero_shot", zero_shot_cifar10), ("flickr8k_retrieval", retrieval_flickr8k)):
        start = time.perf_counter()
        metrics, chance = run(model, preprocess, tokenizer, args.data_root, args.batch_size)
        seconds = time.perf_counter() - start
        print_table(name, metrics, chance, seconds)
        results[name] = {"metrics": metrics, "chance": chance, "seconds": seconds}

    # 3. Save.
    if args.output_json:
        args.output_json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"model": args.model, "device": args.device, **results}
        args.output_json.write_text(json.dumps(summary, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
