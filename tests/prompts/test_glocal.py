"""The glocal loss and the zero-shot scores against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from lineguard.prompts.glocal import class_logits, dice_loss, focal_loss, glocal_loss, zero_shot_scores


def test_glocal_loss_on_a_2x2_case_by_hand():
    image_logits = torch.tensor([[0.0, math.log(3)]])  # abnormal probability 0.75
    abnormal = torch.tensor([[0.9, 0.2], [0.5, 0.1]])
    patch_probs = torch.stack([1 - abnormal, abnormal])[None, None]  # (B=1, L=1, 2, 2, 2)
    mask = torch.tensor([[[True, False], [False, False]]])
    # probabilities of each pixel's true class: 0.9 (defect), 0.8, 0.5, 0.9 (normal)
    focal = -(0.1**2 * math.log(0.9) + 0.2**2 * math.log(0.8) + 0.5**2 * math.log(0.5) + 0.1**2 * math.log(0.9)) / 4
    dice_abnormal = 1 - (2 * 0.9 + 1) / (1.7 + 1 + 1)  # Σ p·mask = 0.9, Σ p = 1.7, Σ mask = 1
    dice_normal = 1 - (2 * 2.2 + 1) / (2.3 + 3 + 1)  # normal 0.1, 0.8, 0.5, 0.9 against 0, 1, 1, 1
    expected = -math.log(0.75) + 2 * (focal + dice_abnormal + dice_normal)
    loss = glocal_loss(image_logits, torch.tensor([1]), patch_probs, mask, local_weight=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_layers_add_up_and_a_perfect_map_costs_little():
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[1, 2:5, 2:5] = True
    perfect = torch.stack([~mask, mask], dim=1).float()[:, None]  # (2, 1, 2, 8, 8)
    wrong = perfect.flip(2)
    assert focal_loss(perfect[:, 0], mask) < 1e-6
    assert dice_loss(perfect[:, 0, 1], mask) < 0.1 < dice_loss(wrong[:, 0, 1], mask)
    logits, labels = torch.zeros(2, 2), torch.tensor([0, 1])
    two_layers = glocal_loss(logits, labels, torch.cat([perfect, wrong], dim=1), mask)
    parts = [glocal_loss(logits, labels, p, mask) - math.log(2) for p in (perfect, wrong)]
    assert two_layers.item() == pytest.approx(math.log(2) + sum(parts).item(), rel=1e-6)


def test_class_logits_are_cosines_over_the_temperature():
    features = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    expected = torch.tensor([[1.0, 0.0], [2**-0.5, 2**-0.5]]) / 0.07
    torch.testing.assert_close(class_logits(features, embeddings), expected)


def test_image_score_is_the_mean_of_global_probability_and_map_maximum():
    patch = torch.zeros(1, 2, 4, 4)
    patch[0, 0, 1, 1], patch[0, 1, 1, 1] = 0.8, 0.4  # two layers, averaged: 0.6 at one patch
    scores, maps = zero_shot_scores(torch.tensor([0.2]), patch, (4, 4), sigma=0)
    assert maps[0, 1, 1].item() == pytest.approx(0.6)
    assert scores.item() == pytest.approx((0.2 + 0.6) / 2)
