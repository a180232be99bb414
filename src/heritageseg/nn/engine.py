"""One training epoch and one evaluation pass: tensors in, numbers out, no file I/O.

Mixed precision: fp16 with a GradScaler on CUDA, bf16 autocast on CPU (no scaler needed:
bf16 keeps fp32's exponent range). Under torch.distributed every rank runs the same code on
its shard; losses and the confusion matrix are summed across ranks before anyone reads them.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from heritageseg.core.errors import HeritagesegError
from heritageseg.nn.metrics import ConfusionMatrix, all_reduce_sum
from heritageseg.nn.models import fine_logits

CPU = torch.device("cpu")


class NonFiniteLossError(HeritagesegError):
    """Training produced NaN or inf; the last good checkpoint stays as it was."""


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast dtype (None = fp32) and whether to scale grads."""

    device_type: str
    dtype: torch.dtype | None
    scale_grads: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """`auto` is fp16 + GradScaler on CUDA and bf16 autocast on a CPU that has bf16 units."""
    if setting == "auto" and device.type == "cuda":
        setting = "fp16"
    elif setting == "auto":
        setting = "bf16" if _cpu_has_bf16() else "fp32"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    dtype = dtypes[setting]
    if dtype is torch.float16 and device.type != "cuda":
        raise HeritagesegError("precision fp16 needs CUDA; use bf16 or fp32 on the CPU")
    return Precision(device.type, dtype, scale_grads=dtype is torch.float16)


def _cpu_has_bf16() -> bool:
    """Native bf16 units (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


@dataclass(frozen=True)
class EpochStats:
    loss: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class EvalStats:
    loss: float
    images: int
    seconds: float
    confusion: ConfusionMatrix


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    precision: Precision,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    accumulate: int = 1,
    clip_grad_norm: float | None = None,
    channels_last: bool = False,
    device: torch.device = CPU,
    progress: bool = True,
    description: str = "train",
) -> EpochStats:
    """One pass over `loader`; `scheduler` (if given) steps once per optimizer step."""
    model.train()
    total_loss, images, steps = torch.zeros((), dtype=torch.float64), 0, 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=description, unit="batch", disable=not progress, mininterval=1.0)
    optimizer.zero_grad(set_to_none=True)
    for steps, batch in enumerate(bar, start=1):
        inputs, target = _to_device(batch, device, channels_last)
        with precision.autocast():
            loss = loss_fn(model(inputs), target)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{description}: loss is {loss.item()} at batch {steps}; stopped before "
                "the optimizer step, so the last good checkpoint is kept. Lower the learning "
                "rate, enable gradient clipping or try precision fp32."
            )
        _backward(loss / accumulate, scaler)
        if steps % accumulate == 0:
            _optimizer_step(model, optimizer, scaler, clip_grad_norm)
            if scheduler is not None:
                scheduler.step()
        total_loss += loss.detach().double() * len(inputs)
        images += len(inputs)
        if progress and steps % 5 == 0:
            rate = images / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{total_loss.item() / images:.4f}", img_s=f"{rate:.1f}")
    if steps % accumulate:
        _optimizer_step(model, optimizer, scaler, clip_grad_norm)
        if scheduler is not None:
            scheduler.step()
    loss_sum, images = _all_reduce_sum(total_loss, images)
    return EpochStats(loss_sum / max(images, 1), images, time.perf_counter() - start)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Iterable,
    loss_fn: torch.nn.Module | None,
    *,
    precision: Precision,
    num_classes: int = 16,
    channels_last: bool = False,
    device: torch.device = CPU,
    progress: bool = False,
    description: str = "val",
) -> EvalStats:
    """Loss and confusion matrix over `loader`, summed across ranks."""
    model.eval()
    confusion = ConfusionMatrix(num_classes)
    total_loss, images = torch.zeros((), dtype=torch.float64), 0
    start = time.perf_counter()
    for batch in tqdm(loader, desc=description, disable=not progress, mininterval=1.0):
        inputs, target = _to_device(batch, device, channels_last)
        with precision.autocast():
            output = model(inputs)
            if loss_fn is not None:
                total_loss += loss_fn(output, target).detach().double() * len(inputs)
        confusion.update(fine_logits(output).argmax(dim=1), target)
        images += len(inputs)
    confusion.all_reduce()
    loss_sum, images = _all_reduce_sum(total_loss, images)
    return EvalStats(loss_sum / max(images, 1), images, time.perf_counter() - start, confusion)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Max allocated on CUDA; the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _to_device(
    batch: dict, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = batch["image"].to(device, non_blocking=True)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, batch["mask"].to(device, non_blocking=True).long()


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
    else:
        loss.backward()


def _optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    clip_grad_norm: float | None,
) -> None:
    scaling = scaler is not None and scaler.is_enabled()
    if clip_grad_norm:
        if scaling:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    if scaling:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _all_reduce_sum(loss_sum: torch.Tensor, images: int) -> tuple[float, int]:
    packed = all_reduce_sum(torch.tensor([loss_sum.item(), float(images)], dtype=torch.float64))
    return packed[0].item(), int(packed[1].item())
