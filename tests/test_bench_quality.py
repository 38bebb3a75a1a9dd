# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""bench/quality.py: the objective comparison, at a toy size (`--smoke`), and its variants' flags."""

from __future__ import annotations

import json
import statistics

import pytest
from test_bench_step import last_json_line, load_bench

from modeling_mcd.trainer.recipe import parse_run_args

quality = load_bench("quality")
quality_stats = load_bench("quality_stats")
quality_select = load_bench("quality_select")


@pytest.mark.parametrize("variant", sorted(quality.VARIANTS))
def test_every_variant_parses_to_its_objective_and_terms(variant):
    recipe = quality.DATASETS["synthetic"]["recipe"]
    _, _, training_args = parse_run_args([str(recipe), *quality.VARIANTS[variant]])
    assert training_args.objective == variant.split("_")[0]
    assert training_args.use_mlm == (variant == "mcd_mlm")
    terms = (training_args.distill_pos, training_args.distill_neg, training_args.distill_noisy)
    expected = {"mcd_pos": (True, False, False), "mcd_pos_neg": (True, True, False)}
    if training_args.objective == "mcd":
        assert terms == expected.get(variant, (True, True, True))
    assert (training_args.aug_crop_scale == [0.5, 1.0]) == variant.endswith("weak_aug")
    assert (training_args.base_momentum == 0.9) == (variant == "mcd_m0_0.9")


def test_each_grid_is_made_of_known_variants_and_parses_with_its_recipe():
    for data, spec in quality.DATASETS.items():
        assert set(spec["variants"]) <= set(quality.VARIANTS), data
        extra = ["--text_model_name_or_path", "some/bert"] if data == "flickr8k" else []  # parsed, never loaded
        extra += ["--bf16", "false"] if data == "flickr8k_gpu" else []  # a GPU recipe, parsed on a CPU
        for variant in spec["variants"]:
            parse_run_args([str(spec["recipe"]), *spec["flags"], *quality.VARIANTS[variant], *extra])


def test_smoke_runs_each_variant_and_seed_and_reads_finished_runs_back(tmp_path, capsys, monkeypatch):
    result = quality.main(["--smoke", "--output", str(tmp_path)])
    printed = last_json_line(capsys.readouterr().out)
    assert printed["summary"] == json.loads(json.dumps(result["summary"]))
    # Seed-major: the whole grid at seed 0, then the other seeds of clip and mcd.
    assert [(run["variant"], run["seed"]) for run in result["runs"]] == [
        ("clip", 0), ("mcd", 0), ("mcd_mlm", 0), ("clip", 1), ("mcd", 1)
    ]  # fmt: skip
    metric = "synthetic_zero_shot_top1"
    for variant in ("clip", "mcd"):
        values = [run["metrics"][metric] for run in result["runs"] if run["variant"] == variant]
        assert result["summary"][variant][metric] == {
            "mean": pytest.approx(statistics.fmean(values)),
            "std": pytest.approx(statistics.stdev(values)),
            "n": 2,
        }
    assert all([point["step"] for point in run["curve"]] == [1, 2] for run in result["runs"])
    assert (tmp_path / "quality_synthetic.json").is_file() and (tmp_path / "quality_synthetic.png").stat().st_size
    assert json.loads((tmp_path / "quality_synthetic.json").read_text())["runs"] == result["runs"]

    # A second call finds every run done for the same command: nothing is trained again.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was started again")

    monkeypatch.setattr(quality.subprocess, "run", no_training)
    assert quality.main(["--smoke", "--output", str(tmp_path)])["runs"] == result["runs"]


def _fake_run(variant, seed, value, noise=0.0):
    return {
        "variant": variant, "seed": seed, "noise": noise, "label": quality_stats.label(variant, noise),
        "metrics": {"m": value}, "curve": [],
    }  # fmt: skip


