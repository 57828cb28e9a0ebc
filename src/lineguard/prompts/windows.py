"""WinCLIP's multi-scale windows: CLIP embeddings of small image regions, aggregated back onto patches.

A CLIP image embedding describes the whole image; a small defect hardly moves it. WinCLIP (Jeong et al.,
2023) embeds windows instead: for every k × k window of the patch grid (stride 1) the class token and that
window's patch tokens (positional embeddings already added, so each keeps its place) run through the image
tower alone, giving one embedding per window and scale. A patch's score at a scale is the harmonic mean of
the scores of the windows that cover it: one low (normal) window is enough to keep a patch low, so a score
stays high only where every window around it looks anomalous.

Letters: B images, T tokens, C tower width, E joint width, h × w patch grid, N = h·w patches,
W windows of one scale, k window side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lineguard.errors import ParameterError


def window_patches(grid: tuple[int, int], size: int) -> Tensor:
    """(W, k²) patch indices (row-major on the grid) of every size × size window, stride 1."""
    height, width = grid
    if size < 1 or size > min(grid):
        raise ParameterError(f"window size must be between 1 and the patch grid's side {min(grid)}, got {size}")
    index = torch.arange(height * width, dtype=torch.float32).view(1, 1, height, width)
    return F.unfold(index, kernel_size=size).long()[0].T  # (k², W) -> (W, k²)


def coverage(windows: Tensor, patches: int) -> Tensor:
    """(W, k²) window patches -> (N, W) bool: patch n lies in window w."""
    return (windows[None] == torch.arange(patches, device=windows.device)[:, None, None]).any(dim=-1)


def harmonic_aggregation(window_scores: Tensor, covered: Tensor) -> Tensor:
    """(B, W) window scores, (N, W) coverage -> (B, N): per patch, the harmonic mean of its windows' scores
    (0 where one of them is 0)."""
    inverse = torch.where(covered, 1 / window_scores[:, None, :], 0.0).sum(dim=-1)  # (B, N)
    return (covered.sum(dim=1) / inverse).nan_to_num(posinf=0.0)


def tower_embeddings(visual: nn.Module, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Tokens after ``ln_pre`` (B, T, C), class token first -> the tower's projected class embedding
    (B, E) and its unprojected patch tokens (B, T − 1, C), both after ``ln_post``."""
    x = visual.ln_post(visual.transformer(tokens))
    return x[:, 0] @ visual.proj, x[:, 1:]


def window_embeddings(visual: nn.Module, tokens: Tensor, windows: Tensor) -> Tensor:
    """(B, T, C) tokens after ``ln_pre`` (``ln_pre`` acts token by token, so it commutes with picking
    tokens), (W, k²) windows -> (B, W, E): each window's class token and patches through the tower alone."""
    batch, _, width = tokens.shape
    picked = torch.cat([torch.zeros_like(windows[:, :1]), windows + 1], dim=1)  # (W, 1 + k²): class first
    sequences = tokens[:, picked].reshape(batch * len(windows), -1, width)  # -> (B·W, 1 + k², C)
    embedded, _ = tower_embeddings(visual, sequences)  # -> (B·W, E)
    return embedded.view(batch, len(windows), -1)
