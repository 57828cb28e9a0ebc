"""Benchmark grids: every method × backbone × dataset × shots × seed, one process per run.

Each run is a ``lineguard evaluate --json`` in a fresh process, so its peak memory is its own and a crash
costs one row. Finished runs are appended to ``results.jsonl`` at once; a rerun skips them (resume). The
table averages the seeds of each configuration (the support draws of a few-shot row).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Any

from lineguard.methods import method_class
from lineguard.params import defaults
from lineguard.progress import track

COLUMNS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO",
           "fit_seconds": "fit s", "images_per_second": "images/s", "peak_rss_mb": "peak RSS MB"}


ACCURACY = ("image_auroc", "pixel_auroc", "aupro")


@dataclass(frozen=True)
class Run:
    data: str
    method: str
    backbone: str | None
    shots: int | None
    seed: int
    params: tuple[str, ...]
    image_size: int | None

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def cli_args(self, json_path: Path) -> list[str]:
        args = ["evaluate", "--method", self.method, "--data", self.data, "--seed", str(self.seed),
                "--json", str(json_path)]
        if self.backbone:
            args += ["--backbone", self.backbone]
        if self.shots is not None:
            args += ["--shots", str(self.shots)]
        if self.image_size is not None:
            args += ["--image-size", str(self.image_size)]
        for p in self.params:
            args += ["--param", p]
        return args


def plan(*, data: list[Path], methods: list[str], backbones: list[str | None], shots: list[int | None],
         seeds: list[int], params: list[str], image_size: int | None) -> list[Run]:
    """The grid; methods without a backbone get one run per dataset/shots/seed, test-batch methods no shots.
    A backbone None is each method's own default (a CLIP method's is a CLIP model, a CNN method's is not)."""
    runs: dict[str, Run] = {}
    for d, m, b, k, s in product(data, methods, backbones, shots, seeds):
        cls = method_class(m)
        k = k if cls.uses_normal_images else None
        b = (b or defaults(cls)["backbone"]) if "backbone" in cls.param_names() else None
        run = Run(str(d), m, b, k, s, tuple(p for p in params if p.split("=")[0] in cls.param_names()), image_size)
        runs.setdefault(run.key, run)
    return list(runs.values())


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The finished rows of a results ``.jsonl`` by their run key (empty when there is no file yet)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return {row["run"]: row for row in map(json.loads, filter(str.strip, lines))}


def run_all(runs: list[Run], folder: Path, *, runner: Callable[[list[str]], int]) -> list[dict[str, Any]]:
    """Run what is not in ``folder/results.jsonl`` yet and return all rows of this grid."""
    folder.mkdir(parents=True, exist_ok=True)
    results_path = folder / "results.jsonl"
    done = read_rows(results_path)
    for run in track([r for r in runs if r.key not in done], "benchmark runs"):
        with tempfile.TemporaryDirectory() as tmp:
            json_path = Path(tmp) / "result.json"
            code = runner(run.cli_args(json_path))
            if code != 0 or not json_path.exists():
                print(f"run failed (exit {code}): {run.key}")
                continue
            row = {"run": run.key, **json.loads(json_path.read_text())}
        with open(results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[run.key] = row
    return [done[r.key] for r in runs if r.key in done]


def mean_sd(values: list[float], *, spread: bool = True, count: bool = False) -> str:
    """Mean of repeated runs (seeds, draws) to three decimals; ± their sample standard deviation when
    ``spread`` and there are several; "(n=…)" when ``count``; "–" for none."""
    if not values:
        return "–"
    text = f"{statistics.fmean(values):.3f}"
    if spread and len(values) > 1:
        text += f" ± {statistics.stdev(values):.3f}"
    return f"{text} (n={len(values)})" if count else text


def write_table(rows: list[dict[str, Any]], path: Path, columns: dict[str, str] = COLUMNS) -> str:
    """Markdown table, one line per configuration, metrics averaged over seeds (accuracies ± their std)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        run = json.loads(row["run"])
        config = (Path(run["data"]).name, run["method"], run["backbone"] or "–",
                  "all" if run["shots"] is None else str(run["shots"]), " ".join(run["params"]))
        groups.setdefault(config, []).append(row)
    header = ["dataset", "method", "backbone", "shots", "params", "seeds", *columns.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config, members in groups.items():
        cells = [mean_sd([m[k] for m in members], spread=k in ACCURACY) if k in members[0] else "–" for k in columns]
        lines.append("| " + " | ".join([*config, str(len(members)), *cells]) + " |")
    table = "\n".join(lines) + "\n"
    path.write_text(table)
    return table
