"""The benchmark grid: which runs a plan holds, and the table's averages over support draws."""

from __future__ import annotations

import json
from pathlib import Path

from lineguard import benchmarking


def test_plan_gives_test_batch_methods_no_shots_and_drops_parameters_a_method_lacks():
    runs = benchmarking.plan(data=[Path("/d")], methods=["fewshot", "mutual"], backbones=["effnet-lite0"],
                             shots=[1, 4], seeds=[0], params=["reweight_neighbours=3"], image_size=None)
    by_method = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    assert [r.shots for r in by_method["fewshot"]] == [1, 4]
    assert all(r.params == ("reweight_neighbours=3",) for r in by_method["fewshot"])
    assert [(r.shots, r.params) for r in by_method["mutual"]] == [(None, ())]


def test_table_averages_the_seeds_and_gives_the_spread_of_accuracies(tmp_path):
    runs = benchmarking.plan(data=[Path("/d/bottle")], methods=["fewshot"], backbones=["effnet-lite0"], shots=[4],
                             seeds=[0, 1, 2], params=[], image_size=None)
    aurocs, seconds = [0.90, 0.94, 0.98], [10.0, 20.0, 30.0]
    rows = [{"run": run.key, "image_auroc": a, "fit_seconds": s}
            for run, a, s in zip(runs, aurocs, seconds, strict=True)]
    table = benchmarking.write_table(rows, tmp_path / "t.md")
    line = table.splitlines()[-1].split(" | ")
    assert line[:6] == ["| bottle", "fewshot", "effnet-lite0", "4", "", "3"]
    assert line[6] == "0.940 ± 0.040"  # mean and sample std of 0.90, 0.94, 0.98
    assert line[9] == "20.000"  # times: the mean only
    assert line[7] == "–"  # a metric no row has
    assert (tmp_path / "t.md").read_text() == table
    assert json.loads(rows[0]["run"])["seed"] == 0
