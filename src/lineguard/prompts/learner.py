"""AnomalyCLIP's object-agnostic text prompts with textual-space refinement, on open_clip's text tower.

Two prompts, the same for every object: normal "[V₁] … [V_E] object." and abnormal "[W₁] … [W_E] damaged
object.", whose E word embeddings are learned (E = 12). They learn what normal and damaged look like
whatever the object is, since the object's name never appears. Textual-space refinement (Zhou et al., 2024)
goes deeper: before each of the text encoder's blocks 1 … ``depth`` − 1, the first ``length`` tokens after
the start token are replaced by learned embeddings of that block (depth 9, length 4), so the prompts are
refined inside the encoder as well. The frozen text tower is passed in, never owned, so the learner's state
is the learned tokens only (a few hundred kB).

Letters: T texts (2), L context length, W text width, E joint width, K = depth − 1 refined blocks,
t = length.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lineguard.errors import ParameterError
from lineguard.prompts.clip import Clip

INIT_STD = 0.02  # AnomalyCLIP's initialisation of learnable token embeddings
OBJECT_PROMPTS = ("object.", "damaged object.")  # what follows the learned words: normal, abnormal


def text_projection(model: nn.Module, pooled: Tensor) -> Tensor:
    """(T, W) -> (T, E) through the text tower's projection (a matrix or a linear layer)."""
    projection = model.text_projection
    return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection


def encode_embedded_text(model: nn.Module, embeddings: Tensor, ids: Tensor, deep: Tensor) -> Tensor:
    """open_clip's ``encode_text`` from token embeddings (T, L, W), with the deep tokens (K, t, W) put in
    place of tokens 1 … t before blocks 1 … K. ``ids`` (T, L) locate the end token -> (T, E) embeddings."""
    count, length = len(embeddings), deep.shape[1]
    x = embeddings + model.positional_embedding.to(embeddings.dtype)
    for i, block in enumerate(model.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:, :1], deep[i - 1].expand(count, -1, -1), x[:, 1 + length:]], dim=1)
        x = block(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return text_projection(model, x[torch.arange(count), ids.argmax(dim=-1)])  # the end token has the top id


class ObjectAgnosticPrompts(nn.Module):
    """Learned words of the normal and abnormal prompts, (E, W) each, and deep tokens (K, t, W)."""

    def __init__(self, width: int, words: int = 12, depth: int = 9, length: int = 4):
        super().__init__()
        if not 1 <= length <= words:
            raise ParameterError(f"deep_length must be between 1 and n_ctx ({words}), got {length}: the deep tokens "
                                 "replace learned words, never the object's")
        self.normal = nn.Parameter(torch.randn(words, width) * INIT_STD)
        self.abnormal = nn.Parameter(torch.randn(words, width) * INIT_STD)
        self.deep = nn.Parameter(torch.randn(max(depth - 1, 0), length, width) * INIT_STD)

    def forward(self, clip: Clip) -> Tensor:
        """-> (2, E) text embeddings of the normal and the abnormal prompt."""
        words = len(self.normal)
        placeholders = " ".join(["X"] * words)
        ids = clip.tokenize([f"{placeholders} {rest}" for rest in OBJECT_PROMPTS])  # (2, L)
        fixed = clip.model.token_embedding(ids)  # (2, L, W): start token, placeholders, the rest
        learned = torch.stack([self.normal, self.abnormal]).to(fixed.dtype)  # (2, E, W)
        embeddings = torch.cat([fixed[:, :1], learned, fixed[:, 1 + words:]], dim=1)
        return encode_embedded_text(clip.model, embeddings, ids, self.deep)
