# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Does the input pipeline keep up with the model? Samples/s through decoding, the collator and the on-device views, on
real data (Flickr8k from ../shared/data), next to the model's samples/s at the same batch size.

    python bench/data.py                          # CPU: the small size of bench/step.py, batch 64, 0-2 workers
    python bench/data.py --device cuda --size vitb32 --batch 256 --workers 0 4 8 16
    python bench/data.py --tiny                   # seconds, for the tests

The pipeline is the training run's (training/run_mcd.py with MCDTrainer):
`load_image_text_dataset` -> `ImageTextDataset` (decode one JPEG, resize + centre-crop to the uint8 base size, draw a
caption) -> `KeyedSamples` -> a torch `DataLoader` with N workers collating with `SeededCollator(MCDCollator)`
(tokenize, MLM-mask each caption with its own seed) -> on the device, `MCDViews` (both views, in the training
process). The model's rate is one `mcd` training step (MLM on) on a collated batch of this data, timed with
the bench's shared code (bench/common.py, as bench/step.py times it); that step already makes the views.

Reported:
- each stage alone, in this process: decode (`dataset[i]`), collate (one batch), views (one batch on the device);
- the DataLoader's samples/s for each worker count (decode + collate in the workers; its start-up excluded);
- the chosen worker count: the fewest that feed the model 3 times over (the target), else the fastest;
- what limits it: the stage with the largest cost per sample once decode and collate are shared by the workers.

Caveat: the DataLoader is timed alone. In training its workers share the machine's cores with the model's threads
(on a 2-core CPU, fully), so the rates here are upper bounds there; on a GPU machine with spare cores they are not.
The last line of the output is one JSON object; `--json PATH` also writes it.

    python bench/data.py --processes 1 2 4        # decode work per process of a stream split across N processes

`--processes` asks another question: how much each process of an N-process run reads and decodes of a stream.
The rows are written as `--shards` webdataset shards and streamed as training streams them (`StreamOrder`: this
process's share of the shards, reshuffled, through the buffer); each of the N ranks is simulated in this process,
one after the other, for one epoch, and its rows read and samples decoded are counted. Next to it, the same count
for accelerate's own split of a stream (`IterableDatasetShard`: every process reads and decodes the whole stream and
keeps 1 batch of N). Decoding per process must fall as 1/N.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import torch

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "flickr8k" / "captions.jsonl"
TARGET = 3.0  # the input pipeline must feed the model at least 3 times over


def load_rows(path: Path, samples: int | None):
    """Flickr8k's jsonl as `load_image_text_dataset` opens it (image paths relative to the file, 5 captions a row)."""
    from modeling_mcd.data import load_image_text_dataset

    rows = load_image_text_dataset(str(path), image_column="file_name", caption_column="captions")
    return rows.select(range(min(samples, len(rows)))) if samples else rows


def build_pipeline(rows, size: common.Size, seed: int = 0):
    """The run's dataset, tokenizer and collator: (KeyedSamples, SeededCollator, tokenizer)."""
    from modeling_mcd.data import KeyedSamples, MCDCollator, SeededCollator, image_text_dataset
    from modeling_mcd.trainer.builder import caption_corpus
    from modeling_mcd.trainer.wordpiece import train_wordpiece_tokenizer

    tokenizer = train_wordpiece_tokenizer(caption_corpus(rows), vocab_size=size.vocab_size)
    dataset = KeyedSamples(image_text_dataset(rows, size.base_image_size, seed=seed))
    collator = SeededCollator(MCDCollator(tokenizer=tokenizer, max_length=size.text_length), seed)
    return dataset, collator, tokenizer


def time_decode(dataset, count: int) -> float:
    """Seconds per sample of `dataset[i]`: read, decode, resize + crop to the base size, draw a caption."""
    for index in range(min(8, len(dataset))):  # warm-up: the image plugins load on first use
        dataset[index]
    start = time.perf_counter()
    for index in range(count):
        dataset[index % len(dataset)]
    return (time.perf_counter() - start) / count


