import json

import numpy as np
import pytest

from lineguard.io.store import ResultStore


def test_rows_and_maps_survive_reopen(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"path": "a.png", "score": 1.5}, np.ones((4, 4)))
    store.append({"path": "b.png", "score": 0.5}, np.zeros((4, 4)))
    again = ResultStore(tmp_path)
    assert [r["path"] for r in again.rows] == ["a.png", "b.png"]
    assert "a.png" in again and "c.png" not in again
    assert np.array_equal(again.load_map(again.rows[0]), np.ones((4, 4)))
    with pytest.raises(ValueError, match="already"):
        again.append({"path": "a.png", "score": 0.0})


def test_torn_last_line_from_a_crash_is_dropped_and_resume_does_not_duplicate(tmp_path):
    store = ResultStore(tmp_path)
    for name in ("a", "b", "c"):
        store.append({"path": name, "score": 1.0}, np.zeros((2, 2)))
    with open(store.path, "ab") as f:  # simulated crash in the middle of writing row "d"
        f.write(b'{"path": "d", "sco')
    resumed = ResultStore(tmp_path)
    assert len(resumed) == 3
    resumed.append({"path": "d", "score": 2.0}, np.zeros((2, 2)))
    lines = store.path.read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["a", "b", "c", "d"]
    assert (tmp_path / resumed.rows[-1]["map"]).exists()
