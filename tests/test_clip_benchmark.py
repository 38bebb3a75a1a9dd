"""`mcd eval` on CLIP_benchmark's files and folders: `{c}` templates, `{dataset: [...]}` template and class name files,
`classnames.txt`, its webdataset evaluation folders; and class names given as a `{folder: name}` mapping, or as a
list whose pairing with the (sorted) class folders is printed."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from _wds_helpers import (
    COLOURS,
    TEMPLATES,
    coloured_image,
    encode,
    read_wds_samples,
    save_tiny_mcd_model,
    write_classification_wds,
    write_shards,
)
from conftest import SHARED_DATA
from PIL import Image

from modeling_mcd.cli.main import main
from modeling_mcd.evaluation import (
    build_zero_shot_classifier,
    encode_images,
    encode_texts,
    load_labelled_images,
    load_model_and_processor,
    retrieval_metrics,
    zero_shot_metrics,
)

PROMPTS = SHARED_DATA / "prompts"
WDS_CLASSES = ["red", "green", "blue", "yellow"]  # label order of the webdataset folder: not sorted


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_mcd_model(tmp_path_factory.mktemp("model") / "mcd")


@pytest.fixture(scope="module")
def wds(tmp_path_factory):
    """`wds_colours/`: 12 samples of 4 classes over 2 shards, .webp/.png/.jpg, classnames.txt and templates."""
    root = tmp_path_factory.mktemp("data") / "wds_colours"
    return root, write_classification_wds(root, WDS_CLASSES)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """`colours/test/<folder>/`: folders `a_green`, `b_blue`, `c_red` (sorted order), 2 images each, no names file."""
    root = tmp_path_factory.mktemp("folders") / "colours" / "test"
    for name in ("a_green", "b_blue", "c_red"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            coloured_image(COLOURS[name[2:]], seed=10 * len(name) + i).save(root / name / f"{i}.png")
    return root


def run_eval(tmp_path, task, model_dir, *args):
    output = tmp_path / f"{task}.json"
    argv = ["eval", task, "--model", str(model_dir), *args, "--device", "cpu", "--batch-size", "5"]
    assert main([*argv, "--output-json", str(output)]) == 0
    return json.loads(output.read_text())["metrics"]


def library_zero_shot(model_dir, images, labels, classnames, templates):
    model, preprocess, tokenizer = load_model_and_processor(str(model_dir))
    classifier = build_zero_shot_classifier(model, tokenizer, classnames, templates, progress=False)
    return zero_shot_metrics(encode_images(model, images, preprocess, progress=False), classifier, torch.tensor(labels))


def folder_images(folder):
    """The images of the class folder and their labels (the sorted folder order: a_green, b_blue, c_red)."""
    paths = sorted(folder.glob("*/*.png"))
    labels = [["a_green", "b_blue", "c_red"].index(path.parent.name) for path in paths]
    return [Image.open(path).convert("RGB") for path in paths], labels


# ---------------------------------------------------------------------------------- prompt files
def test_clip_benchmarks_dataset_keyed_files_are_read(tmp_path):
    from modeling_mcd.evaluation.prompt_files import read_prompt_values

    templates_file = PROMPTS / "clip_benchmark_en_zeroshot_templates.json"
    expected = json.loads(templates_file.read_text())
    read = read_prompt_values(str(templates_file), "--templates", ["CIFAR10"], named=True)
    assert read.entry == "cifar10" and read.values == expected["cifar10"]
    classnames = read_prompt_values(str(PROMPTS / "clip_benchmark_en_classnames.json"), "--classnames", ["pets"])
    assert classnames.values[:2] == json.loads((PROMPTS / "clip_benchmark_en_classnames.json").read_text())["pets"][:2]
    with pytest.raises(ValueError, match=r"has no entry 'nope'; its 33 datasets: cifar10, cifar100"):
        read_prompt_values(str(templates_file), "--templates", ["nope"], named=True)
    with pytest.raises(ValueError, match=r"name one with --dataset \(none matches the data's name 'toy'\)"):
        read_prompt_values(str(templates_file), "--templates", ["toy"])
    (tmp_path / "classnames.txt").write_text("\ufeffred\n green \nblue\n\n")
    assert read_prompt_values(str(tmp_path / "classnames.txt"), "--classnames").values == ["red", "green", "blue"]
    (tmp_path / "gap.txt").write_text("red\n\nblue\n")
    with pytest.raises(ValueError, match="line 2 is blank"):
        read_prompt_values(str(tmp_path / "gap.txt"), "--classnames")


# ---------------------------------------------------------------------------------- webdataset folders
def test_a_webdataset_folder_reads_as_labelled_images(wds):
    root, written = wds
    data = load_labelled_images(root)
    assert data.labels.tolist() == [label for _, label in written]
    assert data.classnames == WDS_CLASSES and data.num_classes == 4 and data.templates == TEMPLATES
    assert data.class_keys == ["0", "1", "2", "3"] and data.skipped == []
    expected = [image.convert("RGB") for image, _ in read_wds_samples(root / "test")]
    assert all(np.array_equal(np.asarray(data.images[i]), np.asarray(expected[i])) for i in range(12))
    assert data.describe("wds_colours") == "12 images in 4 classes from wds_colours"
    assert load_labelled_images(root / "test").labels.tolist() == data.labels.tolist()  # the split folder itself
    assert load_labelled_images(root, split="test").labels.tolist() == data.labels.tolist()


def test_a_broken_webdataset_folder_is_a_clear_error(tmp_path):
    root = tmp_path / "wds_broken"
    write_classification_wds(root, WDS_CLASSES[:2], per_class=2)
    with tarfile.open(root / "test" / "0.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]

    def rewrite(change):
        with tarfile.open(root / "test" / "0.tar", "w") as tar:
            for member, data in members:
                data = change(member.name, data)
                if data is not None:
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))

    rewrite(lambda name, data: data[:30] if name.endswith(".webp") else data)  # a cut image
    data = load_labelled_images(root)
    assert len(data.images) == 3 and "s0000000.webp: " in data.skipped[0]
    with pytest.raises(ValueError, match=r"cannot read image .*0\.tar:s0000000\.webp"):
        load_labelled_images(root, on_bad_image="raise")
    rewrite(lambda name, data: b"7" if name.endswith(".cls") else data)
    with pytest.raises(ValueError, match=r"has label 7, but .*classnames.txt names 2 classes"):
        load_labelled_images(root)
    rewrite(lambda name, data: None if name.endswith(".cls") else data)
    with pytest.raises(ValueError, match=r"s0000000 needs a \.cls member"):
        load_labelled_images(root)
    rewrite(lambda name, data: data)
    (root / "test" / "0.tar").write_bytes((root / "test" / "0.tar").read_bytes()[:700])
    with pytest.raises(ValueError, match=r"0\.tar is cut short"):
        load_labelled_images(root)
    (root / "test" / "nshards.txt").write_text("3\n")
    with pytest.raises(ValueError, match=r"names 3 shards, but .* lacks \['2.tar'\]"):
        load_labelled_images(root)


def test_mcd_eval_zero_shot_reads_a_webdataset_folder(model_dir, wds, tmp_path, capsys):
    root, written = wds
    metrics = run_eval(tmp_path, "zero-shot", model_dir, "--data", str(root))
    out = capsys.readouterr().out
    assert f"12 images in 4 classes from {root}" in out
    assert "0=red, 1=green, 2=blue, 3=yellow" in out
    images = [image for image, _ in read_wds_samples(root / "test")]
    expected = library_zero_shot(model_dir, images, [label for _, label in written], WDS_CLASSES, TEMPLATES)
    assert metrics == pytest.approx(expected, abs=1e-6)


def test_mcd_eval_retrieval_reads_a_webdataset_folder(model_dir, tmp_path):
    root = tmp_path / "wds_captions"
    captions = [[f"a {name} square", f"the {name} circle"] for name in WDS_CLASSES]
    samples = [{"jpg": encode(coloured_image(COLOURS[name], seed=i), "jpg"), "txt": "\n".join(captions[i]).encode()}
               for i, name in enumerate(WDS_CLASSES)]  # fmt: skip
    write_shards(root / "test", samples)
    (root / "dataset_type.txt").write_text("retrieval\n")
    metrics = run_eval(tmp_path, "retrieval", model_dir, "--data", str(root))
    assert metrics["num_images"] == 4 and metrics["num_texts"] == 8

    model, preprocess, tokenizer = load_model_and_processor(str(model_dir))
    images = [image for image, _ in read_wds_samples(root / "test", label_extension="txt")]
    texts = [caption for group in captions for caption in group]
    expected = retrieval_metrics(encode_images(model, images, preprocess, progress=False),
                                 encode_texts(model, tokenizer, texts, progress=False),
                                 torch.arange(4).repeat_interleave(2))  # fmt: skip
    assert metrics == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------------- class names and templates
def test_clip_benchmark_files_on_the_command_line(model_dir, folder, tmp_path, capsys):
    """`{dataset: [...]}` files: the entry of the data folder's name (`colours/test` -> colours), or of --dataset."""
    templates_file, classnames_file = tmp_path / "templates.json", tmp_path / "classnames.json"
    templates_file.write_text(json.dumps({"other": ["a {c} star"], "colours": TEMPLATES}))
    classnames_file.write_text(json.dumps({"colours": ["green", "blue", "red"], "cifar10": ["x"] * 10}))
    args = ["--data", str(folder), "--templates", str(templates_file), "--classnames", str(classnames_file)]
    metrics = run_eval(tmp_path, "zero-shot", model_dir, *args)
    images, labels = folder_images(folder)
    assert metrics == pytest.approx(library_zero_shot(model_dir, images, labels, ["green", "blue", "red"], TEMPLATES))
    assert "a_green=green, b_blue=blue, c_red=red" in capsys.readouterr().out

    txt = tmp_path / "classnames.txt"
    txt.write_text("green\nblue\nred\n")
    other = run_eval(tmp_path, "zero-shot", model_dir, *args[:4], "--classnames", str(txt), "--dataset", "other")
    star = library_zero_shot(model_dir, images, labels, ["green", "blue", "red"], ["a {c} star"])
    assert other == pytest.approx(star)
    argv = ["eval", "zero-shot", "--model", str(model_dir), *args, "--device", "cpu"]
    assert main([*argv, "--dataset", "other"]) == 2
    assert "mcd: error: --classnames" in (err := capsys.readouterr().err) and "has no entry 'other'" in err
    assert main([*argv, "--dataset", "no-such-set"]) == 2
    assert "--templates" in (err := capsys.readouterr().err) and "has no entry 'no-such-set'; its 2 datasets" in err
    assert main([*argv[:6], "--device", "cpu", "--dataset", "no-such-set"]) == 2  # no file to pick an entry of
    assert "--dataset 'no-such-set' has no prompts" in capsys.readouterr().err