def time_collate(dataset, collator, batch: int, repeats: int = 3) -> tuple[float, dict[str, Any]]:
    """Seconds per sample of the collator on one batch (median of `repeats`), and that batch."""
    samples = [dataset[index % len(dataset)] for index in range(batch)]
    times, collated = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        collated = collator(samples)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / batch, collated


def time_loader(dataset, collator, batch: int, workers: int, batches: int, seed: int = 0) -> dict[str, float]:
    """The DataLoader's samples/s over `batches` batches after the first (start-up, timed apart), with `workers`."""
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=(batches + 1) * batch, generator=torch.Generator().manual_seed(seed)
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collator,
        drop_last=True,
        prefetch_factor=4 if workers else None,
    )
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    elapsed = time.perf_counter() - start
    del iterator
    return {"workers": workers, "first_batch_s": first, "samples_per_s": count * batch / elapsed}


def model_rate(
    size: common.Size, collated: dict[str, Any], device: torch.device, dtype: str, warmup: int, steps: int
) -> tuple[float, common.Runner]:
    """Seconds of one `mcd` training step (bench/common.py's runner) on `collated` (real data), and the runner."""
    batch = collated["pixel_values"].shape[0]
    runner = common.build_ours(size, "mcd", device, batch, dtype, tempfile.mkdtemp(prefix="mcd-bench-"))
    runner.inputs = {name: value.to(device) if torch.is_tensor(value) else value for name, value in collated.items()}
    for _ in range(max(warmup, 1)):
        common.timed(runner.step, device)
    return statistics.median(common.timed(runner.step, device) for _ in range(steps)), runner


def choose_workers(loaders: list[dict[str, Any]], model_samples_per_s: float) -> dict[str, Any]:
    """The loader to use: the fewest workers that feed the model `TARGET` times over, else the fastest. Each loader's
    `over_model` (its samples/s over the model's) is set on the way."""
    for loader in loaders:
        loader["over_model"] = loader["samples_per_s"] / model_samples_per_s
    feeding = [loader for loader in loaders if loader["over_model"] >= TARGET]
    if feeding:
        return min(feeding, key=lambda loader: loader["workers"])
    return max(loaders, key=lambda loader: loader["samples_per_s"])


def stage_costs(decode_s: float, collate_s: float, views_batch_s: float, batch: int, workers: int) -> dict[str, float]:
    """Seconds per sample of each stage where it runs: decode and collate (seconds per sample in one process) shared by
    the `workers` (the training process itself when 0), the views (seconds per batch) in the training process."""
    shared = max(workers, 1)
    return {"decode": decode_s / shared, "collate": collate_s / shared, "views": views_batch_s / batch}


