"""WinCLIP's windows and harmonic aggregation by hand."""

from __future__ import annotations

import pytest
import torch

from lineguard.backbones.vit import clip_embed
from lineguard.prompts.windows import (coverage, harmonic_aggregation, tower_embeddings, window_embeddings,
                                       window_patches)


def test_windows_of_a_3x3_grid():
    windows = window_patches((3, 3), 2)
    assert windows.tolist() == [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    covered = coverage(windows, 9)
    assert covered.sum(dim=1).tolist() == [1, 2, 1, 2, 4, 2, 1, 2, 1]
    with pytest.raises(ValueError, match="window size"):
        window_patches((3, 3), 4)


def test_harmonic_aggregation_by_hand():
    covered = coverage(window_patches((3, 3), 2), 9)
    scores = torch.tensor([[1.0, 0.5, 0.25, 0.5], [1.0, 0.0, 1.0, 1.0]])
    out = harmonic_aggregation(scores, covered)
    assert out[0, 0].item() == pytest.approx(1.0)  # only window 0
    assert out[0, 1].item() == pytest.approx(2 / (1 / 1.0 + 1 / 0.5))  # windows 0 and 1
    assert out[0, 4].item() == pytest.approx(4 / (1 + 2 + 4 + 2))  # all four
    assert out[1, 4].item() == 0 and out[1, 6].item() == pytest.approx(1.0)  # a zero window pins its patches


def test_a_window_over_the_whole_grid_is_the_image_embedding(tiny_clip):
    visual = tiny_clip.model.visual
    images = torch.randn(2, 3, 64, 64)
    tokens, grid = clip_embed(visual, images)
    image, patches = tower_embeddings(visual, tokens)
    whole = window_embeddings(visual, tokens, window_patches(tuple(grid), 4))  # one window, every patch
    torch.testing.assert_close(whole[:, 0], image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(image, visual(images), rtol=1e-5, atol=1e-5)
    assert window_embeddings(visual, tokens, window_patches(tuple(grid), 2)).shape == (2, 9, 32)
    assert patches.shape == (2, 16, 64)