def test_classnames_as_a_folder_mapping_or_a_list_in_sorted_folder_order(model_dir, folder, tmp_path, capsys):
    """A list is given to the folders in sorted order and the pairing is printed; a mapping is by folder name."""
    images, labels = folder_images(folder)
    expected = library_zero_shot(model_dir, images, labels, ["green", "blue", "red"], TEMPLATES)
    base = ["--data", str(folder), "--templates", json.dumps(TEMPLATES)]  # inline JSON, as class names may be
    mapping = {"c_red": "red", "a_green": "green", "b_blue": "blue"}  # not in folder order
    (tmp_path / "mapping.json").write_text(json.dumps(mapping))
    for value in (json.dumps(mapping), str(tmp_path / "mapping.json"), json.dumps(["green", "blue", "red"])):
        assert run_eval(tmp_path, "zero-shot", model_dir, *base, "--classnames", value) == pytest.approx(expected)
        assert "a_green=green, b_blue=blue, c_red=red" in capsys.readouterr().out
    run_eval(tmp_path, "zero-shot", model_dir, *base, "--classnames", '["red", "green", "blue"]')
    line = next(line for line in capsys.readouterr().out.splitlines() if "classnames" in line)
    assert "in sorted order of the folder names" in line and line.endswith("a_green=red, b_blue=green, c_red=blue")

    argv = ["eval", "zero-shot", "--model", str(model_dir), *base, "--device", "cpu", "--classnames"]
    assert main([*argv, '["red", "green"]']) == 2
    assert "mcd: error: 2 class names (--classnames" in (err := capsys.readouterr().err)
    assert "do not match the 3 classes of the data (sorted order of the folder names)" in err
    assert main([*argv, '{"c_red": "red", "a_green": "green"}']) == 2
    assert "no name for 1 class(es) ['b_blue']" in capsys.readouterr().err
    assert main([*argv, json.dumps({**mapping, "d_pink": "pink"})]) == 2
    assert "1 key(s) that are no class of the data ['d_pink']" in capsys.readouterr().err


def test_the_help_says_in_which_order_a_list_of_classnames_is_taken(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "zero-shot", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "SORTED order of its folder names" in text and "{folder: name}" in text
    assert "'{c}'" in text and "{dataset: [templates]}" in text and "classnames.txt" in text
