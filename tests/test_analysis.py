# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""modeling_mcd.evaluation.analysis: the teacher's log distance ratio per pair against what the augmented crop
still shows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_IMAGE_SIZE, tiny_config, tiny_tokenizer
from PIL import Image
from torch import nn

from modeling_mcd.data.augmentation import MCDViews
from modeling_mcd.evaluation.analysis import log_distance_ratios, save_result, spearman, synthetic_misalignment
from modeling_mcd.pretraining.model import MCDForPreTraining
from modeling_mcd.synthetic import SyntheticConfig


def test_spearman_matches_a_naive_rank_correlation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=31).tolist(), rng.normal(size=31).tolist()
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)
    assert spearman(x, y) == pytest.approx(np.corrcoef(rank(x), rank(y))[0, 1])
    assert spearman(x, x) == pytest.approx(1.0) and spearman(x, [-v for v in x]) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, [1.0] * 31))


@pytest.fixture
def teacher_model() -> MCDForPreTraining:
    torch.manual_seed(0)
    model = MCDForPreTraining(tiny_config())
    with torch.no_grad():  # a teacher distinct from the student: the ratios must come from the teacher
        for param in model.teacher_student_parameters()[0]:
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def test_log_ratios_are_the_teachers_distances_under_the_training_views(teacher_model):
    views = MCDViews(TINY_IMAGE_SIZE, (0.5,) * 3, (0.5,) * 3)
    images = torch.randint(0, 256, (7, 3, 36, 36), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    captions = ["a red circle", "two blue squares", "a cat", "a dog", "a big star", "a plane", "three crosses"]
    ratios, boxes, overlap = log_distance_ratios(
        teacher_model, tiny_tokenizer(), images, captions, views, seed=3, batch_size=3
    )
    # Naive reference: the views of the whole set at once, the teacher's towers by hand, v̄ = the student's v.
    out = views(images, seed=3)
    with torch.no_grad():

        def teacher(pixels):
            hidden = teacher_model.teacher_vision_model(pixel_values=pixels).pooler_output
            return nn.functional.normalize(teacher_model.teacher_visual_projection(hidden), dim=-1)

        tokens = tiny_tokenizer()(captions, padding=True, return_tensors="pt")
        text = nn.functional.normalize(teacher_model.mcd.get_text_features(**tokens).pooler_output, dim=-1)
        expected = torch.log((text - teacher(out.aug_pixel_values)).norm(dim=-1)) - torch.log(
            (text - teacher(out.pixel_values)).norm(dim=-1)
        )
    torch.testing.assert_close(ratios, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(boxes, out.aug_boxes)
    torch.testing.assert_close(overlap, out.overlap)


def test_synthetic_analysis_writes_its_json_and_plot(teacher_model, tmp_path):
    config = SyntheticConfig(image_size=32, num_train=4, num_validation=2, num_test=40, seed=0)
    views = MCDViews(TINY_IMAGE_SIZE, (0.5,) * 3, (0.5,) * 3)
    result = synthetic_misalignment(teacher_model, tiny_tokenizer(), config, views, base_size=36, num_samples=40)
    assert result.encoder == "teacher" and result.measure == "visible_fraction"
    assert len(result.log_ratios) == len(result.misalignment) == 40
    assert all(0.0 <= v <= 1.0 for v in result.misalignment) and len(set(result.misalignment)) > 1
    paths = save_result(result, tmp_path, "tiny")
    written = json.loads(open(paths["json"]).read())
    assert written["spearman"] == pytest.approx(result.spearman, nan_ok=True) and written["num_pairs"] == 40
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_mcd_analyze_on_a_checkpoint_and_on_a_saved_model(teacher_model, tiny_model_dir, tmp_path, capsys):
    from modeling_mcd.cli.main import main as mcd

    checkpoint = tmp_path / "checkpoint-7"
    teacher_model.save_pretrained(checkpoint)
    tiny_tokenizer().save_pretrained(checkpoint)
    code = mcd(
        ["analyze", str(checkpoint), "--samples", "12", "--synthetic-image-size", "32", "--output-dir", str(tmp_path)]
    )
    assert code == 0 and "teacher log distance ratio vs visible_fraction" in capsys.readouterr().out
    # named after the run folder too (with no Trainer log to tell, the teacher is taken as trained)
    assert (tmp_path / f"{tmp_path.name}-checkpoint-7_synthetic_teacher_misalignment.png").is_file()

    captions = tmp_path / "data" / "captions.jsonl"
    captions.parent.mkdir()
    rows = []
    for i in range(5):
        Image.fromarray(np.full((20, 24, 3), 40 * i, dtype=np.uint8)).save(captions.parent / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "captions": ["a red circle", "a dog"], "split": "test"}))
    captions.write_text("\n".join(rows) + "\n")
    code = mcd(["analyze", tiny_model_dir, "--data", str(captions), "--output-dir", str(tmp_path)])
    assert code == 0 and "model log distance ratio vs crop_overlap" in capsys.readouterr().out
    written = json.loads((tmp_path / f"{tmp_path.name}-mcd-tiny_data_model_misalignment.json").read_text())
    assert written["model"] == tiny_model_dir and written["data"] == str(captions) and written["encoder"] == "model"
    assert written["num_pairs"] == 5 and all(0.0 <= v <= 1.0 for v in written["misalignment"])


