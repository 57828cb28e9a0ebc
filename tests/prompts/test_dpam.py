"""DPAM's V-V attention against a hand computation, and the layers and shapes of the DPAM image encoder."""

from __future__ import annotations

import torch

from lineguard.backbones.vit import clip_embed
from lineguard.prompts.clip import load_clip
from lineguard.prompts.dpam import dpam_encode
from tests.prompts.tiny import TINY_CLIP


def test_vv_attention_on_one_layer_equals_a_hand_computation():
    config = {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "layers": 1}}
    torch.manual_seed(1)
    visual = load_clip("one layer", config=config, weights="random").model.visual
    images = torch.randn(2, 3, 64, 64)
    x, _ = clip_embed(visual, images)  # (2, T, 64) entering the one block
    block = visual.transformer.resblocks[0]
    h = block.ln_1(x)
    v = h @ block.attn.in_proj_weight[128:].T + block.attn.in_proj_bias[128:]  # the value projection
    heads = []
    for head in range(2):  # two heads of width 32
        vh = v[..., 32 * head:32 * (head + 1)]
        weights = torch.softmax(vh @ vh.transpose(1, 2) / 32**0.5, dim=-1)  # V Vᵀ in place of Q Kᵀ
        heads.append(weights @ vh)
    vv_path = x + block.attn.out_proj(torch.cat(heads, dim=-1))  # residual, no MLP
    expected = visual.ln_post(vv_path[:, 1:]) @ visual.proj  # (2, 16, 32)
    pooled, patches = dpam_encode(visual, images, layers=(0,), dpam_from=0)
    assert patches.shape == (2, 1, 32, 4, 4)
    torch.testing.assert_close(patches[:, 0].flatten(2).transpose(1, 2), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, visual(images), rtol=1e-5, atol=1e-5)  # the original path, untouched


def test_layers_shapes_and_the_global_embedding(tiny_clip):
    visual = tiny_clip.model.visual
    images = torch.randn(3, 3, 96, 64)  # another grid than the model's own: positions are resampled
    pooled, patches = dpam_encode(visual, images, layers=(0, 1), dpam_from=0)
    assert pooled.shape == (3, 32) and patches.shape == (3, 2, 32, 6, 4)
    no_dpam_pooled, no_dpam = dpam_encode(visual, images, layers=(0, 1), dpam_from=2)
    torch.testing.assert_close(pooled, no_dpam_pooled)  # DPAM never changes the global embedding
    assert not torch.allclose(patches[:, 1], no_dpam[:, 1])  # but it does change the patch tokens
    native = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(dpam_encode(visual, native, (1,), 0)[0], visual(native), rtol=1e-5, atol=1e-5)


def test_a_whole_clip_resolves_weights_like_a_backbone(tmp_path, monkeypatch):
    import pytest

    from lineguard.backbones import WeightsNotFoundError

    monkeypatch.setenv("LINEGUARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError) as caught:
        load_clip("clip-vit-l14-336")
    for expected in ("--weights PATH", str(tmp_path / "cache" / "clip-vit-l14-336.full.safetensors"),
                     "timm/vit_large_patch14_clip_336.openai", "whole open_clip `ViT-L-14-336`"):
        assert expected in str(caught.value)
    with pytest.raises(WeightsNotFoundError, match="clip_config has no published weights"):
        load_clip("tiny", config=TINY_CLIP)
