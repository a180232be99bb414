"""The train stage: data, model, optimiser and the epoch loop around `engine`.

Reproducible and resumable on the CPU: every epoch's data order and augmentations come
from seeds derived from (seed, epoch), and the full state is saved after each epoch, so a
run killed at any point and resumed ends with the same weights as one never interrupted.
Runs unchanged under torch.distributed (torchrun, Slurm): only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.data

from heritageseg.core.classes import CLASS_NAMES
from heritageseg.core.config import Params
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import atomic_write_text, write_json
from heritageseg.core.paths import CANDIDATE, CONFIG, HISTORY, TRAIN_METRICS, WEIGHTS
from heritageseg.data.cache import CacheDataset, read_info
from heritageseg.data.transforms import eval_transform, normalization, train_transform
from heritageseg.data.weights import read_class_weights
from heritageseg.nn.checkpoint import (
    BrokenResume,
    load_resume,
    resume_extra,
    save_resume,
    save_weights,
    set_aside_resume,
)
from heritageseg.nn.engine import (
    evaluate,
    peak_memory_mb,
    reset_peak_memory,
    resolve_precision,
    train_one_epoch,
)
from heritageseg.nn.losses import build_loss
from heritageseg.nn.metrics import miou
from heritageseg.nn.models import build_model, count_parameters

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_miou",
    "lr",
    "images_per_s",
    "epoch_seconds",
    "peak_mem_mb",
]


@dataclass(frozen=True)
class Rank:
    """Where this process sits in a torch.distributed job (world 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Rank:
    """Join the process group described by the environment (torchrun, Slurm via submitit)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Rank(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(rank: Rank, requested: str | None = None) -> torch.device:
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        torch.cuda.set_device(rank.local)
        return torch.device("cuda", rank.local)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- data


class ShardSampler(torch.utils.data.Sampler):
    """Every `world`-th index from `rank`: each sample seen exactly once across ranks, no
    padding (DistributedSampler pads, which would count some pixels twice in the metrics)."""

    def __init__(self, length: int, rank: Rank):
        self.indices = list(range(rank.rank, length, rank.world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _seed_worker(worker_id: int) -> None:
    """Seed numpy, random and the augmentation pipeline from the loader's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    _seed_transform(getattr(info.dataset, "transform", None), seed)


def _seed_transform(transform: object, seed: int) -> None:
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def make_loader(
    dataset: CacheDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    epoch: int,
    rank: Rank,
    workers: int,
) -> torch.utils.data.DataLoader:
    """A loader whose order and augmentations depend only on (seed, epoch, rank)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if train and rank.world > 1:
        sampler = torch.utils.data.DistributedSampler(
            dataset, rank.world, rank.rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler.set_epoch(epoch)
    elif train:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    else:
        sampler = ShardSampler(len(dataset), rank)
    if workers == 0:
        _seed_transform(dataset.transform, seed * 7919 + epoch * 31 + rank.rank)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=_seed_worker if workers else None,
        generator=generator,
        drop_last=train and len(sampler) > batch_size,
        persistent_workers=False,
    )


# ---------------------------------------------------------------- the stage


@dataclass
class TrainResult:
    out: Path
    best_epoch: int
    best_val_miou: float
    epochs_run: int
    stopped_early: bool
    history: list[dict]
    job: dict[str, str] = dataclasses.field(default_factory=dict)  # Slurm job id, index, node


def run_training(
    params: Params,
    arch: str,
    cache: Path,
    class_weights: Path,
    out: Path,
    *,
    fresh: bool = False,
    device: str | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train `arch` on the cache's train split, early-stopping on validation mIoU."""
    cfg, model_cfg = params.train, params.train.model(arch)
    rank = init_distributed()
    device_ = pick_device(rank, device)
    seed_everything(cfg.seed + rank.rank)
    precision = resolve_precision(cfg.precision, device_)
    cache_info = read_info(cache)
    mean, std = normalization(model_cfg.encoder)
    train_set, val_set = _datasets(params, arch, cache, cache_info, mean, std)
    model, ddp_model = _network(model_cfg, cfg.channels_last, rank, device_)
    loss_fn = build_loss(cfg.loss, _load_class_weights(class_weights).to(device_), model_cfg.head)
    lr = cfg.lr_for(arch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = _optimizer_steps(len(train_set), model_cfg.batch_size, rank, cfg.accumulate)
    scheduler = _build_scheduler(cfg.scheduler, optimizer, lr, cfg.epochs, steps_per_epoch)
    scaler = torch.amp.GradScaler(device_.type, enabled=precision.scale_grads)
    fingerprint = training_fingerprint(params, arch, cache_info)
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}

    state = _start_state(out, objects, fingerprint, fresh, rank.is_main)
    config = _resolved_config(params, arch, mean, std, cache_info, precision, lr)
    config["params_m"] = count_parameters(model)
    loader = functools.partial(
        make_loader, batch_size=model_cfg.batch_size, seed=cfg.seed, rank=rank,
        workers=cfg.num_workers,
    )  # fmt: skip
    start_time = time.perf_counter() - state["train_seconds"]
    for epoch in range(state["epoch"], cfg.epochs):
        if state["bad_epochs"] >= cfg.patience:
            break
        reset_peak_memory(device_)
        train_stats = train_one_epoch(
            ddp_model,
            loader(train_set, train=True, epoch=epoch),
            loss_fn,
            optimizer,
            precision=precision,
            scaler=scaler,
            scheduler=scheduler if cfg.scheduler == "onecycle" else None,
            accumulate=cfg.accumulate,
            clip_grad_norm=cfg.clip_grad_norm,
            channels_last=cfg.channels_last,
            device=device_,
            progress=progress and rank.is_main,
            description=f"{arch} epoch {epoch + 1}/{cfg.epochs}",
        )
        val_stats = evaluate(
            ddp_model,
            loader(val_set, train=False, epoch=epoch),
            loss_fn,
            precision=precision,
            channels_last=cfg.channels_last,
            device=device_,
        )
        val_miou = miou(val_stats.confusion.numpy())
        if cfg.scheduler == "plateau":
            scheduler.step(val_miou)
        row = _epoch_row(epoch, train_stats, val_stats, val_miou, optimizer, device_)
        _advance(state, row, epoch, val_miou)
        state["train_seconds"] = time.perf_counter() - start_time
        if rank.is_main:
            _save_epoch(out, model, objects, state, config, fingerprint)
            if on_epoch is not None:
                on_epoch(row)
    result = TrainResult(
        out=out,
        best_epoch=state["best_epoch"],
        best_val_miou=state["best_miou"],
        epochs_run=len(state["history"]),
        stopped_early=state["bad_epochs"] >= cfg.patience,
        history=state["history"],
    )
    if rank.is_main:
        _publish(out)
        write_json(out / TRAIN_METRICS, _train_metrics(result, state, config))
    if rank.world > 1:
        dist.barrier()
    return result


def _datasets(params: Params, arch: str, cache: Path, cache_info: dict, mean, std):
    """The train split (augmented; random crops of native tiles) and the val split."""
    size = params.train.model(arch).image_size
    crop = cache_info["mode"] == "tile"
    train_set = CacheDataset(
        cache, "train", train_transform(params.augment, size, mean, std, crop=crop)
    )
    val_set = CacheDataset(cache, "val", eval_transform(size, mean, std))
    if len(train_set) == 0 or len(val_set) == 0:
        raise HeritagesegError(f"{cache}: the train and val splits must both be non-empty")
    return train_set, val_set


def _network(model_cfg, channels_last: bool, rank: Rank, device: torch.device):
    """(the model, the module to train: the model itself or its DistributedDataParallel)."""
    model = build_model(model_cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rank.world == 1:
        return model, model
    ids = [device] if device.type == "cuda" else None
    return model, torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _epoch_row(epoch: int, train_stats, val_stats, val_miou: float, optimizer, device) -> dict:
    """One line of history.csv (HISTORY_COLUMNS)."""
    return {
        "epoch": epoch + 1,
        "train_loss": train_stats.loss,
        "val_loss": val_stats.loss,
        "val_miou": val_miou,
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": train_stats.images_per_second,
        "epoch_seconds": train_stats.seconds + val_stats.seconds,
        "peak_mem_mb": peak_memory_mb(device),
    }


def _save_epoch(
    out: Path, model, objects: dict, state: dict, config: dict, fingerprint: str
) -> None:
    """The best weights (when this epoch is the best) and the history, as the candidate that
    `_publish` moves into `out` when training ends; the resume state beside them."""
    row = state["history"][-1]
    candidate = out / CANDIDATE
    with signals_deferred():  # a Slurm USR2 (requeue) never lands mid-save
        if state["best_epoch"] == row["epoch"]:
            best = {"best_epoch": row["epoch"], "val_miou": row["val_miou"]}
            save_weights(model, candidate, {**config, **best})
        _write_history(candidate / HISTORY, state["history"])
        save_resume(out, objects, {**state, "fingerprint": fingerprint})


def _publish(out: Path) -> None:
    """Move the candidate's weights, config and history into `out`: until a training ends,
    its folder keeps the previous model (a failed or killed run leaves it as it was)."""
    candidate = out / CANDIDATE
    if not candidate.is_dir():
        return  # nothing trained in this call (a finished run resumed): the model stands
    for name in (WEIGHTS, CONFIG, HISTORY):
        if (candidate / name).is_file():
            os.replace(candidate / name, out / name)
    shutil.rmtree(candidate, ignore_errors=True)


@contextlib.contextmanager
def signals_deferred(signals=(signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)):
    """Hold these signals until the block ends: submitit's handler exits the process to
    requeue it, which must not leave the weights, history and resume state out of step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _advance(state: dict, row: dict, epoch: int, val_miou: float) -> None:
    state["history"].append(row)
    state["epoch"] = epoch + 1
    if val_miou > state["best_miou"]:
        state.update(best_miou=val_miou, best_epoch=epoch + 1, bad_epochs=0)
    else:
        state["bad_epochs"] += 1


def _start_state(out: Path, objects: dict, fingerprint: str, fresh: bool, main: bool) -> dict:
    """A new state, or the saved one when resuming the same params and data; a saved state
    that cannot be read back is set aside (kept for a look) and training starts over."""
    state = {"epoch": 0, "history": [], "best_miou": -1.0, "best_epoch": 0,
             "bad_epochs": 0, "train_seconds": 0.0}  # fmt: skip
    try:
        saved = None if fresh else _saved_state(out, objects, fingerprint)
    except BrokenResume as error:  # every rank starts over; the main one moves the state
        if main:
            moved = set_aside_resume(out)
            print(f"warning: {error.path}: {error.problem}; set aside as {moved}, starting over",
                  file=sys.stderr, flush=True)  # fmt: skip
        saved = None
    if saved is not None:
        state.update(saved)
        print(f"resuming {out} after epoch {state['epoch']}", flush=True)
    return state


def _saved_state(out: Path, objects: dict, fingerprint: str) -> dict | None:
    """The saved state restored into `objects`, when it was saved with the same params."""
    saved_fingerprint = _resume_fingerprint(out)
    if saved_fingerprint is None:
        return None
    if saved_fingerprint != fingerprint:
        print(f"{out}/resume was saved with other params or data: starting over", flush=True)
        return None
    saved = load_resume(out, objects) or {}
    saved.pop("fingerprint", None)
    return saved


def _resume_fingerprint(out: Path) -> str | None:
    extra = resume_extra(out)
    return None if extra is None else extra.get("fingerprint")


def training_fingerprint(params: Params, arch: str, cache_info: dict) -> str:
    """What must not change between a run and its resumption (and what a study's result
    depends on)."""
    import hashlib

    content = {
        "train": params.train.shared(),
        "model": dataclasses.asdict(params.train.model(arch)),  # not the other archs' sections
        "augment": dataclasses.asdict(params.augment),
        "arch": arch,
        "cache": cache_info,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _optimizer_steps(samples: int, batch: int, rank: Rank, accumulate: int) -> int:
    per_rank = samples // rank.world if rank.world > 1 else samples
    batches = per_rank // batch if per_rank > batch else 1
    return max(1, -(-batches // accumulate))


def _build_scheduler(kind: str, optimizer, lr: float, epochs: int, steps: int):
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps)
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=2)
    return None


def _load_class_weights(path: Path) -> torch.Tensor:
    return torch.tensor(read_class_weights(path), dtype=torch.float32)


def _resolved_config(params, arch, mean, std, cache_info, precision, lr) -> dict:
    return {
        "arch": arch,
        "model": dataclasses.asdict(params.train.model(arch)),
        "train": params.train.shared(),
        "augment": dataclasses.asdict(params.augment),
        "lr": lr,
        "precision": str(precision.dtype).replace("torch.", "") if precision.dtype else "fp32",
        "classes": list(CLASS_NAMES),
        "normalization": {"mean": list(mean), "std": list(std)},
        "cache": cache_info,
    }


def _write_history(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def _train_metrics(result: TrainResult, state: dict, config: dict) -> dict:
    rates = [row["images_per_s"] for row in result.history]
    return {
        "arch": config["arch"],
        "best_epoch": result.best_epoch,
        "best_val_miou": result.best_val_miou,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "train_seconds": state["train_seconds"],
        "train_images_per_s": float(np.mean(rates)) if rates else 0.0,
        "params_m": config["params_m"],
        "peak_mem_mb": max((row["peak_mem_mb"] for row in result.history), default=0.0),
    }
