"""WinCLIP and WinCLIP+ on a tiny random CLIP (the check against anomalib: benchmarks/peers)."""

from __future__ import annotations

import pytest
import torch

import lineguard
from lineguard.methods import NotFittedError
from lineguard.prompts.glocal import class_logits
from tests.prompts.tiny import tiny


def test_zero_shot_combines_image_and_window_scores_harmonically():
    detector = lineguard.create("winclip", **tiny(scales=[4]))  # one window: the whole 4 × 4 grid
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    image, _, windows = detector.encode(images)
    texts = detector.text_embeddings()
    s_image = class_logits(image, texts).softmax(-1)[:, 1]
    s_window = class_logits(windows[0][:, 0], texts).softmax(-1)[:, 1]
    result = detector.predict(images)
    torch.testing.assert_close(result.scores, s_image)
    expected_map = 2 / (1 / s_image + 1 / s_window)  # every patch: image and its one window
    torch.testing.assert_close(result.maps, expected_map[:, None, None].expand(2, 64, 64))


def test_few_shot_finds_nothing_in_its_own_references():
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    zero = lineguard.create("winclip", **tiny()).predict(images)
    with pytest.raises(NotFittedError):
        lineguard.create("winclip+", **tiny()).predict(images)
    few = lineguard.create("winclip+", **tiny()).fit(images).predict(images)
    # every patch and window of a reference is at distance 0 from itself: only the zero-shot half remains
    torch.testing.assert_close(few.maps, zero.maps / 2)
    torch.testing.assert_close(few.scores, zero.scores / 2)
    other = lineguard.create("winclip+", **tiny()).fit(images[:1]).predict(images[1:])
    assert torch.all(other.maps.flatten(1).amax(1) > zero.maps[1:].flatten(1).amax(1) / 2)