def test_paired_differences_pair_seeds_and_give_a_student_t_interval():
    clip = [0.10, 0.12, 0.11, 0.13, 0.09]
    mcd = [0.12, 0.15, 0.11, 0.16, 0.12]  # differences 0.02, 0.03, 0.00, 0.03, 0.03
    runs = [_fake_run("clip", s, v) for s, v in enumerate(clip)] + [_fake_run("mcd", s, v) for s, v in enumerate(mcd)]
    runs.append(_fake_run("mcd", 7, 0.5))  # a seed clip never ran: not paired
    entry = quality_stats.paired_differences(runs, ["m"])["mcd"]["m"]
    differences = [b - a for a, b in zip(clip, mcd)]
    assert entry["seeds"] == [0, 1, 2, 3, 4] and entry["differences"] == pytest.approx(differences)
    mean, sd = statistics.fmean(differences), statistics.stdev(differences)
    half = 2.7764451051977987 * sd / 5**0.5  # t(0.975, 4 degrees of freedom)
    assert entry["mean"] == pytest.approx(mean)
    assert entry["ci95"] == pytest.approx([mean - half, mean + half])
    assert entry["excludes_zero"] is (mean - half > 0)
    assert "clip" not in quality_stats.paired_differences(runs, ["m"])


def test_analysis_summary_counts_each_model_once_per_run():
    def point(step, model, encoder, rho):
        return {"step": step, "model": model, "encoder": encoder, "spearman": rho}

    clip_rhos = [(-0.20, -0.18), (-0.22, -0.16), (-0.21, -0.19)]  # per seed: step 250, step 500
    teacher_rhos = [(-0.10, -0.30), (-0.12, -0.26), (-0.08, -0.28)]
    student_rhos = [-0.25, -0.27, -0.29]
    runs = []
    for seed in range(3):
        (c250, c500), (t250, t500) = clip_rhos[seed], teacher_rhos[seed]
        # clip: its last checkpoint and its exported model are one model (the same rho), analysed twice.
        clip = [point(250, "checkpoint-250", "student", c250), point(500, "checkpoint-500", "student", c500)]
        runs.append({"label": "clip", "seed": seed, "analysis": [*clip, point(500, "mcd-model", "model", c500)]})
        mcd = [point(250, "checkpoint-250", "teacher", t250), point(500, "checkpoint-500", "teacher", t500)]
        runs.append(
            {"label": "mcd", "seed": seed, "analysis": [*mcd, point(500, "mcd-model", "model", student_rhos[seed])]}
        )
    runs.append({"label": "mpnce", "seed": 0})  # not analysed: no cell
    summary = quality_stats.analysis_summary(runs)
    assert set(summary) == {"clip", "mcd"}

    def expected(step, encoder, values):
        return {
            "step": step,
            "encoder": encoder,
            "n": 3,
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values),
        }

    assert summary["clip"] == [
        pytest.approx(expected(250, "student", [c[0] for c in clip_rhos])),
        pytest.approx(expected(500, "student", [c[1] for c in clip_rhos])),
    ]
    assert summary["mcd"] == [
        pytest.approx(expected(250, "teacher", [t[0] for t in teacher_rhos])),
        pytest.approx(expected(500, "student", student_rhos)),
        pytest.approx(expected(500, "teacher", [t[1] for t in teacher_rhos])),
    ]


def test_analysis_table_puts_each_model_in_its_column_and_step_row():
    def entry(step, encoder, mean, std, n=3):
        return {"step": step, "encoder": encoder, "n": n, "mean": mean, "std": std}

    summary = {
        "clip": [entry(250, "student", -0.2071, 0.0066), entry(500, "student", -0.1958, 0.003)],
        "mcd": [
            entry(250, "teacher", -0.25, 0.009),
            entry(500, "student", -0.261, 0.004, 2),
            entry(500, "teacher", 0.01, 0.0),
        ],
    }
    lines = quality_stats.analysis_table(summary).splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == [
        "step", "clip student", "mcd teacher", "mcd student"
    ]  # fmt: skip
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]] for line in lines[2:]}
    assert rows["250"] == ["-0.207 ± 0.007 (3)", "-0.250 ± 0.009 (3)", ""]  # no student analysed at step 250
    assert rows["500"] == ["-0.196 ± 0.003 (3)", "+0.010 ± 0.000 (3)", "-0.261 ± 0.004 (2)"]
    assert len(lines) == 4


