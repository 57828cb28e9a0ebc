"""Session fixtures of the prompt tests: the tiny CLIP and labelled synthetic textures."""

from __future__ import annotations

import pytest
import torch

from lineguard.prompts.clip import load_clip
from lineguard.prompts.training import LabelledImages
from tests.prompts.tiny import TINY_CLIP, labelled


@pytest.fixture(scope="session")
def tiny_clip():
    torch.manual_seed(0)
    return load_clip("tiny", config=TINY_CLIP, weights="random")


@pytest.fixture(scope="session")
def textures() -> LabelledImages:
    return labelled("texture", 128, seed=5)
