# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""Class names and prompt templates given by the user, in mcd's formats and CLIP_benchmark's, and the class names
each label gets.

A `--templates` or `--classnames` value may be:

- a JSON list of strings (mcd's format), or a text file with one entry a line (`classnames.txt`,
  `zeroshot_classification_templates.txt` of a CLIP_benchmark webdataset folder);
- a JSON object of lists, `{dataset: [...]}` (CLIP_benchmark's `en_classnames.json` and
  `en_zeroshot_classification_templates.json`): the entry of the dataset is used, named by `--dataset` or, without
  it, by the data folder's name (`cifar10/test`, `wds_cifar10`);
- for class names only, a JSON object of strings, `{class key: name}`: the name of each class folder (or label id),
  whatever order the file lists them in.

A list of class names is given to the classes in the data's label order, which for an image folder is the sorted
order of its folder names: [`assign_classnames`] checks the count and says which name went to which class, so an
order that differs from the data's shows at a glance instead of silently mislabelling every class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .datasets import folder_dataset_and_split

#: How many `key=name` pairs [`describe_classnames`] shows before it counts the rest.
SHOWN_CLASSES = 20


@dataclass
class PromptValues:
    """What a `--templates` or `--classnames` value holds: a list in label order or a `{class key: name}` mapping,
    and the dataset entry it was taken from (a `{dataset: [...]}` file), if any."""

    values: list[str] | dict[str, str]
    entry: str | None = None


def read_lines(path: str | Path, what: str) -> list[str]:
    """The stripped lines of a UTF-8 text file, trailing blank lines dropped (`ValueError` on a blank line among
    them: a class or template with no text)."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise ValueError(f"{what} {path}: {error}") from error
    while lines and not lines[-1]:
        lines.pop()
    if "" in lines:
        raise ValueError(f"{what} {path}: line {lines.index('') + 1} is blank")
    return lines


def _load(value: str, what: str):
    """The JSON (or, for a `.txt` file, the lines) of a file, or of the value itself when it is inline JSON."""
    path = Path(value)
    if path.is_file():
        if path.suffix.lower() == ".txt":
            return read_lines(path, what)
        try:
            return json.loads(path.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as error:
            raise ValueError(f"{what} {value} is not UTF-8 text ({error.reason} at byte {error.start})") from error
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{what} {value}: {error}") from error
    if value.lstrip().startswith(("[", "{")):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{what}: the inline JSON {value[:60]!r} does not parse ({error})") from error
    raise ValueError(f"{what} {value}: no such file (nor an inline JSON list or object)")


def _is_strings(values) -> bool:
    return isinstance(values, list) and all(isinstance(value, str) for value in values)


def _entry(content: dict, value: str, what: str, datasets: Sequence[str], named: bool) -> tuple[list, str]:
    """The entry of a `{dataset: [...]}` file for the first of `datasets` it holds (case-insensitive)."""
    keys = {key.lower(): key for key in content}
    for dataset in datasets:
        if dataset.lower() in keys:
            return content[keys[dataset.lower()]], keys[dataset.lower()]
    listed = ", ".join(list(content)[:12]) + (", ..." if len(content) > 12 else "")
    if named:
        raise ValueError(f"{what} {value} has no entry {datasets[0]!r}; its {len(content)} datasets: {listed}")
    folder = f" (none matches the data's name {datasets[0]!r})" if datasets else ""
    raise ValueError(
        f"{what} {value} holds the entries of {len(content)} datasets ({listed}); name one with --dataset{folder}"
    )


def read_prompt_values(
    value: str, what: str, datasets: Sequence[str] = (), named: bool = False, mapping: bool = False
) -> PromptValues:
    r"""
    Read a `--templates` or `--classnames` value (see the module docstring for the forms).

    Args:
        value (`str`): a file path, or inline JSON.
        what (`str`): the option, for messages (`"--templates"`).
        datasets (`Sequence[str]`, *optional*): the names to look up in a `{dataset: [...]}` file, first match wins.
        named (`bool`, *optional*, defaults to `False`): whether `datasets[0]` was named by the user (`--dataset`),
            which words the error of a file without it.
        mapping (`bool`, *optional*, defaults to `False`): accept a `{class key: name}` object (class names).

    Returns:
        [`PromptValues`].

    Raises:
        ValueError: no such file, bytes that are not UTF-8, JSON that does not parse or is of another form, no entry
            for the dataset, no values.
    """
    content, entry = _load(value, what), None
    if isinstance(content, dict) and content and all(isinstance(v, list) for v in content.values()):
        content, entry = _entry(content, value, what, datasets, named)
        if not _is_strings(content):
            raise ValueError(f"{what} {value}: entry {entry!r} must be a list of strings")
    elif isinstance(content, dict) and mapping:
        if not all(isinstance(key, str) and isinstance(name, str) for key, name in content.items()):
            raise ValueError(f"{what} {value}: a {{class: name}} mapping needs a string name for every class")
        content = dict(content)
    elif not _is_strings(content):
        forms = "a JSON list of strings, a {class: name} object" if mapping else "a JSON list of strings"
        raise ValueError(f"{what} {value} must hold {forms}, or a {{dataset: [strings]}} object")
    if not content:
        raise ValueError(f"{what} {value}" + (f" (entry {entry!r})" if entry else "") + " is empty")
    return PromptValues(content, entry)


def data_dataset_names(data: str | Path) -> list[str]:
    """The names a data folder may go by in a `{dataset: [...]}` file: `.../cifar10/test` -> `cifar10`;
    CLIP_benchmark's webdataset folders, `wds_cifar10` or `wds_cifar10_test`, -> also `cifar10`."""

    name = folder_dataset_and_split(Path(data).absolute())[0]
    names = [name]
    if name.lower().startswith("wds_"):
        bare = name[4:]
        names += [bare, bare.removesuffix("_test")] if bare.endswith("_test") else [bare]
    return names


