"""The training stage for real on a tiny cache: checkpoints, determinism, resume after
SIGKILL, non-finite losses and 2-process DDP (gloo on the CPU)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from heritageseg.core import paths
from heritageseg.core.classes import CLASS_NAMES
from heritageseg.core.config import load_params
from heritageseg.data.cache import CacheDataset
from heritageseg.data.transforms import eval_transform, normalization
from heritageseg.nn.checkpoint import load_trained
from heritageseg.nn.engine import NonFiniteLossError, evaluate, resolve_precision, train_one_epoch
from heritageseg.nn.losses import build_loss
from heritageseg.nn.models import build_model
from heritageseg.stages.evaluate import run_evaluation, write_evaluation
from heritageseg.stages.train import Rank, make_loader, run_training

from .conftest import BIN, ROOT, TINY_SIZE


def _train(tiny: Path, out: Path, **train_changes):
    params = load_params(tiny / "params.yaml")
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, **train_changes))
    return run_training(
        params,
        "segformer",
        tiny / "data" / "cache",
        tiny / "data" / "class_weights.json",
        out,
        progress=False,
    )


@pytest.mark.training
def test_training_writes_weights_config_history_and_metrics(tiny, tmp_path):
    train = load_params(tiny / "params.yaml").train
    result = _train(tiny, tmp_path / "segformer")
    folder = result.out
    for name in ("model.safetensors", "config.json", "history.csv", "train_metrics.json"):
        assert (folder / name).is_file(), name
    history = (folder / "history.csv").read_text().splitlines()
    assert history[0] == (
        "epoch,train_loss,val_loss,val_miou,lr,images_per_s,epoch_seconds,peak_mem_mb"
    )
    assert len(history) == 1 + train.epochs  # header + one row per epoch
    config = json.loads((folder / "config.json").read_text())
    assert config["classes"][9] == "Cracks"
    assert config["model"]["encoder"] == train.segformer.encoder
    assert len(config["normalization"]["mean"]) == 3
    assert config["best_epoch"] == result.best_epoch
    trained = load_trained(folder)  # the saved weights fit the model the params describe
    assert trained.config["arch"] == "segformer"
    assert trained.model == train.segformer
    metrics = json.loads((folder / "train_metrics.json").read_text())
    assert metrics["epochs_run"] == train.epochs and metrics["params_m"] > 1


@pytest.mark.training
def test_a_few_epochs_lower_the_training_loss(tiny, tmp_path):
    result = _train(tiny, tmp_path / "run", epochs=4)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]


@pytest.mark.training
def test_same_seed_gives_identical_weights_on_cpu(tiny, tmp_path):
    _train(tiny, tmp_path / "a", epochs=2)
    _train(tiny, tmp_path / "b", epochs=2)
    first = load_file(str(tmp_path / "a" / "model.safetensors"))
    second = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.training
def test_dataloader_workers_keep_training_deterministic(tiny, tmp_path):
    _train(tiny, tmp_path / "a", epochs=1, num_workers=2)
    _train(tiny, tmp_path / "b", epochs=1, num_workers=2)
    first = load_file(str(tmp_path / "a" / "model.safetensors"))
    second = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.training
def test_hierarchical_heads_train_and_validate(tiny, tmp_path):
    params = load_params(tiny / "params.yaml")
    segformer = dataclasses.replace(params.train.segformer, head="hierarchical")
    result = _train(tiny, tmp_path / "h", epochs=1, segformer=segformer)
    assert 0.0 <= result.best_val_miou <= 1.0
    assert "net.segmentation_head" in " ".join(load_file(str(result.out / "model.safetensors")))


class NodeLost(RuntimeError):
    pass


def _lose_the_node(row: dict) -> None:
    raise NodeLost(f"after epoch {row['epoch']}")


@pytest.mark.training
def test_a_training_that_fails_leaves_the_published_model_as_it_was(tiny, tmp_path):
    """The model a failed run would replace stays, byte for byte, until a run ends; the
    failed run's progress is kept (candidate + resume state) and the next run finishes it."""
    out = tmp_path / "segformer"
    _train(tiny, out, epochs=1)
    published = (paths.WEIGHTS, paths.CONFIG, paths.HISTORY, paths.TRAIN_METRICS)
    before = {name: (out / name).read_bytes() for name in published}
    params = load_params(tiny / "params.yaml")
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=2))
    args = (params, "segformer", tiny / "data" / "cache", tiny / "data" / "class_weights.json")
    with pytest.raises(NodeLost):
        run_training(*args, out, fresh=True, progress=False, on_epoch=_lose_the_node)
    assert {name: (out / name).read_bytes() for name in published} == before
    assert (out / paths.CANDIDATE / paths.WEIGHTS).is_file()
    run_training(*args, out, progress=False)  # resumes after epoch 1, publishes at the end
    assert not (out / paths.CANDIDATE).exists()
    assert len((out / paths.HISTORY).read_text().splitlines()) == 1 + 2
    assert (out / paths.WEIGHTS).read_bytes() != before[paths.WEIGHTS]