def _checkpoint(model: MCDForPreTraining, folder, log_history: list[dict]):
    """A Trainer checkpoint as a run leaves it: weights, tokenizer and the Trainer's state with its log."""
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": log_history}))
    return folder


CLIP_LOG = [{"contrastive_loss": 2.9, "loss": 2.9, "step": 4}]  # what `--objective clip` logs: no EMA momentum
MCD_LOG = [{"contrastive_loss": 9.6, "distill_loss": 0.003, "loss": 9.7, "momentum": 0.998, "step": 4}]


def test_a_checkpoint_trained_without_a_teacher_is_analysed_as_its_student(teacher_model, tmp_path, capsys):
    """`--objective clip` (or mpnce) never updates the teacher: its ratios would be those of the initial copy, so
    the student is analysed, said so, and labelled `student` in the line, the JSON, the plot and the file names."""
    from modeling_mcd.cli.main import main as mcd

    checkpoint = _checkpoint(teacher_model, tmp_path / "clip-run" / "checkpoint-4", CLIP_LOG)
    argv = ["analyze", str(checkpoint), "--samples", "12", "--synthetic-image-size", "32", "--output-dir"]
    assert mcd([*argv, str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "trained without a teacher" in out and "the student is analysed" in out
    assert "student log distance ratio vs visible_fraction" in out
    (written,) = (tmp_path / "out").glob("*.json")
    assert "student" in written.name and (tmp_path / "out" / written.name.replace(".json", ".png")).is_file()
    result = json.loads(written.read_text())
    assert result["encoder"] == "student" and "trained without a teacher" in result["note"]

    # The numbers are the student's: the same as those of the student saved on its own.
    views = MCDViews(TINY_IMAGE_SIZE, (0.5,) * 3, (0.5,) * 3)
    config = SyntheticConfig(image_size=32, num_train=1, num_validation=1, num_test=12)
    student = synthetic_misalignment(teacher_model.mcd, tiny_tokenizer(), config, views, base_size=34, num_samples=12)
    assert result["log_ratios"] == pytest.approx(student.log_ratios, rel=1e-4, abs=1e-5)

    mcd_run = _checkpoint(teacher_model, tmp_path / "mcd-run" / "checkpoint-4", MCD_LOG)
    assert mcd([*argv[:1], str(mcd_run), *argv[2:], str(tmp_path / "out")]) == 0
    assert "teacher log distance ratio" in capsys.readouterr().out


def test_two_runs_checkpoints_never_overwrite_each_other(teacher_model, tmp_path, capsys):
    """`run-a/checkpoint-4` and `run-b/checkpoint-4` into one folder: two results; a third analysis whose files
    exist is refused (nothing written) unless `--overwrite`."""
    from modeling_mcd.cli.main import main as mcd

    out = tmp_path / "analysis"
    argv = ["--samples", "12", "--synthetic-image-size", "32", "--output-dir", str(out)]
    results = {}
    for run, seed in (("run-a", 0), ("run-b", 1)):
        checkpoint = _checkpoint(teacher_model, tmp_path / run / "checkpoint-4", MCD_LOG)
        assert mcd(["analyze", str(checkpoint), *argv, "--seed", str(seed)]) == 0
        results[run] = json.loads(next(out.glob(f"*{run}*checkpoint-4*.json")).read_text())
    capsys.readouterr()
    assert len(list(out.glob("*.json"))) == 2 and len(list(out.glob("*.png"))) == 2
    assert results["run-a"]["log_ratios"] != results["run-b"]["log_ratios"]

    before = {path.name: path.read_bytes() for path in out.iterdir()}
    again = ["analyze", str(tmp_path / "run-a" / "checkpoint-4"), *argv, "--seed", "5"]
    assert mcd(again) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mcd: error: ") and "--overwrite" in err and "exists" in err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert mcd([*again, "--overwrite"]) == 0
