"""The MuSc protocol of ``benchmarks/peer_metrics.py`` against hand-computed values."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lineguard.io.datasets import Sample

_spec = importlib.util.spec_from_file_location(
    "peer_metrics", Path(__file__).resolve().parents[1] / "benchmarks" / "peer_metrics.py")
peer_metrics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer_metrics)


def test_sampled_aupro_rescales_the_kept_fprs():
    # one 4 x 4 image: a 4-pixel defect half at 0.9, half at 0.3; normal pixels at 1.0, 0.6 and ten at 0.
    maps = np.zeros((1, 4, 4))
    masks = np.zeros((1, 4, 4), dtype=np.int32)
    masks[0, :2, :2] = 1
    maps[0, 0, :2], maps[0, 1, :2] = 0.9, 0.3
    maps[0, 3, 3], maps[0, 3, 2] = 1.0, 0.6
    # thresholds in [0, 0.3): PRO 1, FPR 2/12; [0.3, 0.6): 0.5, 2/12; [0.6, 0.9): 0.5, 1/12; [0.9, 1): 0, 1/12.
    # FPRs rescaled to 1 and 0: the only horizontal stretch is PRO 0.5 from 1 to 0, area 0.5.
    assert peer_metrics.sampled_aupro(masks, maps) == pytest.approx(0.5)


def test_musc_masks_keep_only_fully_covered_pixels(tmp_path):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4, :4] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    sample = Sample(path=tmp_path / "i.png", label=1, defect="x", mask_path=tmp_path / "m.png")
    good = Sample(path=tmp_path / "g.png", label=0, defect="good")
    masks = peer_metrics.musc_masks([sample, good], 4, threshold=127)
    # the 4 x 4 block becomes 2 x 2 cells at half size, but the bilinear filter mixes in the outside at all
    # of them except the corner: only that one stays fully on
    expected = np.zeros((4, 4), dtype=np.int32)
    expected[0, 0] = 1
    np.testing.assert_array_equal(masks[0], expected)
    assert masks[1].sum() == 0
