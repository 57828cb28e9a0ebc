"""AnomalyCLIP's prompt learner on the text tower, and WinCLIP's prompt ensemble."""

from __future__ import annotations

import pytest
import torch

from lineguard.prompts.ensemble import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES, class_embeddings, compose
from lineguard.prompts.learner import ObjectAgnosticPrompts


def test_learned_words_set_to_real_words_give_clip_s_own_text_embedding(tiny_clip):
    ids = tiny_clip.tokenize(["a shiny metal"])[0]
    assert int((ids > 0).sum()) == 5  # start, three words, end
    learner = ObjectAgnosticPrompts(64, words=3, depth=1, length=1)
    with torch.no_grad():
        words = tiny_clip.model.token_embedding(ids[1:4])
        learner.normal.copy_(words)
        learner.abnormal.copy_(words)
    expected = tiny_clip.encode_texts(["a shiny metal object.", "a shiny metal damaged object."])
    torch.testing.assert_close(learner(tiny_clip), expected, rtol=1e-5, atol=1e-5)


def test_every_learned_tensor_reaches_the_embeddings(tiny_clip):
    learner = ObjectAgnosticPrompts(64, words=12, depth=2, length=4)
    assert learner(tiny_clip).shape == (2, 32)
    learner(tiny_clip).pow(2).sum().backward()
    for name, tensor in learner.named_parameters():
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name
    assert not any(p.requires_grad for p in tiny_clip.model.parameters())  # the tower stays frozen


def test_deep_tokens_never_replace_the_object_words():
    with pytest.raises(ValueError, match="deep_length"):
        ObjectAgnosticPrompts(64, words=4, depth=9, length=5)


def test_prompt_ensemble_composes_every_state_with_every_template(tiny_clip):
    prompts = compose(ABNORMAL_STATES, TEMPLATES, "bottle")
    assert len(prompts) == 4 * 22 and "a close-up photo of the bottle with defect." in prompts
    embeddings = class_embeddings(tiny_clip, "bottle", TEMPLATES[:2])
    normal = tiny_clip.encode_texts(compose(NORMAL_STATES, TEMPLATES[:2], "bottle")).mean(dim=0)
    assert embeddings.shape == (2, 32)
    torch.testing.assert_close(embeddings[0], normal)