def test_noisy_cells_pair_with_clip_at_the_same_noise():
    runs = [_fake_run("clip", s, 0.1 * s, noise) for s in range(2) for noise in (0.0, 0.5)]
    runs += [_fake_run("mcd", s, 0.1 * s + 0.01 + noise, noise) for s in range(2) for noise in (0.0, 0.5)]
    differences = quality_stats.paired_differences(runs, ["m"])
    assert differences["mcd"]["m"]["baseline"] == "clip"
    assert differences["mcd p=0.5"]["m"]["baseline"] == "clip p=0.5"
    assert differences["mcd p=0.5"]["m"]["differences"] == pytest.approx([0.51, 0.51])


def test_noise_costs_compare_each_objectives_loss_to_the_noise_seed_by_seed():
    # metric[variant][noise][seed]; seed 2 of mcd at p = 0.5 is missing (not counted), and mpnce is costed too.
    table = {
        "clip": {0.0: [0.50, 0.52, 0.49], 0.5: [0.30, 0.35, 0.31]},
        "mcd": {0.0: [0.48, 0.50, 0.47], 0.5: [0.40, 0.41]},
        "mpnce": {0.0: [0.47, 0.49, 0.46], 0.5: [0.20, 0.25, 0.22]},
    }
    runs = [
        _fake_run(variant, seed, value, noise)
        for variant, levels in table.items()
        for noise, values in levels.items()
        for seed, value in enumerate(values)
    ]
    costs = quality_stats.noise_costs(runs, ["m"])
    # The table, in points, with the per-seed differences (metrics are named as the runs name them).
    renamed = [{**run, "metrics": {"flickr8k_retrieval_image_to_text_R@5": run["metrics"]["m"]}} for run in runs]
    lines = quality_stats.cost_table(
        quality_stats.noise_costs(renamed, [*renamed[0]["metrics"]]), [*renamed[0]["metrics"]]
    )
    assert "| mcd p=0.5 | i2t_R@5 | 2 | -18.50 | -8.50 | +10.00 [" in lines and "| +12.00, +8.00 |" in lines
    # Against mpnce: what distillation adds to MP-NCE, in the same tables.
    versus = quality_stats.paired_differences(renamed, [*renamed[0]["metrics"]], "mpnce")
    assert set(versus) == {"clip", "mcd", "clip p=0.5", "mcd p=0.5"}
    assert versus["mcd p=0.5"]["flickr8k_retrieval_image_to_text_R@5"]["differences"] == pytest.approx([0.20, 0.16])
    header = quality_stats.difference_table(versus, [*renamed[0]["metrics"]], "mpnce").splitlines()[0]
    assert header.startswith("| cell − mpnce | seeds | i2t_R@5 |")
    assert set(costs) == {"mcd p=0.5", "mpnce p=0.5"}  # clip is the baseline; p = 0 costs nothing
    mcd = costs["mcd p=0.5"]["m"]
    clip_cost = [0.30 - 0.50, 0.35 - 0.52]
    mcd_cost = [0.40 - 0.48, 0.41 - 0.50]
    assert mcd["seeds"] == [0, 1]
    assert mcd["differences"] == pytest.approx([m - c for m, c in zip(mcd_cost, clip_cost)])  # +0.12, +0.08
    assert mcd["cost"] == pytest.approx(statistics.fmean(mcd_cost))
    assert mcd["baseline_cost"] == pytest.approx(statistics.fmean(clip_cost))
    half = 12.706204736174707 * statistics.stdev(mcd["differences"]) / 2**0.5  # t(0.975, 1 degree of freedom)
    assert mcd["ci95"] == pytest.approx([0.10 - half, 0.10 + half])
    mpnce = costs["mpnce p=0.5"]["m"]
    mpnce_minus_clip = [(0.20 - 0.47) - (0.30 - 0.50), (0.25 - 0.49) - (0.35 - 0.52), (0.22 - 0.46) - (0.31 - 0.49)]
    assert mpnce["seeds"] == [0, 1, 2] and mpnce["differences"] == pytest.approx(mpnce_minus_clip)
    assert mpnce["excludes_zero"] is (mpnce["ci95"][1] < 0)  # MP-NCE loses more here, at every seed


