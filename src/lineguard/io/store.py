"""Results written as they are produced: one JSON line per image, its anomaly map in a file beside it.

A run that is interrupted (crash, Ctrl-C, power loss) resumes from what is on disk: every finished row is kept,
none is written twice. The map is written (atomically) before its row, so a row never points at a missing map;
a half-written last line from a crash is cut off when the store is opened again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_FILE = "results.jsonl"
MAPS_DIR = "maps"


class ResultStore:
    """Append-only store of per-image results in ``folder``; ``key`` of a row is its image path."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / MAPS_DIR).mkdir(exist_ok=True)
        self.path = self.folder / RESULTS_FILE
        self._rows = self._read_and_repair()
        self._keys = {row["path"] for row in self._rows}

    def _read_and_repair(self) -> list[dict[str, Any]]:
        """Read every complete row; truncate a torn last line left by a crash."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        rows, good_end = [], 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_end += len(line)
        if good_end != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return rows

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, path: str | Path) -> bool:
        return str(path) in self._keys

    def append(self, row: dict[str, Any], anomaly_map: np.ndarray | None = None) -> dict[str, Any]:
        """Persist one result (``row["path"]`` required) durably before returning it."""
        key = str(row["path"])
        if key in self._keys:
            raise ValueError(f"{key} is already in {self.path}")
        row = {**row, "path": key}
        if anomaly_map is not None:
            name = f"{MAPS_DIR}/{len(self._rows):06d}.npy"
            tmp = self.folder / (name + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(anomaly_map, dtype=np.float16), allow_pickle=False)
            os.replace(tmp, self.folder / name)
            row["map"] = name
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._rows.append(row)
        self._keys.add(key)
        return row

    def load_map(self, row: dict[str, Any]) -> np.ndarray:
        return np.load(self.folder / row["map"], allow_pickle=False).astype(np.float32)