def assign_classnames(given: PromptValues | list[str] | None, data, source: str) -> tuple[list[str], str]:
    r"""
    The name of every class of `data`, in label order, and one line that says which class got which name.

    Args:
        given ([`PromptValues`], `list[str]` or `None`): names from the user (a list in label order or a
            `{class key: name}` mapping), from a dataset's shipped prompts (a list), or `None` for the data's own.
        data ([`LabelledImages`]): the data; its `class_keys` name the classes (the folder names of an image
            folder), `key_order` says in which order the labels are given.
        source (`str`): where `given` comes from, for messages (`"--classnames names.json"`).

    Returns:
        `(classnames, line)`.

    Raises:
        ValueError: a list whose length is not the data's number of classes (both counts named), a mapping that
            names no class for some keys or names keys the data does not have.
    """
    keys = data.class_keys
    values = given.values if isinstance(given, PromptValues) else given
    if values is None:
        if data.classnames is None:
            raise ValueError(f"{source}: the labels have no class names; give --classnames or --dataset")
        names, how = list(data.classnames), f"the data's own, by {data.key_order}"
    elif isinstance(values, dict):
        if keys is None:
            raise ValueError(f"{source}: a {{class: name}} mapping needs named classes (folders); give a list")
        missing = [key for key in keys if key not in values]
        unknown = [key for key in values if key not in keys]
        if missing or unknown:
            problems = [f"no name for {len(missing)} class(es) {missing[:10]}"] if missing else []
            problems += [f"{len(unknown)} key(s) that are no class of the data {unknown[:10]}"] if unknown else []
            raise ValueError(f"{source}: the mapping has {' and '.join(problems)}; the classes are {keys[:20]}")
        names, how = [values[key] for key in keys], f"{source}, by class"
    else:
        names = list(values)
        if data.num_classes is not None and len(names) != data.num_classes:
            raise ValueError(
                f"{len(names)} class names ({source}) do not match the {data.num_classes} classes of the data "
                f"({data.key_order})"
            )
        how = f"{source}, list entries given to the classes in {data.key_order}"
    return names, describe_classnames(names, keys, how)


def describe_classnames(names: Sequence[str], keys: Sequence[str] | None, how: str) -> str:
    """`classnames (how): key=name, ...` for the first [`SHOWN_CLASSES`] classes (label ids when `keys` is `None`)."""
    keys = keys if keys is not None else [str(label) for label in range(len(names))]
    pairs = [f"{key}={name}" for key, name in zip(keys[:SHOWN_CLASSES], names[:SHOWN_CLASSES])]
    more = f", ... ({len(names) - SHOWN_CLASSES} more)" if len(names) > SHOWN_CLASSES else ""
    return f"classnames ({how}): {', '.join(pairs)}{more}"


__all__ = [
    "SHOWN_CLASSES",
    "PromptValues",
    "assign_classnames",
    "data_dataset_names",
    "describe_classnames",
    "read_lines",
    "read_prompt_values",
]
