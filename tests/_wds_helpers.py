"""Tiny CLIP_benchmark evaluation data written in a test: its webdataset folders (tar shards of `.webp`/`.jpg`/`.png`
+ `.cls` or `.txt` members, `classnames.txt`, `zeroshot_classification_templates.txt`), and a tiny saved MCD model."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch
from conftest import tiny_config, tiny_image_processor, tiny_tokenizer
from PIL import Image

from modeling_mcd import MCDModel, MCDProcessor

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 30), "blue": (30, 40, 210), "yellow": (230, 220, 30)}
#: Templates in CLIP_benchmark's form, every word in the tiny vocabulary.
TEMPLATES = ["a photo of a {c}.", "a {c} square", "the big {c} circle"]
#: Formats CLIP_benchmark writes (lossless webp by default), cycled over the samples; each decodes to its pixels.
FORMATS = {"webp": {"format": "webp", "lossless": True}, "png": {"format": "png"}, "jpg": {"format": "jpeg"}}


def coloured_image(colour, seed: int, size=(17, 13)) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None] + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def encode(image: Image.Image, extension: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **FORMATS[extension])
    return buffer.getvalue()


def write_shards(folder: Path, samples: list[dict[str, bytes]], shards: int = 2) -> None:
    """`samples` (`{extension: bytes}`, keyed `s0000000`, ...) over `shards` tar files `0.tar` ..., and
    `nshards.txt`, as `clip_benchmark_export_wds` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(samples) // shards)
    for shard in range(shards):
        with tarfile.open(folder / f"{shard}.tar", "w") as tar:
            for index in range(shard * per_shard, min(len(samples), (shard + 1) * per_shard)):
                for extension, data in samples[index].items():
                    info = tarfile.TarInfo(f"s{index:07d}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (folder / "nshards.txt").write_text(f"{shards}\n")


def write_classification_wds(root: Path, classnames=("red", "green", "blue", "yellow"), per_class: int = 3,
                             split: str = "test", templates=TEMPLATES) -> list[tuple[str, int]]:  # fmt: skip
    """A CLIP_benchmark classification folder; returns `(extension, label)` of every sample, in order. Labels follow
    `classnames` (not sorted), samples interleave the classes."""
    samples, written = [], []
    for index in range(per_class * len(classnames)):
        label = index % len(classnames)
        extension = list(FORMATS)[index % len(FORMATS)]
        image = coloured_image(COLOURS[classnames[label]], seed=index)
        samples.append({extension: encode(image, extension), "cls": str(label).encode()})
        written.append((extension, label))
    write_shards(root / split, samples)
    (root / "classnames.txt").write_text("".join(name + "\n" for name in classnames))
    if templates is not None:
        (root / "zeroshot_classification_templates.txt").write_text("".join(t + "\n" for t in templates))
    return written


def read_wds_samples(folder: Path, label_extension: str = "cls") -> list[tuple[Image.Image, str]]:
    """Every `(image, label or captions text)` of a split folder's shards, in order, decoded as webdataset's
    `ImageHandler("pil")` does (`PIL.Image.open` on the member's bytes)."""
    samples = []
    for shard in sorted(folder.glob("*.tar"), key=lambda path: int(path.stem)):
        with tarfile.open(shard) as tar:
            members = {}
            for member in tar:
                key, extension = member.name.split(".", 1)
                members.setdefault(key, {})[extension] = tar.extractfile(member).read()
        for parts in members.values():
            image_extension = next(e for e in ("webp", "png", "jpg", "jpeg") if e in parts)
            image = Image.open(io.BytesIO(parts[image_extension]))
            image.load()
            samples.append((image, parts[label_extension].decode()))
    return samples


def save_tiny_mcd_model(folder: Path) -> Path:
    """A seeded tiny MCDModel and its processor (BERT WordPiece tokenizer, CLIP-style image processor), saved."""
    torch.manual_seed(0)
    MCDModel(tiny_config()).eval().save_pretrained(folder)
    MCDProcessor(image_processor=tiny_image_processor(), tokenizer=tiny_tokenizer()).save_pretrained(folder)
    return folder
