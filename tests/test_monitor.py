"""The streaming line monitor and `lineguard watch`: no training data, bounded memory, adaptive threshold."""

from __future__ import annotations

import io
import json
import math
import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.monitor import LineMonitor, RingBank
from lineguard.synthetic import make_image
from tests.conftest import SIZE, to_tensor


def stream(count: int, *, size: int, seed: int = 0, defects: dict[int, str] | None = None):
    """A generator of (3, H, W) parts, defective at the given positions."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        yield to_tensor([make_image(rng, kind="part", size=size, defect=(defects or {}).get(i))])[0]


def test_threshold_is_median_plus_mad_of_recent_scores():
    monitor = LineMonitor(warmup=5, window=5, mad_factor=4.0)
    monitor.scores.extend([1.0, 2.0, 3.0, 4.0])
    assert math.isnan(monitor.threshold())  # fewer scores than the warm-up
    monitor.scores.append(100.0)  # median 3, MAD median(2, 1, 0, 1, 97) = 1
    assert monitor.threshold() == pytest.approx(3 + 4 * 1.4826)
    monitor.scores.append(3.0)  # the window drops the oldest score (1.0): median 3, MAD 1
    assert list(monitor.scores) == [2.0, 3.0, 4.0, 100.0, 3.0]


def test_ring_bank_overwrites_the_oldest_rows():
    bank = RingBank(4, [1])
    bank.add([torch.tensor([[1.0], [2.0], [3.0]])])
    bank.add([torch.tensor([[4.0], [5.0]])])
    assert bank.filled == 4 and bank.rows[0].flatten().tolist() == [5.0, 2.0, 3.0, 4.0]
    assert bank.nearest([torch.tensor([[2.2]])])[0].item() == pytest.approx(0.2)


def test_a_non_positive_mad_factor_is_refused():
    with pytest.raises(ValueError, match="mad_factor > 0"):
        LineMonitor(mad_factor=0)


def test_ring_bank_nearest_matches_brute_force_over_the_filled_rows_only():
    g = torch.Generator().manual_seed(0)
    bank = RingBank(50, [3, 5])
    bank.add([torch.randn(30, 3, generator=g), torch.randn(30, 5, generator=g)])  # rows 30-49 are still zeros
    queries = [0.1 * torch.randn(7, 3, generator=g), 0.1 * torch.randn(7, 5, generator=g)]  # nearer 0 than any row
    for q, rows, got in zip(queries, bank.rows, bank.nearest(queries), strict=True):
        assert torch.allclose(got, torch.cdist(q.double(), rows[:30].double()).amin(1).float(), atol=1e-5)


def test_first_image_is_not_compared_with_itself_and_a_twin_scores_near_zero():
    monitor = LineMonitor(image_size=SIZE, warmup=1, patch_ratio=1.0, sigma=0)  # every patch joins the bank
    image = next(stream(1, size=SIZE))
    first, twin = monitor.score(image), monitor.score(image)
    assert math.isnan(first.score) and first.anomalous is None
    assert twin.score < 0.05 and twin.map.shape == (SIZE, SIZE)


def test_defects_in_a_stream_are_flagged_and_kept_out_of_the_reference():
    defects = {30: "scratch", 41: "crack"}
    monitor = LineMonitor(image_size=SIZE, warmup=8)
    decisions = []
    for image in stream(45, size=SIZE, seed=3, defects=defects):
        before = [r.clone() for r in monitor.banks[0].rows] if monitor.banks else None
        decisions.append(monitor.score(image))
        if decisions[-1].anomalous:
            assert all(torch.equal(a, b) for a, b in zip(before, monitor.banks[0].rows, strict=True))
    assert all(d.anomalous is None for d in decisions[:16])  # 8 build the bank, 8 more fill the window
    flagged = {d.index for d in decisions if d.anomalous}
    assert set(defects) <= flagged and len(flagged) <= len(defects) + 2


@pytest.mark.slow
def test_memory_and_bank_stay_flat_over_a_long_stream():
    monitor = LineMonitor(image_size=64, bank_images=8, warmup=8, window=50)
    tracemalloc.start()
    try:
        sizes, banks, pointers = {}, [], []
        for decision in monitor.run(stream(400, size=64, seed=5)):
            banks.append(sum(b.filled for b in monitor.banks))
            pointers = pointers or [r.data_ptr() for b in monitor.banks for r in b.rows]
            if decision.index in (100, 399):
                sizes[decision.index] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    capacity = sum(b.capacity for b in monitor.banks)
    assert banks[-1] == capacity and max(banks) == capacity  # full, and never more
    assert [r.data_ptr() for b in monitor.banks for r in b.rows] == pointers  # allocated once, reused
    assert len(monitor.scores) == 50
    assert sizes[399] - sizes[100] < 64 * 1024  # Python-side memory does not grow with the stream


def test_watch_scores_a_folder_while_it_is_being_filled(tmp_path):
    folder, out = tmp_path / "line", tmp_path / "results"
    folder.mkdir()
    images = [(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for img in stream(10, size=64, seed=7)]

    def camera():
        for i, array in enumerate(images):
            data = _png_bytes(array)
            target = folder / f"{i:03d}.png"
            with open(target, "wb") as f:  # written in two parts, as a slow copy would
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(0.05)
                f.write(data[len(data) // 2:])
            time.sleep(0.05)

    writer = threading.Thread(target=camera)
    writer.start()
    result = CliRunner().invoke(app, ["watch", str(folder), "--out", str(out), "--image-size", "64",
                                      "--param", "warmup=3", "--poll", "0.1", "--idle-timeout", "2"])
    writer.join()
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(row["path"] for row in rows) == sorted(str((folder / f"{i:03d}.png").resolve())
                                                          for i in range(10))
    assert rows[0]["score"] is None and all(row["score"] >= 0 for row in rows[1:])
    assert all(row.get("decision") is None for row in rows[:3]) and all((out / row["map"]).exists() for row in rows)
    # a second watch resumes: nothing is scored twice
    again = CliRunner().invoke(app, ["watch", str(folder), "--out", str(out), "--image-size", "64",
                                     "--poll", "0.05", "--idle-timeout", "0.3"])
    assert again.exit_code == 0 and len((out / "results.jsonl").read_text().splitlines()) == 10


def test_watch_mad_factor_sets_how_far_above_the_recent_median_the_threshold_lies(tmp_path):
    folder = tmp_path / "line"
    folder.mkdir()
    for i, img in enumerate(stream(10, size=64, seed=3)):
        (folder / f"{i:03d}.png").write_bytes(_png_bytes((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)))
    rows = {}
    for factor in ("1", "4"):
        out = tmp_path / f"results-{factor}"
        result = CliRunner().invoke(app, ["watch", str(folder), "--out", str(out), "--image-size", "64",
                                          "--param", "warmup=3", "--mad-factor", factor, "--max-images", "10",
                                          "--poll", "0.05", "--idle-timeout", "0.5"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        rows[factor] = sorted((json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()),
                              key=lambda row: row["path"])
    decided = [(low, high) for low, high in zip(rows["1"], rows["4"], strict=True) if low["threshold"] is not None]
    assert len(decided) >= 3
    assert all(low["score"] == high["score"] and high["threshold"] > low["threshold"] for low, high in decided)
    bad = CliRunner().invoke(app, ["watch", str(folder), "--out", str(tmp_path / "o"), "--mad-factor", "0"])
    assert bad.exit_code != 0 and "--mad-factor must be positive" in bad.output


def test_watch_names_unknown_parameters(tmp_path):
    result = CliRunner().invoke(app, ["watch", str(tmp_path), "--out", str(tmp_path / "o"), "--param", "bogus=1"])
    assert result.exit_code != 0 and "bogus" in result.output


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()

