"""Shared fixtures: small synthetic datasets with planted defects (no external data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineguard.synthetic import make_batch, write_mvtec_layout

SIZE = 128  # small working resolution keeps CPU tests fast


def to_tensor(items) -> torch.Tensor:
    """SyntheticImage list -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.stack([it.image for it in items])).permute(0, 3, 1, 2).float() / 255


def make_parts():
    """12 good support images, then a test batch of 6 good and 6 defective parts (with masks)."""
    support = make_batch(12, 0, kind="part", size=SIZE, seed=10)
    test = make_batch(6, 6, kind="part", size=SIZE, seed=11)
    masks = torch.from_numpy(np.stack([it.mask for it in test]))
    labels = torch.tensor([int(it.defect != "good") for it in test])
    return to_tensor(support), to_tensor(test), labels, masks


@pytest.fixture(scope="session")
def parts():
    return make_parts()


@pytest.fixture(scope="session")
def mvtec_folder(tmp_path_factory):
    """A small synthetic dataset in the MVTec AD layout."""
    return write_mvtec_layout(tmp_path_factory.mktemp("data") / "part", size=SIZE, n_train=8, n_test_good=4,
                              n_test_defective=4, seed=3)
