# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""bench/data.py: the input pipeline on a few real Flickr8k rows, next to the model's rate; how it picks the worker
count and names the stage that limits it."""

from __future__ import annotations

import json

import pytest
from test_bench_step import last_json_line, load_bench

data = load_bench("data")


@pytest.mark.skipif(not data.DEFAULT_DATA.is_file(), reason="needs ../shared/data/flickr8k")
def test_tiny_run_reports_every_stage_and_every_worker_count(capsys, tmp_path):
    data.main(["--tiny", "--threads", "1", "--json", str(tmp_path / "data.json")])
    printed = last_json_line(capsys.readouterr().out)
    assert json.loads((tmp_path / "data.json").read_text()) == printed
    assert printed["rows"] == 48 and printed["batch"] == 8  # --tiny: the first 48 rows, batches of 8
    assert (
        set(printed["stage_samples_per_s"]) == set(printed["stage_cost_per_sample_s"]) == {"decode", "collate", "views"}
    )
    assert [loader["workers"] for loader in printed["loader"]] == [0, 1]
    assert 0 < printed["views_share_of_step"] < 1  # the views are made inside the model's step


def _loaders(rates: dict[int, float]) -> list[dict]:
    return [{"workers": workers, "samples_per_s": rate} for workers, rate in rates.items()]


def test_the_fewest_workers_that_feed_the_model_three_times_over_are_chosen():
    loaders = _loaders({4: 500.0, 0: 100.0, 2: 400.0, 1: 250.0})
    chosen = data.choose_workers(loaders, model_samples_per_s=100.0)
    assert chosen["workers"] == 2  # 4x the model; 4 workers are faster, but 2 suffice
    assert {loader["workers"]: loader["over_model"] for loader in loaders} == {4: 5.0, 0: 1.0, 2: 4.0, 1: 2.5}


def test_the_fastest_loader_is_chosen_when_none_feeds_the_model_enough():
    loaders = _loaders({0: 100.0, 1: 250.0, 2: 220.0})
    assert data.choose_workers(loaders, model_samples_per_s=100.0)["workers"] == 1  # 2.5x, short of 3x


def test_workers_share_decoding_and_collating_but_not_the_views():
    # One process decodes a sample in 12 ms and collates it in 2 ms; the views take 80 ms a batch of 8 (10 ms each).
    alone = data.stage_costs(0.012, 0.002, 0.08, batch=8, workers=0)
    assert alone == pytest.approx({"decode": 0.012, "collate": 0.002, "views": 0.01})
    four = data.stage_costs(0.012, 0.002, 0.08, batch=8, workers=4)
    assert four == pytest.approx({"decode": 0.003, "collate": 0.0005, "views": 0.01})


def test_decoding_per_process_falls_as_one_over_the_processes(capsys, tmp_path):
    from PIL import Image

    lines = []
    for k in range(24):
        Image.new("RGB", (12, 10), (10 * k, 80, 200 - 5 * k)).save(tmp_path / f"{k}.jpg")
        lines.append(json.dumps({"file_name": f"{k}.jpg", "captions": [f"picture {k}", f"image {k}"]}))
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    data.main(["--tiny", "--data", str(tmp_path / "captions.jsonl"), "--processes", "1", "2", "4", "--shards", "4"])
    out = capsys.readouterr().out
    printed = last_json_line(out)
    assert "| processes | rows read per process | decoded per process |" in out
    work = {entry["processes"]: entry for entry in printed["decode_work"]}
    assert sorted(work) == [1, 2, 4] and printed["rows"] == 24
    for processes, entry in work.items():
        assert entry["decoded_in_job"] == 24  # every sample decoded once in the whole job
        assert entry["decoded_per_process"] == [24 // processes] * processes
        assert entry["accelerate_decoded_per_process"] == [24] * processes  # each reads and decodes everything
    assert work[2]["read_per_process"] == [12, 12]  # 4 shards on 2 processes: each reads its own 2
    assert work[4]["read_per_process"] == [6] * 4
