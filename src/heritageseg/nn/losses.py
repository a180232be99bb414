"""Segmentation losses: weighted Dice (the reference's), cross-entropy and focal, per head.

Every loss ignores label 255 (Background: outside the artwork) and is computed in float32
even under bf16/fp16 autocast, where soft-max sums over 16 classes and millions of pixels
lose too much precision. A batch with no valid pixel gives 0 with a zero gradient, never NaN,
so one all-background crop cannot poison a training run.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from heritageseg.core.classes import BACKGROUND_ID, BINARY_LUT, COARSE_LUT
from heritageseg.core.config import LossConfig
from heritageseg.core.errors import ConfigError

_TINY = 1e-12  # keeps 0 / 0 at 0 when a batch has no valid pixel


class DiceLoss(nn.Module):
    """Multiclass soft Dice with per-class weights, over the valid pixels of the whole batch.

    Per class c: dice_c = (2 Σ p_c t_c + smooth) / (Σ p_c + Σ t_c + smooth), summed over the
    batch's valid pixels; loss = Σ_c w_c (1 - dice_c) / Σ_c w_c over the classes present in the
    batch's target. Absent classes are left out: their Dice is about smooth / (Σ p_c + smooth)
    and would only push down the probability of classes the batch cannot teach, while
    diluting the rare damage classes that are present. Ignored pixels count neither in the
    target nor in the probabilities.
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        smooth: float = 1.0,
        ignore_index: int = BACKGROUND_ID,
    ):
        super().__init__()
        self.register_buffer("weight", _as_weight(weight), persistent=False)
        self.smooth = smooth
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = (target != self.ignore_index).unsqueeze(1)
        probs = logits.float().softmax(dim=1) * valid
        classes = logits.shape[1]
        onehot = F.one_hot(target.masked_fill(~valid[:, 0], 0), classes).permute(0, 3, 1, 2)
        onehot = onehot * valid
        dims = (0, 2, 3)
        intersection = (probs * onehot).sum(dims)
        support = onehot.sum(dims)
        dice = (2 * intersection + self.smooth) / (probs.sum(dims) + support + self.smooth)
        weight = _class_weight(self.weight, logits) * (support > 0)
        return (weight * (1 - dice)).sum() / weight.sum().clamp_min(_TINY)