def write_shards(rows, folder: Path, shards: int) -> str:
    """`rows` (a caption file's: image paths and captions) as `shards` webdataset tar files of (jpg, txt) samples,
    dealt round-robin; returns the brace pattern naming them."""
    import tarfile

    for shard in range(shards):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for index in range(shard, len(rows), shards):
                row = rows[index]
                caption = row["caption"][0] if isinstance(row["caption"], list) else row["caption"]
                suffix = Path(row["image"]).suffix.lstrip(".").lower() or "jpg"
                tar.add(row["image"], arcname=f"{index:08d}.{suffix}")
                data = caption.encode()
                info = tarfile.TarInfo(f"{index:08d}.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def decode_work(stream, size: common.Size, processes: int, seed: int = 0) -> dict[str, Any]:
    """One epoch of `stream` on `processes` simulated ranks: rows read and samples decoded by each, with this
    package's split (each its own share) and with accelerate's (each reads everything and keeps 1 batch of N)."""
    from accelerate.data_loader import IterableDatasetShard

    from modeling_mcd.data import IterableImageTextDataset, StreamOrder

    work = {name: [] for name in ("read", "decoded", "samples", "accelerate_decoded", "accelerate_samples")}
    for rank in range(processes):
        order = StreamOrder(seed, True, 64, process_index=rank, num_processes=processes)
        dataset = IterableImageTextDataset(stream, size.base_image_size, order=order)
        work["samples"].append(sum(1 for _ in dataset))
        (count,) = dataset.epoch_counts
        work["read"].append(count.read)
        work["decoded"].append(count.decoded)
        whole = IterableImageTextDataset(stream, size.base_image_size, order=StreamOrder(seed, True, 64))
        shard = IterableDatasetShard(whole, batch_size=1, drop_last=True, num_processes=processes, process_index=rank)
        work["accelerate_samples"].append(sum(1 for _ in shard))
        work["accelerate_decoded"].append(whole.epoch_counts[0].decoded)
    return {
        "processes": processes,
        **{f"{name}_per_process": values for name, values in work.items()},
        "decoded_in_job": sum(work["decoded"]),
    }


def run_processes(args: argparse.Namespace) -> dict[str, Any]:
    from modeling_mcd.data import load_image_text_dataset

    size, rows = common.SIZES[args.size], load_rows(args.data, args.samples)
    with tempfile.TemporaryDirectory(prefix="mcd-bench-shards-") as folder:
        pattern = write_shards(rows, Path(folder), args.shards)
        stream = load_image_text_dataset(pattern, streaming=True)
        work = [decode_work(stream, size, processes) for processes in args.processes]
    return {
        "date": datetime.date.today().isoformat(),
        "data": str(args.data),
        "rows": len(rows),
        "shards": args.shards,
        "decode_work": work,
    }


def report_processes(result: dict[str, Any]) -> None:
    print(f"{result['rows']} rows of {result['data']} in {result['shards']} shards, one epoch, ranks simulated")
    print(
        "| processes | rows read per process | decoded per process | decoded in the job "
        "| accelerate's split: decoded per process |"
    )
    print("| --- | --- | --- | --- | --- |")
    for work in result["decode_work"]:
        cells = [" / ".join(map(str, work[name])) for name in ("read_per_process", "decoded_per_process")]
        accelerate = " / ".join(map(str, work["accelerate_decoded_per_process"]))
        print(f"| {work['processes']} | {cells[0]} | {cells[1]} | {work['decoded_in_job']} | {accelerate} |")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.processes:
        return run_processes(args)
    size, device, batch = common.SIZES[args.size], args.device, args.batch
    start = time.perf_counter()
    rows = load_rows(args.data, args.samples)
    dataset, collator, tokenizer = build_pipeline(rows, size)
    setup_s = time.perf_counter() - start

    decode_s = time_decode(dataset, args.decode_samples)
    collate_s, collated = time_collate(dataset, collator, batch)
    loaders = [time_loader(dataset, collator, batch, workers, args.batches) for workers in args.workers]

    step_s, runner = model_rate(size, collated, device, args.dtype, args.warmup, args.steps)
    images = runner.inputs["pixel_values"]
    views_batch_s = statistics.median(
        common.timed(lambda: runner.trainer.views(images, seed=1), device) for _ in range(args.steps + 1)
    )
    model_sps = batch / step_s

    chosen = choose_workers(loaders, model_sps)
    costs = stage_costs(decode_s, collate_s, views_batch_s, batch, chosen["workers"])
    limit = max(costs, key=costs.get)
    return {
        "device": device.type,
        "device_name": common.device_name(device),
        "date": datetime.date.today().isoformat(),
        "data": str(args.data),
        "rows": len(rows),
        "size": args.size,
        "batch": batch,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "vocab_size": len(tokenizer),
        "setup_s": setup_s,
        "stage_samples_per_s": {
            "decode": 1 / decode_s,
            "collate": 1 / collate_s,
            "views": batch / views_batch_s,
        },
        "loader": loaders,
        "model_step_s": step_s,
        "model_samples_per_s": model_sps,
        "views_share_of_step": views_batch_s / step_s,
        "chosen_workers": chosen["workers"],
        "pipeline_samples_per_s": chosen["samples_per_s"],
        "pipeline_over_model": chosen["over_model"],
        "target": TARGET,
        "target_holds": chosen["over_model"] >= TARGET,
        "limit": limit,
        "stage_cost_per_sample_s": costs,
    }


def report(result: dict[str, Any]) -> None:
    if "decode_work" in result:
        return report_processes(result)
    print(
        f"{result['device_name']} | {result['rows']} rows of {result['data']} | size {result['size']} | "
        f"batch {result['batch']} | {result['dtype']}"
    )
    stages = result["stage_samples_per_s"]
    print(
        f"one process: decode {stages['decode']:.0f}/s, collate {stages['collate']:.0f}/s, "
        f"views {stages['views']:.0f}/s on {result['device']} ({100 * result['views_share_of_step']:.1f} % of a step)"
    )
    for loader in result["loader"]:
        print(
            f"DataLoader, {loader['workers']} workers: {loader['samples_per_s']:.0f} samples/s "
            f"(first batch {loader['first_batch_s']:.2f} s), {loader['over_model']:.2f}x the model"
        )
    print(f"model (mcd step, MLM on): {result['model_samples_per_s']:.1f} samples/s ({result['model_step_s']:.3f} s)")
    print(
        f"chosen: {result['chosen_workers']} workers, pipeline / model = {result['pipeline_over_model']:.2f} "
        f"(target >= {result['target']:.0f}: {'holds' if result['target_holds'] else 'MISSED'}); "
        f"limited by {result['limit']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="captions.jsonl of Flickr8k (default: shared)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=sorted(common.SIZES), help="the bench sizes (default: small / vitb32)")
    parser.add_argument("--batch", type=int, help="default: 64 on CPU, 256 on CUDA")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), help="default: fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--workers", type=int, nargs="+", help="DataLoader worker counts to try (default: 0..cores)")
    parser.add_argument("--batches", type=int, help="batches timed per worker count (default 10)")
    parser.add_argument("--samples", type=int, help="use only the first rows (default: all)")
    parser.add_argument("--decode-samples", type=int, help="samples decoded to time decoding (default 256)")
    parser.add_argument("--warmup", type=int, help="model warm-up steps (default 1)")
    parser.add_argument("--steps", type=int, help="model steps timed (default 3)")
    parser.add_argument("--threads", type=int, help="CPU threads of the model (default: 2 on CPU)")
    parser.add_argument("--tiny", action="store_true", help="48 rows, tiny model, batch 8, 0-1 workers (tests)")
    parser.add_argument("--json", type=Path, help="also write the JSON object here")
    parser.add_argument(
        "--processes", type=int, nargs="+", help="instead: decode work per process of a stream on N processes"
    )
    parser.add_argument("--shards", type=int, help="with --processes: webdataset shards to write (default 8)")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    cuda = args.device.type == "cuda"
    if args.tiny:
        defaults = {"size": "tiny", "batch": 8, "workers": [0, 1], "batches": 3, "samples": 48, "decode_samples": 16}
        defaults |= {"warmup": 1, "steps": 1}
    else:
        defaults = {"size": common.default_size(args.device), "batch": 256 if cuda else 64, "batches": 10}
        defaults |= {"workers": list(range(0, min(os.cpu_count() or 1, 16) + 1, 1 if not cuda else 4))}
        defaults |= {"decode_samples": 256, "warmup": 1, "steps": 3}
    defaults |= {"dtype": "bf16" if cuda else "fp32", "threads": None if cuda else 2, "shards": 8}
    if args.processes and not args.tiny:
        defaults["samples"] = 512  # an epoch per rank and per N, decoded twice (this split and accelerate's)
    common.fill_defaults(args, defaults)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return common.run_cli(argv, parse_args, run, report)


if __name__ == "__main__":
    main()
