# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""bench/data.py: the input pipeline on a few real Flickr8k rows, next to the model's rate."""

from __future__ import annotations

import pytest

from test_bench_step import last_json_line, load_bench

data = load_bench("data")


@pytest.mark.skipif(not data.DEFAULT_DATA.is_file(), reason="needs ../shared/data/flickr8k")
def test_tiny_run_reports_every_stage_and_the_ratio(capsys, tmp_path):
    data.main(["--tiny", "--threads", "1", "--json", str(tmp_path / "data.json")])
    printed = last_json_line(capsys.readouterr().out)
    assert printed["rows"] == 48 and printed["batch"] == 8
    assert set(printed["stage_samples_per_s"]) == {"decode", "collate", "views"}
    assert all(rate > 0 for rate in printed["stage_samples_per_s"].values())
    assert [loader["workers"] for loader in printed["loader"]] == [0, 1]
    assert all(loader["samples_per_s"] > 0 for loader in printed["loader"])
    assert printed["model_samples_per_s"] > 0 and 0 < printed["views_share_of_step"] < 1
    assert printed["chosen_workers"] in (0, 1)
    chosen = next(loader for loader in printed["loader"] if loader["workers"] == printed["chosen_workers"])
    assert printed["pipeline_over_model"] == pytest.approx(chosen["samples_per_s"] / printed["model_samples_per_s"])
    assert printed["target_holds"] == (printed["pipeline_over_model"] >= 3)
    assert printed["limit"] in ("decode", "collate", "views")
