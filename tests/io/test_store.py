import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from lineguard.io.store import DAMAGED_FILE, ResultsLockedError, ResultStore


def test_rows_and_maps_survive_reopen(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"path": "a.png", "score": 1.5}, np.ones((4, 4)))
    store.append({"path": "b.png", "score": 0.5}, np.zeros((4, 4)))
    store.close()
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
    store.close()
    resumed = ResultStore(tmp_path)
    assert len(resumed) == 3 and resumed.damaged == [4]
    resumed.append({"path": "d", "score": 2.0}, np.zeros((2, 2)))
    lines = store.path.read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["a", "b", "c", "d"]
    assert (tmp_path / resumed.rows[-1]["map"]).exists()


def test_a_damaged_line_is_named_and_kept_aside_and_no_row_after_it_is_lost(tmp_path):
    store = ResultStore(tmp_path)
    for i, name in enumerate("abcde"):
        store.append({"path": name, "score": float(i)}, np.full((2, 2), i))
    store.close()
    lines = store.path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:12] + b"\n"  # line 3 ("c") cut short in the middle of the file
    store.path.write_bytes(b"".join(lines))

    resumed = ResultStore(tmp_path)
    assert resumed.damaged == [3]
    assert [r["path"] for r in resumed.rows] == ["a", "b", "d", "e"]
    assert (tmp_path / DAMAGED_FILE).read_bytes() == lines[2]
    assert [json.loads(line)["path"] for line in store.path.read_text().splitlines()] == ["a", "b", "d", "e"]
    row = resumed.append({"path": "c", "score": 9.0}, np.full((2, 2), 9))
    assert row["map"] not in {r["map"] for r in resumed.rows[:-1]}  # no map of another row overwritten
    assert [resumed.load_map(r)[0, 0] for r in resumed.rows] == [0, 1, 3, 4, 9]
    resumed.close()
    assert ResultStore(tmp_path).damaged == []


def test_lines_that_are_not_rows_and_duplicate_rows_are_damaged(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"path": "a", "score": 1}\n[1, 2]\n{"score": 2}\n'
                                            '{"path": "a", "score": 3}\n{"path": "b", "score": 4}\n')
    store = ResultStore(tmp_path)
    assert store.damaged == [2, 3, 4] and [r["score"] for r in store.rows] == [1, 4]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    store = ResultStore(tmp_path)
    holder = f"pid {os.getpid()} on {socket.gethostname()}, started "
    with pytest.raises(ResultsLockedError, match=f"{tmp_path} is being written by {holder}"):
        ResultStore(tmp_path)
    assert len(ResultStore(tmp_path, readonly=True)) == 0  # readers take no lock
    store.close()
    with ResultStore(tmp_path) as again:
        again.append({"path": "a", "score": 1.0})


@pytest.mark.slow
def test_the_lock_goes_with_a_killed_process(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from lineguard.io.store import ResultStore; "
                              f"s = ResultStore({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(ResultsLockedError, match=f"pid {child.pid} "):
            ResultStore(tmp_path)
    finally:
        child.kill()
        child.wait()
    ResultStore(tmp_path).close()  # kill -9 released it
