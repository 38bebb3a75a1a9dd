# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""CLIP_benchmark's webdataset evaluation folders, read without `webdataset`.

The layout (what `clip_benchmark_export_wds` writes and the `djghosh/wds_*` datasets of the Hub hold):

    wds_cifar10/
        classnames.txt                           one class name a line, in label order
        zeroshot_classification_templates.txt    one template a line, `{c}` where the class name goes (optional)
        dataset_type.txt                         "retrieval" for image-caption sets (optional)
        test/
            nshards.txt                          the number of shards, N (optional here: else every *.tar)
            0.tar ... N-1.tar

A sample is the tar members that share a key (the member name up to the first dot of its base name): one image,
`.webp`, `.png`, `.jpg` or `.jpeg` (the first present, in that order, as CLIP_benchmark picks it; the extension in
any case), and its label, `.cls` (the label id as text), or its captions, `.txt` (one a line). Images stay in their
shard until the encoder asks for one ([`TarImages`]): the shards are scanned once for where each member lies, and
each image is decoded once up front, so an unreadable one is skipped and named (or raises) before any encoding, as
in an image folder. A shard cut short (a member ending past the end of the file) is a `ValueError` naming it: an
evaluation set read in part would give a number for another set.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from .datasets import CaptionedImages, LabelledImages, require_a_task
from .prompt_files import read_lines

#: The image members of a sample, in the order CLIP_benchmark tries them.
IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
#: Members read whole while scanning (labels, captions); images are read when used.
_TEXT_EXTENSIONS = ("cls", "txt")
# webdataset's `base_plus_ext`: key = the path up to the first dot of the base name, extension = the rest.
_KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@dataclass(frozen=True)
class TarMember:
    """Where one member's bytes lie: its shard, the offset of its data and its size; `name` is `shard:member`."""

    shard: Path
    offset: int
    size: int
    name: str

    def read(self) -> bytes:
        with open(self.shard, "rb") as file:
            file.seek(self.offset)
            return file.read(self.size)


class TarImages(Sequence):
    """Images inside tar shards, each read and decoded to an RGB PIL image only when indexed, as `LazyImages` does
    with files (the pixel limit, a centre crop to a sane aspect ratio, a `ValueError` naming the member)."""

    def __init__(self, members: Sequence[TarMember]):
        self.members = list(members)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index):
        from ..data.decoding import DEFAULT_MAX_PIXELS, crop_to_aspect_ratio, decode_image

        if isinstance(index, slice):
            return TarImages(self.members[index])
        member = self.members[index]
        try:
            image = decode_image({"bytes": member.read(), "path": member.name}, max_pixels=DEFAULT_MAX_PIXELS)
        except ValueError as error:
            raise ValueError(f"cannot read image {member.name}: {error}") from error
        return crop_to_aspect_ratio(image)

    def subset(self, indices: Sequence[int]) -> TarImages:
        """The images at `indices`, still unread."""
        return TarImages([self.members[i] for i in indices])


def find_webdataset(data: str | Path, split: str | None) -> tuple[Path, Path] | None:
    """`(shard folder, metadata folder)` when `data` is a CLIP_benchmark webdataset folder (its `split` folder, by
    default `test`, holds `.tar` shards) or one split folder of it; `None` otherwise."""
    root = Path(data)
    if not root.is_dir():
        return None
    if split is None and any(root.glob("*.tar")):
        return root, root.parent
    folder = root / (split or "test")
    if folder.is_dir() and any(folder.glob("*.tar")):
        return folder, root
    return None


