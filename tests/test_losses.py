"""Losses against hand computation: Dice, CE, focal, their combination and the three heads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heritageseg.core.classes import BACKGROUND_ID, to_binary, to_coarse
from heritageseg.core.config import LossConfig
from heritageseg.core.errors import ConfigError
from heritageseg.nn.losses import CrossEntropyLoss, DiceLoss, FocalLoss, build_loss

BIG = 20.0  # softmax of ±BIG is 0 or 1 in float32


def _logits(probability_of_1: list[float]) -> torch.Tensor:
    """(1, 2, 1, N) two-class logits whose softmax gives class 1 the probabilities asked."""
    p = torch.tensor(probability_of_1, dtype=torch.float64)
    ones = torch.log(p / (1 - p)).clamp(-BIG, BIG)
    return torch.stack([torch.zeros_like(ones), ones]).float()[None, :, None, :]


def _target(labels: list[int]) -> torch.Tensor:
    return torch.tensor(labels)[None, None, :]


def _random_case(classes: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 8, 8, generator=generator)
    target = torch.randint(0, classes, (2, 8, 8), generator=generator)
    target[0, :3] = BACKGROUND_ID
    return logits, target


def test_dice_of_hard_predictions_is_the_formula() -> None:
    # target 0 0 1 1, prediction 0 1 1 1: class 0 dice (2*1+1)/(1+2+1), class 1 (2*2+1)/(3+2+1)
    logits, target = _logits([0, 1, 1, 1]), _target([0, 0, 1, 1])
    expected = ((1 - 3 / 4) + (1 - 5 / 6)) / 2
    assert DiceLoss()(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_dice_of_soft_predictions_is_the_formula() -> None:
    # p(class 1) = 0.75 everywhere: class 0 sums p 1, t 2, pt 0.5; class 1 sums p 3, t 2, pt 1.5
    logits, target = _logits([0.75] * 4), _target([0, 0, 1, 1])
    dice_0 = (2 * 0.5 + 1) / (1 + 2 + 1)
    dice_1 = (2 * 1.5 + 1) / (3 + 2 + 1)
    expected = ((1 - dice_0) + (1 - dice_1)) / 2
    assert DiceLoss()(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_dice_class_weights_and_absent_classes() -> None:
    logits, target = _logits([0, 1, 1, 1]), _target([0, 0, 1, 1])
    weighted = DiceLoss(torch.tensor([1.0, 3.0]))(logits, target)
    assert weighted.item() == pytest.approx((1 * (1 - 3 / 4) + 3 * (1 - 5 / 6)) / 4, abs=1e-6)
    only_zero = _target([0, 0, 0, 0])  # class 1 absent: its weight must not matter
    light = DiceLoss(torch.tensor([1.0, 0.1]))(logits, only_zero)
    heavy = DiceLoss(torch.tensor([1.0, 10.0]))(logits, only_zero)
    # class 0 alone: sums p 1, t 4, pt 1 -> dice (2 + 1) / (1 + 4 + 1)
    assert light.item() == pytest.approx(heavy.item()) == pytest.approx(1 - 3 / 6, abs=1e-6)


@pytest.mark.parametrize(
    "loss_fn",
    [
        DiceLoss(torch.linspace(0.5, 2, 16)),
        CrossEntropyLoss(torch.linspace(0.5, 2, 16)),
        FocalLoss(2.0, torch.linspace(0.5, 2, 16)),
        build_loss(LossConfig(dice=1.0, ce=0.5, focal=0.5), torch.linspace(0.5, 2, 16)),
    ],
    ids=["dice", "ce", "focal", "combined"],
)
def test_ignored_pixels_change_nothing(loss_fn: torch.nn.Module) -> None:
    logits, target = _random_case()
    ignored = (target == BACKGROUND_ID).unsqueeze(1).expand_as(logits)
    changed = torch.where(ignored, 30 * torch.randn_like(logits), logits).requires_grad_(True)
    assert loss_fn(changed, target).item() == pytest.approx(loss_fn(logits, target).item())
    loss_fn(changed, target).backward()
    assert changed.grad[ignored].abs().max() == 0


@pytest.mark.parametrize("head", ["fine", "hierarchical"])
def test_all_ignored_batch_gives_zero_and_a_finite_grad(head: str) -> None:
    cfg = LossConfig(dice=1.0, ce=1.0, focal=1.0)
    loss_fn = build_loss(cfg, torch.ones(16), head)
    logits = torch.randn(2, 16, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), BACKGROUND_ID)
    output = _heads(logits) if head == "hierarchical" else logits
    loss = loss_fn(output, target)
    loss.backward()
    assert loss.item() == 0
    assert torch.isfinite(logits.grad).all()


def _manual_focal(logits, target, weight, gamma) -> torch.Tensor:
    valid = target != BACKGROUND_ID
    probs = logits.softmax(1).permute(0, 2, 3, 1)[valid]  # (N, C)
    labels = target[valid]
    pt = probs[torch.arange(len(labels)), labels]
    alpha = weight[labels]
    return (-alpha * (1 - pt) ** gamma * pt.log()).sum() / alpha.sum()


def test_ce_and_focal_combine_with_their_weights() -> None:
    logits, target = _random_case()
    weight = torch.linspace(0.5, 2, 16)
    cfg = LossConfig(dice=0.5, ce=2.0, focal=0.3, focal_gamma=1.5)
    expected = (
        0.5 * DiceLoss(weight)(logits, target)
        + 2.0 * F.cross_entropy(logits, target, weight, ignore_index=BACKGROUND_ID)
        + 0.3 * _manual_focal(logits, target, weight, 1.5)
    )
    assert build_loss(cfg, weight)(logits, target).item() == pytest.approx(expected.item())


def test_focal_is_weighted_ce_at_gamma_zero_and_zero_terms_are_skipped() -> None:
    logits, target = _random_case()
    weight = torch.linspace(0.5, 2, 16)
    ce = F.cross_entropy(logits, target, weight, ignore_index=BACKGROUND_ID)
    assert FocalLoss(0.0, weight)(logits, target).item() == pytest.approx(ce.item())
    dice_only = build_loss(LossConfig(dice=1.0, ce=0.0, focal=0.0), weight)
    assert len(dice_only.terms) == 1
    assert dice_only(logits, target).item() == pytest.approx(
        DiceLoss(weight)(logits, target).item()
    )


def _heads(fine: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    b, _, h, w = fine.shape
    return {
        "binary": torch.randn(b, 2, h, w, generator=generator),
        "coarse": torch.randn(b, 4, h, w, generator=generator),
        "fine": fine,
    }


def test_hierarchical_loss_is_the_weighted_sum_of_the_heads() -> None:
    logits, target = _random_case()
    output = _heads(logits)
    weight = torch.linspace(0.5, 2, 16)
    cfg = LossConfig(dice=1.0, ce=0.5, head_weights=(0.2, 0.3, 0.5))
    targets = {
        "binary": torch.from_numpy(to_binary(target.numpy().astype(np.uint8))).long(),
        "coarse": torch.from_numpy(to_coarse(target.numpy().astype(np.uint8))).long(),
        "fine": target,
    }
    assert (targets["coarse"] == BACKGROUND_ID).sum() == (target == BACKGROUND_ID).sum()

    def head_loss(name: str, w: torch.Tensor | None) -> float:
        x, t = output[name], targets[name]
        ce = F.cross_entropy(x, t, w, ignore_index=BACKGROUND_ID)
        return (DiceLoss(w)(x, t) + 0.5 * ce).item()

    expected = {
        "binary": head_loss("binary", None),
        "coarse": head_loss("coarse", None),
        "fine": head_loss("fine", weight),
    }
    loss_fn = build_loss(cfg, weight, "hierarchical")
    got = {name: loss.item() for name, loss in loss_fn.head_losses(output, target).items()}
    assert got == pytest.approx(expected)
    total = 0.2 * expected["binary"] + 0.3 * expected["coarse"] + 0.5 * expected["fine"]
    assert loss_fn(output, target).item() == pytest.approx(total)


def test_bf16_logits_give_a_float32_loss_close_to_fp32() -> None:
    logits, target = _random_case()
    loss_fn = build_loss(LossConfig(dice=1.0, ce=1.0, focal=1.0), torch.linspace(0.5, 2, 16))
    reference = loss_fn(logits, target)
    low = logits.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(low, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-2)
    assert loss.item() == pytest.approx(loss_fn(low.float(), target).item(), rel=1e-6)
    loss.backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


def test_wrong_settings_and_outputs_are_errors() -> None:
    with pytest.raises(ConfigError, match="fine, hierarchical"):
        build_loss(LossConfig(), head="multi")
    with pytest.raises(ConfigError, match="at least one"):
        build_loss(LossConfig(dice=0.0, ce=0.0))
    logits, target = _random_case()
    with pytest.raises(TypeError, match="hierarchical"):
        build_loss(LossConfig())(_heads(logits), target)
    with pytest.raises(TypeError, match="fine"):
        build_loss(LossConfig(), head="hierarchical")(logits, target)


def test_losses_are_finite_for_extreme_logits() -> None:
    logits, target = _random_case()
    loss_fn = build_loss(LossConfig(dice=1.0, ce=1.0, focal=1.0, focal_gamma=0.5))
    loss = loss_fn(logits * 1e4, target)
    assert math.isfinite(loss.item())