class CrossEntropyLoss(nn.Module):
    """Class-weighted cross-entropy ignoring 255: torch's weighted mean, but 0 (not NaN) when
    every pixel is ignored."""

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = BACKGROUND_ID):
        super().__init__()
        self.register_buffer("weight", _as_weight(weight), persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else _class_weight(self.weight, logits)
        per_pixel = F.cross_entropy(
            logits.float(), target, weight, reduction="none", ignore_index=self.ignore_index
        )
        return _weighted_mean(per_pixel, target, weight, self.ignore_index)


class FocalLoss(nn.Module):
    """Multiclass focal loss, -α_t (1 - p_t)^γ log p_t, with the class weights as α.

    Normalised like weighted cross-entropy (by Σ α_t over valid pixels), so gamma = 0 gives
    exactly CrossEntropyLoss and the two terms' weights in params.yaml are comparable.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        weight: torch.Tensor | None = None,
        ignore_index: int = BACKGROUND_ID,
    ):
        super().__init__()
        self.register_buffer("weight", _as_weight(weight), persistent=False)
        self.gamma = gamma
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        log_probs = logits.float().log_softmax(dim=1)
        log_pt = log_probs.gather(1, target.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
        focus = (1 - log_pt.exp()).clamp_min(0) ** self.gamma
        per_pixel = -focus * log_pt * valid
        weight = None if self.weight is None else _class_weight(self.weight, logits)
        if weight is not None:
            per_pixel = per_pixel * weight[target.masked_fill(~valid, 0)]
        return _weighted_mean(per_pixel, target, weight, self.ignore_index)


class CombinedLoss(nn.Module):
    """Σ weight * term over the loss terms of one head's logits, in float32."""

    def __init__(self, terms: list[tuple[float, nn.Module]]):
        super().__init__()
        self.weights = [weight for weight, _ in terms]
        self.terms = nn.ModuleList(term for _, term in terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor):
            raise TypeError(
                f"expected a logits tensor, got {type(logits).__name__}: a hierarchical "
                "model needs build_loss(..., head='hierarchical')"
            )
        with torch.autocast(logits.device.type, enabled=False):
            logits, target = logits.float(), target.long()
            terms = zip(self.weights, self.terms, strict=True)
            return sum(weight * term(logits, target) for weight, term in terms)


class HierarchicalLoss(nn.Module):
    """Weighted sum of one CombinedLoss per head; targets mapped to coarse and binary labels."""

    def __init__(
        self,
        heads: dict[str, CombinedLoss],
        head_weights: tuple[float, float, float],
    ):
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.head_weights = dict(zip(("binary", "coarse", "fine"), head_weights, strict=True))
        self.register_buffer("coarse_lut", torch.as_tensor(COARSE_LUT).long(), persistent=False)
        self.register_buffer("binary_lut", torch.as_tensor(BINARY_LUT).long(), persistent=False)

    def head_losses(
        self, output: Mapping[str, torch.Tensor], target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Each head's unweighted loss, for logging."""
        if not isinstance(output, Mapping):
            raise TypeError(
                f"expected the dict of a hierarchical model, got {type(output).__name__}: "
                "a fine-head model needs build_loss(..., head='fine')"
            )
        target = target.long()
        targets = {
            "binary": self.binary_lut.to(target.device)[target],
            "coarse": self.coarse_lut.to(target.device)[target],
            "fine": target,
        }
        return {name: loss(output[name], targets[name]) for name, loss in self.heads.items()}

    def forward(self, output: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        losses = self.head_losses(output, target)
        return sum(self.head_weights[name] * loss for name, loss in losses.items())


def build_loss(
    cfg: LossConfig, class_weights: torch.Tensor | None = None, head: str = "fine"
) -> nn.Module:
    """The training loss: `module(output, target)` -> float32 scalar.

    `output` is the logits tensor (head "fine") or the dict of a hierarchical model; `target`
    is (B, H, W) int64 with 255 ignored. `class_weights` (one per fine class) weight Dice, CE
    and focal of the fine head; the binary and coarse heads are unweighted.
    """
    if head == "fine":  # cfg's weights are checked where LossConfig declares them
        return _combined(cfg, class_weights)
    if head == "hierarchical":
        heads = {
            "binary": _combined(cfg, None),
            "coarse": _combined(cfg, None),
            "fine": _combined(cfg, class_weights),
        }
        return HierarchicalLoss(heads, cfg.head_weights)
    raise ConfigError(f"unknown head {head!r}; valid heads: fine, hierarchical")


def _combined(cfg: LossConfig, weight: torch.Tensor | None) -> CombinedLoss:
    """cfg.dice * Dice + cfg.ce * CE + cfg.focal * Focal, leaving out terms weighted 0."""
    terms = [
        (cfg.dice, DiceLoss(weight)),
        (cfg.ce, CrossEntropyLoss(weight)),
        (cfg.focal, FocalLoss(cfg.focal_gamma, weight)),
    ]
    return CombinedLoss([(w, term) for w, term in terms if w != 0])


def _as_weight(weight: torch.Tensor | None) -> torch.Tensor | None:
    if weight is None:
        return None
    weight = torch.as_tensor(weight, dtype=torch.float32)
    if weight.ndim != 1 or bool((weight < 0).any()):
        raise ConfigError(f"class weights: need one non-negative value per class, got {weight}")
    return weight


def _class_weight(weight: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """The weights as float32 on the logits' device (all ones if None), one per channel."""
    classes = logits.shape[1]
    if weight is None:
        return torch.ones(classes, device=logits.device)
    if len(weight) != classes:
        raise ValueError(f"{len(weight)} class weights for logits with {classes} classes")
    return weight.to(logits.device, torch.float32)


def _weighted_mean(
    per_pixel: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
) -> torch.Tensor:
    """Σ loss / Σ w_target over valid pixels (torch's weighted mean), 0 when none is valid."""
    valid = target != ignore_index
    if weight is None:
        norm = valid.sum().float()
    else:
        norm = (weight[target.masked_fill(~valid, 0)] * valid).sum()
    return per_pixel.sum() / norm.clamp_min(_TINY)