def _train_command(tiny: Path, out: Path) -> list[str]:
    return [
        str(BIN / "heritageseg"), "--params", str(tiny / "params.yaml"), "train",
        "--arch", "segformer", "--cache", str(tiny / "data" / "cache"),
        "--weights", str(tiny / "data" / "class_weights.json"), "--out", str(out),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.training
def test_resume_after_sigkill_equals_the_uninterrupted_run(tiny, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    uninterrupted = subprocess.run(
        _train_command(tiny, tmp_path / "full"), env=env, capture_output=True, text=True
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    process = subprocess.Popen(
        _train_command(tiny, tmp_path / "killed"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = tmp_path / "killed" / "segformer" / "resume" / "state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)  # into the second epoch
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = json.loads(state.read_text())["extra"]
    assert saved["epoch"] < load_params(tiny / "params.yaml").train.epochs
    resumed = subprocess.run(
        _train_command(tiny, tmp_path / "killed"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    full = load_file(str(tmp_path / "full" / "segformer" / "model.safetensors"))
    again = load_file(str(tmp_path / "killed" / "segformer" / "model.safetensors"))
    for key, value in full.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=1e-6)
    history = (tmp_path / "full" / "segformer" / "history.csv").read_text().splitlines()
    resumed_history = (tmp_path / "killed" / "segformer" / "history.csv").read_text()
    for line_full, line_resumed in zip(history, resumed_history.splitlines(), strict=True):
        # identical losses and mIoU; timing columns differ
        assert line_full.split(",")[:5] == line_resumed.split(",")[:5]


def test_non_finite_loss_stops_before_the_optimizer_step(tiny):
    params = load_params(tiny / "params.yaml")
    model = build_model(params.train.segformer)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    batch = {"image": torch.full((2, 3, 64, 64), float("nan")), "mask": torch.zeros(2, 64, 64)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is kept"):
        train_one_epoch(
            model,
            [batch],
            build_loss(params.train.loss),
            optimizer,
            precision=resolve_precision("fp32", torch.device("cpu")),
            progress=False,
        )
    # the forward pass may touch BatchNorm statistics; the weights must stay untouched
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_confusion(rank: int, world: int, port: int, cache: str, result_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    matrix = _evaluate_val(Path(cache), Rank(rank, world, rank))
    if rank == 0:
        np.save(result_file, matrix)
    torch.distributed.destroy_process_group()


def _evaluate_val(cache: Path, rank: Rank) -> np.ndarray:
    torch.manual_seed(0)
    params = load_params(ROOT / "params.yaml")
    model_cfg = dataclasses.replace(params.train.segformer, image_size=TINY_SIZE)
    model = build_model(model_cfg)
    mean, std = normalization(model_cfg.encoder)
    dataset = CacheDataset(cache, "val", eval_transform(TINY_SIZE, mean, std))
    loader = make_loader(dataset, 3, train=False, seed=0, epoch=0, rank=rank, workers=0)
    stats = evaluate(model, loader, None, precision=resolve_precision("fp32", torch.device("cpu")))
    return stats.confusion.numpy()


@pytest.mark.training
def test_two_process_ddp_metrics_equal_the_single_process_ones(tiny, tmp_path):
    cache = tiny / "data" / "cache"
    single = _evaluate_val(cache, Rank())
    result = tmp_path / "ddp.npy"
    torch.multiprocessing.spawn(
        _ddp_confusion, args=(2, _free_port(), str(cache), str(result)), nprocs=2, join=True
    )
    np.testing.assert_array_equal(np.load(result), single)
    assert single.sum() > 0


@pytest.mark.slow
@pytest.mark.training
def test_two_process_ddp_training_runs_and_only_rank_zero_writes(tiny, tmp_path):
    command = [
        str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2",
        "-m", "heritageseg.cli", *_train_command(tiny, tmp_path / "ddp")[1:],
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    history = (tmp_path / "ddp" / "segformer" / "history.csv").read_text().splitlines()
    epochs = load_params(tiny / "params.yaml").train.epochs
    assert len(history) == 1 + epochs  # header + one row per epoch, written once
    assert done.stdout.count("segformer: best val mIoU") == 1


SCHEMA_KEYS = {
    "arch", "split", "miou", "miou_damage", "dice", "pixel_accuracy", "precision", "recall",
    "f1", "miou_ci95", "per_class", "confusion_matrix", "throughput_img_s", "latency_ms",
    "params_m", "peak_mem_mb",
}  # fmt: skip
CLASS_KEYS = {"iou", "dice", "precision", "recall", "f1", "support", "present"}


def _evaluated_segformer(tiny: Path, tmp_path: Path):
    """segformer trained one epoch and evaluated on the tiny test split."""
    _train(tiny, tmp_path / "models" / "segformer", epochs=1)
    return run_evaluation(
        load_params(tiny / "params.yaml"),
        "segformer",
        cache=tiny / "data" / "cache",
        raw=tiny / "data" / "raw",
        splits=tiny / "data" / "splits",
        model_dir=tmp_path / "models" / "segformer",
        split="test",
    )


@pytest.mark.training
def test_evaluate_writes_metrics_in_the_schema_at_both_resolutions(tiny, tmp_path):
    documents = _evaluated_segformer(tiny, tmp_path).documents
    assert set(documents) == {"metrics.json", "metrics_native.json"}
    for document in documents.values():
        assert set(document) == SCHEMA_KEYS
        assert document["arch"] == "segformer" and document["split"] == "test"
        assert len(document["per_class"]) == 16
        assert all(set(entry) == CLASS_KEYS for entry in document["per_class"].values())
        matrix = np.array(document["confusion_matrix"])
        assert matrix.shape == (16, 16) and matrix.sum() > 0
        low, high = document["miou_ci95"]
        assert 0.0 <= low <= high <= 1.0
        assert 0.0 <= document["miou"] <= 1.0 and document["throughput_img_s"] > 0
        present = [e["iou"] for e in document["per_class"].values() if e["present"]]
        assert document["miou"] == pytest.approx(np.mean(present))
    native = np.array(documents["metrics_native.json"]["confusion_matrix"]).sum()
    prepared = np.array(documents["metrics.json"]["confusion_matrix"]).sum()
    assert native != prepared  # full-size pixels, not the 64 px cache's


@pytest.mark.training
def test_evaluate_writes_per_image_matrices_per_class_table_and_pictures(tiny, tmp_path):
    evaluation = _evaluated_segformer(tiny, tmp_path)
    out = tmp_path / "metrics" / "segformer"
    write_evaluation(evaluation, out)
    saved = np.load(out / "per_image.npz")
    for key, name in (("prepared", "metrics.json"), ("native", "metrics_native.json")):
        matrices = saved[key]
        assert len(saved[f"{key}_ids"]) == len(matrices)
        document = json.loads((out / name).read_text())
        assert matrices.sum(axis=0).tolist() == document["confusion_matrix"]
    table = pd.read_csv(out / "per_class.csv")
    assert list(table["class"]) == list(CLASS_NAMES)
    assert set(table.columns) >= {"iou", "native_iou", "support", "present"}
    expected = {"samples.png", "confusion.png", "confusion_native.png", "per_class_iou.png",
                "class_distribution.png"}  # fmt: skip
    assert {p.name for p in (out / "plots").iterdir()} == expected
    for path in (out / "plots").iterdir():
        with Image.open(path) as picture:
            assert picture.width > 300 and picture.height > 300
            assert len(np.unique(np.asarray(picture.convert("RGB")).reshape(-1, 3), axis=0)) > 20
    assert len(evaluation.samples) == min(9, len(CacheDataset(tiny / "data" / "cache", "test")))
