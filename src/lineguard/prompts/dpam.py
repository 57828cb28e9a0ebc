"""AnomalyCLIP's image side: CLIP's image tower with diagonally prominent attention (DPAM).

CLIP's query-key attention lets every patch token gather the image's global content, which is what a
class token needs but blurs where a defect is. DPAM (Zhou et al., 2024) adds, from block ``dpam_from`` on,
a second path whose attention compares *values* with values (V-V self-attention): a token attends mostly to
itself and to tokens that look like it, so the attention matrix is diagonally prominent and patch tokens keep
their local content. The original path runs unchanged (the global image embedding comes from it); the V-V
path takes, in each of those blocks, the attention of the original path's normalised input with queries and
keys replaced by values, adds it to its own residual and skips the MLP. Patch tokens are read from the V-V
path at the chosen blocks, pass the tower's final LayerNorm and projection into the joint image-text space.
No weight changes: DPAM reuses every block's attention weights.

(AnomalyCLIP's released code projects the class token without the final LayerNorm; here the global
embedding is CLIP's own, LayerNorm included.)

Letters: B images, T = 1 + N tokens (class token first), C tower width, E joint width, n heads,
d = C / n, h × w = N patch grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lineguard.backbones.vit import clip_embed


def vv_attention(attention: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """(B, T, C) -> (B, T, C): multi-head self-attention of the values with themselves,
    softmax(V Vᵀ / √d) V per head, then the block's output projection."""
    batch, tokens, width = x.shape
    heads = attention.num_heads
    w_v = attention.in_proj_weight[2 * width:]  # the value rows of the packed q, k, v projection
    b_v = attention.in_proj_bias[2 * width:] if attention.in_proj_bias is not None else None
    v = F.linear(x, w_v, b_v).view(batch, tokens, heads, width // heads).transpose(1, 2)  # -> (B, n, T, d)
    out = F.scaled_dot_product_attention(v, v, v)  # softmax(v vᵀ / √d) v -> (B, n, T, d)
    return attention.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


def dpam_block(block: nn.Module, x_vv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """One open_clip residual block on both paths: (V-V path, original path) -> the same, each (B, T, C)."""
    normed = block.ln_1(x)
    x_vv = x_vv + block.ls_1(vv_attention(block.attn, normed))
    x = x + block.ls_1(block.attention(normed))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x_vv, x


def dpam_encode(visual: nn.Module, images: Tensor, layers: tuple[int, ...],
                dpam_from: int) -> tuple[Tensor, Tensor]:
    """Normalised (B, 3, H, W) -> global embedding (B, E) and patch embeddings (B, L, E, h, w) of ``layers``
    (block indices from 0), DPAM in blocks ``dpam_from`` … last. H and W: multiples of the patch size."""
    x, grid = clip_embed(visual, images)  # -> (B, T, C)
    x_vv = None
    taken = []
    for i, block in enumerate(visual.transformer.resblocks):
        if i < dpam_from:
            x = block(x)
        else:
            x_vv, x = dpam_block(block, x if x_vv is None else x_vv, x)
        if i in layers:
            taken.append(x if x_vv is None else x_vv)
    pooled = visual.ln_post(x[:, 0]) @ visual.proj  # -> (B, E)
    patches = [visual.ln_post(t[:, 1:]) @ visual.proj for t in taken]  # [(B, N, E)]
    grids = [p.transpose(1, 2).reshape(len(p), -1, *grid) for p in patches]  # [(B, E, h, w)]
    return pooled, torch.stack(grids, dim=1)
