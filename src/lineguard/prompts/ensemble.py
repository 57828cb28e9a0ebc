"""WinCLIP's compositional prompt ensemble: state words × templates, one embedding per class.

CLIP never learned the words "normal" and "anomalous" for industrial parts, so a single prompt is a poor
probe. WinCLIP (Jeong et al., CVPR 2023) composes prompts from state words that describe a normal or a
damaged object ("flawless {}", "{} with defect") and templates that describe photos ("a close-up photo of
the {}."): every state in every template, encoded by the text tower and averaged per class. The average is
of the raw text embeddings, as anomalib's WinCLIP computes it (the reference lineguard checks against).

Letters: P prompts of a class, E joint width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lineguard.prompts.clip import Clip

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")
ABNORMAL_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (  # 22; anomalib lacks "a cropped photo of a {}." and lists "a jpeg corrupted photo of the {}." twice
    "a cropped photo of a {}.",
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of a {}.",
    "a dark photo of the {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for anomaly detection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
)


def compose(states: Sequence[str], templates: Sequence[str], class_name: str) -> list[str]:
    """Every state (with the class name) in every template: len(states) · len(templates) prompts."""
    return [template.format(state.format(class_name)) for state in states for template in templates]


@torch.no_grad()
def class_embeddings(clip: Clip, class_name: str, templates: Sequence[str] = TEMPLATES) -> Tensor:
    """(2, E): the mean text embedding of the normal prompts, then of the abnormal ones."""
    return torch.stack([clip.encode_texts(compose(states, templates, class_name)).mean(dim=0)
                        for states in (NORMAL_STATES, ABNORMAL_STATES)])