def _natural(path: Path) -> list:
    """Sort key putting `2.tar` before `10.tar`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def shard_paths(folder: Path) -> list[Path]:
    """The shards of a split folder: `0.tar` to `N-1.tar` after `nshards.txt`, else every `.tar` in natural order."""
    count_file = folder / "nshards.txt"
    if count_file.is_file():
        text = count_file.read_text(encoding="utf-8", errors="replace").strip()
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{count_file} must hold the number of shards, got {text[:40]!r}")
        paths = [folder / f"{index}.tar" for index in range(int(text))]
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            raise ValueError(f"{count_file} names {len(paths)} shards, but {folder} lacks {missing[:5]}")
        return paths
    return sorted(folder.glob("*.tar"), key=_natural)


def read_samples(shards: Sequence[Path]) -> list[tuple[str, dict]]:
    """Every sample of the shards, in order: `(shard:key, {extension: TarMember or text})`, text for `.cls` and
    `.txt` members. Members of one key that follow each other make one sample, as webdataset groups them."""
    samples: list[tuple[str, dict]] = []
    for shard in shards:
        size, previous = os.path.getsize(shard), None
        try:
            with tarfile.open(shard, mode="r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    if member.offset_data + member.size > size:
                        raise ValueError(
                            f"shard {shard} is cut short: member {member.name} ends past the end of the file "
                            "(fetch the shard again)"
                        )
                    match = _KEY_AND_EXTENSION.match(member.name)
                    if match is None:
                        continue  # no extension: no part of any sample
                    key, extension = match.group(1), match.group(2).lower()
                    if key != previous:
                        samples.append((f"{shard}:{key}", {}))
                        previous = key
                    if extension in _TEXT_EXTENSIONS:
                        value = tar.extractfile(member).read().decode("utf-8", errors="replace")
                    else:
                        value = TarMember(shard, member.offset_data, member.size, f"{shard}:{member.name}")
                    samples[-1][1][extension] = value
        except tarfile.TarError as error:
            raise ValueError(f"shard {shard} is not a readable tar file ({error})") from error
    return samples


def _image_member(name: str, sample: dict) -> TarMember:
    for extension in IMAGE_EXTENSIONS:
        if isinstance(sample.get(extension), TarMember):
            return sample[extension]
    raise ValueError(f"sample {name} has no image ({', '.join(f'.{e}' for e in IMAGE_EXTENSIONS)}); its members: "
                     f"{sorted(sample)}")  # fmt: skip


def _image_problem(member: TarMember) -> str | None:
    """Why the image `member` cannot be decoded (`"reason (detail)"`), or `None`."""
    from ..data.decoding import DEFAULT_MAX_PIXELS, BadSampleError, decode_image

    try:
        decode_image({"bytes": member.read(), "path": member.name}, max_pixels=DEFAULT_MAX_PIXELS, draft_size=32)
    except BadSampleError as error:
        return f"{error.reason} ({error.detail.removeprefix(f'{member.name}: ')})"
    return None


def _split_folder(data: str | Path, split: str | None) -> tuple[Path, Path]:
    found = find_webdataset(data, split)
    if found is None:
        raise ValueError(f"{data} is no webdataset folder: no .tar shards in {Path(data) / (split or 'test')}")
    return found


def load_webdataset_labelled(data: str | Path, split: str | None = None, on_bad_image: str = "skip"):
    r"""
    Read a CLIP_benchmark classification set in webdataset form.

    Args:
        data (`str` or `Path`): the dataset folder (with `classnames.txt` and split folders), or one split folder.
        split (`str`, *optional*): the split folder, `test` by default.
        on_bad_image (`str`, *optional*, defaults to `"skip"`): an image that cannot be decoded is left out and
            named (`"skip"`) or raises (`"raise"`).

    Returns:
        `LabelledImages` with [`TarImages`], labels from the `.cls` members, `classnames` from `classnames.txt`
        (`None` without it), the label ids as `class_keys`, and the templates of
        `zeroshot_classification_templates.txt` (`None` without it).

    Raises:
        ValueError: a sample without an image or a `.cls`, a label that is not an integer or has no class name,
            a cut or unreadable shard, fewer than 2 classes or 2 usable images, or (with `"raise"`) an unreadable
            image.
    """

    folder, meta = _split_folder(data, split)
    classnames = read_lines(meta / CLASSNAMES_FILE, "classnames") if (meta / CLASSNAMES_FILE).is_file() else None
    templates = read_lines(meta / TEMPLATES_FILE, "templates") if (meta / TEMPLATES_FILE).is_file() else None
    members, labels = [], []
    for name, sample in read_samples(shard_paths(folder)):
        members.append(_image_member(name, sample))
        text = sample.get("cls")
        if text is None or not text.strip().lstrip("-").isdigit():
            raise ValueError(f"sample {name} needs a .cls member holding its label id, got {text!r:.40}")
        labels.append(int(text))
        if labels[-1] < 0 or (classnames is not None and labels[-1] >= len(classnames)):
            raise ValueError(f"sample {name} has label {labels[-1]}, but {meta / CLASSNAMES_FILE} names "
                             f"{len(classnames or [])} classes")  # fmt: skip
    num_classes = len(classnames) if classnames is not None else None
    require_a_task(folder, num_classes if num_classes is not None else len(set(labels)), len(members))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        errors = list(pool.map(_image_problem, members))
    bad = [f"{member.name}: {error}" for member, error in zip(members, errors) if error is not None]
    if bad and on_bad_image == "raise":
        raise ValueError(f"cannot read image {bad[0]} (--on-bad-image skip leaves unreadable images out)")
    keep = [i for i, error in enumerate(errors) if error is None]
    require_a_task(folder, num_classes if num_classes is not None else len(set(labels)), len(keep), len(bad))
    return LabelledImages(
        TarImages([members[i] for i in keep]),
        torch.tensor([labels[i] for i in keep], dtype=torch.long),
        classnames,
        num_classes,
        bad,
        class_keys=[str(label) for label in range(num_classes)] if num_classes is not None else None,
        key_order=f"label id order (the .cls members; {CLASSNAMES_FILE} lists the names in it)",
        templates=templates,
    )


def load_webdataset_captioned(data: str | Path, split: str | None = None):
    r"""
    Read a CLIP_benchmark retrieval set in webdataset form: each sample's image and its `.txt` captions, one a line.

    Args:
        data (`str` or `Path`): the dataset folder, or one split folder.
        split (`str`, *optional*): the split folder, `test` by default.

    Returns:
        `CaptionedImages` with [`TarImages`].

    Raises:
        ValueError: a sample without an image or a caption, a caption with no visible character, a cut shard, fewer
            than 2 images.
    """
    from ..data.decoding import BadSampleError, validate_caption

    folder, _ = _split_folder(data, split)
    members, captions, text_to_image = [], [], []
    for name, sample in read_samples(shard_paths(folder)):
        lines = [line for line in (sample.get("txt") or "").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"sample {name} needs a .txt member with its captions, one a line")
        try:
            captions += [validate_caption(line) for line in lines]
        except BadSampleError as error:
            raise ValueError(f"sample {name}: {error}") from error
        text_to_image += [len(members)] * len(lines)
        members.append(_image_member(name, sample))
    if len(members) < 2:
        raise ValueError(f"{folder} holds {len(members)} image(s): retrieval needs at least 2 images")
    return CaptionedImages(TarImages(members), captions, torch.tensor(text_to_image, dtype=torch.long))


__all__ = [
    "CLASSNAMES_FILE",
    "IMAGE_EXTENSIONS",
    "TEMPLATES_FILE",
    "TarImages",
    "TarMember",
    "find_webdataset",
    "load_webdataset_captioned",
    "load_webdataset_labelled",
    "read_samples",
    "shard_paths",
]