def test_noise_levels_run_seed_major_with_their_flag_and_folder(tmp_path, monkeypatch):
    calls = []

    def fake_run_one(command, output_dir, log, analyze=None):
        calls.append((command, output_dir))
        return {"command": command, "wall_s": 0.0, "metrics": {}, "curve": []}

    monkeypatch.setattr(quality, "run_one", fake_run_one)
    monkeypatch.setattr(quality, "plot_curves", lambda *args: None)
    monkeypatch.setattr(quality, "plot_noise", lambda *args: None)
    result = quality.main(["--data", "synthetic", "--variants", "clip", "mcd", "--seeds", "2", "--noise", "0", "0.5",
                           "--output", str(tmp_path)])  # fmt: skip
    assert [(run["label"], run["seed"]) for run in result["runs"]] == [
        ("clip", 0), ("mcd", 0), ("clip p=0.5", 0), ("mcd p=0.5", 0),
        ("clip", 1), ("mcd", 1), ("clip p=0.5", 1), ("mcd p=0.5", 1),
    ]  # fmt: skip
    for command, output_dir in calls:
        noisy = "--caption_noise" in command
        assert noisy == ("synthetic_noise0.5" in str(output_dir))
        if noisy:
            assert command[command.index("--caption_noise") + 1] == "0.5"


def _study(path, command_flags, values):
    """A study JSON as bench/quality.py writes it: `values` maps (variant, seed) to the criterion."""
    runs = [
        {"variant": variant, "seed": seed, "metrics": {"flickr8k_retrieval_mean_recall": value}}
        for (variant, seed), value in values.items()
    ]
    command = "python bench/quality.py --data flickr8k --json x.json" + (
        f" -- {command_flags}" if command_flags else ""
    )
    path.write_text(json.dumps({"command": command, "runs": runs}))
    return path


def test_selection_compares_each_objectives_settings_on_their_common_seeds(tmp_path, capsys):
    lambda1 = _study(
        tmp_path / "quality_val_lambda1.json",
        "--eval_retrieval_split val",
        {("clip", 0): 0.050, ("clip", 1): 0.054, ("clip", 2): 0.052, ("mcd", 0): 0.049, ("mcd", 1): 0.051},
    )
    lambda10 = _study(
        tmp_path / "quality_val_lambda10.json",
        "--eval_retrieval_split val --lambda_dist 10",
        {("mcd", 0): 0.052, ("mcd", 1): 0.050, ("mcd", 2): 0.070},  # seed 2: not in every mcd candidate
    )
    assert quality_select.main([str(lambda1), str(lambda10), "--json", str(tmp_path / "choice.json")]) == 0
    choice = json.loads((tmp_path / "choice.json").read_text())
    by_key = {(c["study"], c["variant"]): c for c in choice["candidates"]}
    assert by_key[("val_lambda1", "clip")]["seeds"] == [0, 1, 2]
    assert by_key[("val_lambda10", "mcd")]["seeds"] == [0, 1]  # the seeds both mcd settings have
    assert by_key[("val_lambda10", "mcd")]["mean"] == pytest.approx(statistics.fmean([0.052, 0.050]))
    assert by_key[("val_lambda1", "mcd")]["std"] == pytest.approx(statistics.stdev([0.049, 0.051]))
    assert choice["best"]["mcd"]["flags"] == "--eval_retrieval_split val --lambda_dist 10"  # 5.10 against 5.00
    assert choice["best"]["clip"]["study"] == "val_lambda1"
    out = capsys.readouterr().out
    assert "best mcd: --eval_retrieval_split val --lambda_dist 10 (val_lambda10)" in out
    # Paired with clip: only the study that ran clip, over the seeds both ran (0, 1), by hand.
    (paired,) = choice["paired"]
    differences = [0.049 - 0.050, 0.051 - 0.054]
    assert (paired["study"], paired["variant"], paired["seeds"]) == ("val_lambda1", "mcd", [0, 1])
    assert paired["differences"] == pytest.approx(differences)
    half = 12.706 * statistics.stdev(differences) / 2**0.5  # t(1) at 97.5 %
    mean = statistics.fmean(differences)
    assert paired["ci95"] == pytest.approx([mean - half, mean + half], rel=1e-4)
    assert f"| val_lambda1 | `mcd` | 0,1 | {100 * mean:+.2f} [" in out


def test_selection_names_a_missing_study_file(tmp_path, capsys):
    assert quality_select.main([str(tmp_path / "nowhere.json")]) == 2
    assert "nowhere.json" in capsys.readouterr().err
