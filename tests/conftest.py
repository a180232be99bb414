"""Shared constants and fixtures: small hand-made records, a synthetic set ingested once per
session, and the tiny project (the real params.yaml, shrunk) built once and copied per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from heritageseg.core.config import IngestConfig, load_params
from heritageseg.core.fileio import write_json
from heritageseg.data.artefact import RawRecord, read_metadata
from heritageseg.data.cache import build_cache, iter_masks
from heritageseg.data.ingest import run_ingest
from heritageseg.data.shards import ShardWriter, encode_png
from heritageseg.data.splits import write_splits
from heritageseg.data.weights import pixel_counts, weights_document

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the console scripts (heritageseg, dvc, torchrun, mlflow)
ARTIFACTS = ROOT / "test-artifacts"  # screenshots kept for a person to look at

TINY_SIZE = 64  # side of the tiny cache and of every model trained on it
TINY = {
    "ingest": {"n": 40, "min_size": TINY_SIZE, "max_size": 112, "workers": 1},
    "prepare": {"size": TINY_SIZE, "workers": 1},
    "train": {
        "epochs": 3,
        "patience": 3,
        "num_workers": 0,
        "base_lr": 0.006,
        "segformer": {"encoder": "mit_b0", "image_size": TINY_SIZE, "batch_size": 4},
        "convnext": {"encoder": "tu-convnext_atto", "image_size": TINY_SIZE, "batch_size": 4},
        "maxvit": {"encoder": "tu-maxvit_pico_rw_256", "image_size": TINY_SIZE, "batch_size": 4},
    },
}
"""What the tiny project changes in the real params.yaml; every other value is the project's."""

SYNTHETIC = IngestConfig(n=200, seed=0, rows_per_shard=80)
"""The session's synthetic set (`synthetic_raw`); sizes are IngestConfig's defaults."""


def make_raw(
    record_id: str,
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    **fields,
) -> RawRecord:
    """A record from arrays (defaults: a 24x16 gradient with a block of Cracks)."""
    if image is None:
        image = np.zeros((16, 24, 3), dtype=np.uint8)
        image[..., 0] = np.arange(24, dtype=np.uint8)[None, :] * 10
    if mask is None:
        mask = np.zeros(image.shape[:2], dtype=np.uint8)
        mask[2:6, 3:9] = 9
    values = {
        "image": encode_png(image),
        "annotation": encode_png(mask, mode="L"),
        "material": "Paper",
        "content": "Line art",
    }
    values.update(fields)
    return RawRecord(id=record_id, origin=f"test {record_id}", **values)


def write_shards(folder: Path, records: list[RawRecord], rows_per_shard: int = 100) -> Path:
    writer = ShardWriter(folder, rows_per_shard)
    for record in records:
        writer.add(record)
    writer.close()
    return folder


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set SYNTHETIC, ingested once for the whole session."""
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    run_ingest(SYNTHETIC, out)
    return out


def _merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied key by key, nested sections merged, not replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


def tiny_params(**changes: dict) -> dict:
    """The project's params.yaml shrunk by TINY, then by `changes` (sections of overrides)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return _merge(_merge(params, TINY), changes)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder built once per session: params.yaml (`tiny_params()`) and what its
    first stages make of it (synthetic set, splits, cache, class weights). Shared: read it,
    never write into it (module-scoped fixtures build on it; tests take `tiny`)."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    params = load_params(root / "params.yaml")
    data = root / "data"
    run_ingest(params.ingest, data / "raw")
    write_splits(read_metadata(data / "raw"), params.split, data / "splits")
    build_cache(data / "raw", data / "splits" / "split.csv", data / "cache", params.prepare)
    counts = pixel_counts(iter_masks(data / "cache", "train"))
    write_json(data / "class_weights.json", weights_document(counts, params.weights))
    return root


@pytest.fixture
def tiny(tiny_project: Path, tmp_path: Path) -> Path:
    """This test's own copy of the tiny project, under tmp_path / "tiny": free to change."""
    return Path(shutil.copytree(tiny_project, tmp_path / "tiny", symlinks=True))


# the pipeline's own size for `dvc repro` in tests (test_pipeline, test_team): a minute or two
PIPELINE = {"ingest": {"n": 12, "max_size": 96, "rows_per_shard": 4}, "train": {"epochs": 1},
            "study": {"archs": ["segformer", "convnext"], "seeds": [0]}}  # fmt: skip


def pipeline_copy(folder: Path) -> Path:
    """FOLDER/project: the pipeline's files (dvc.yaml, the sources, DVC's config) under a
    fresh git repository, with `tiny_params(**PIPELINE)`, ready for `dvc repro`."""
    copy = folder / "project"
    copy.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "study/dvc.yaml", "data/.gitignore"):
        (copy / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copytree(ROOT / ".dvc", copy / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    (copy / "params.yaml").write_text(yaml.safe_dump(tiny_params(**PIPELINE)))
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    return copy


STUDY = {"archs": ["segformer", "convnext"], "seeds": [0, 1], "bootstrap": 200}
STUDY_EPOCHS = 2  # enough for a job to be preempted after its first epoch and resume


def study_params(folder: Path, **train: object) -> Path:
    """The tiny project's params with the tiny study (STUDY, STUDY_EPOCHS), `train` changes."""
    params = tiny_params(study=STUDY, train={"epochs": STUDY_EPOCHS, "patience": STUDY_EPOCHS,
                                             **train})  # fmt: skip
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_study_command(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`heritageseg study` in `folder` (a project: params.yaml, data/), one torch thread as
    in a one-CPU Slurm job, so its results can be compared with the cluster's."""
    return subprocess.run(
        [str(BIN / "heritageseg"), "--params", "params.yaml", "study", *args], cwd=folder,
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@dataclass(frozen=True)
class LocalStudy:
    folder: Path  # the project: params.yaml, data/, models/study, metrics/study
    broken: subprocess.CompletedProcess  # the first study, with convnext's encoder misspelt
    fixed: subprocess.CompletedProcess  # the second, after the fix


@pytest.fixture(scope="session")
def local_study(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalStudy:
    """The tiny study run here with the CLI, twice: first with convnext's encoder misspelt
    (its two runs fail, segformer's are kept), then fixed (only convnext's run)."""
    folder = tmp_path_factory.mktemp("study")
    shutil.copytree(tiny_project / "data", folder / "data", symlinks=True)
    convnext = {**TINY["train"]["convnext"], "encoder": "tu-convnext_attto"}
    study_params(folder, convnext=convnext)
    broken = run_study_command(folder)
    study_params(folder)
    fixed = run_study_command(folder)
    return LocalStudy(folder, broken, fixed)


FIXTURE_MARKS = {
    "slurm_cluster": "slurm",  # test_slurm.py
    "ui_server": "server",  # test_tracking.py
    "tracked": "training",  # test_tracking.py: train + evaluate through the CLI
    "evaluated": "training",  # test_report.py: two architectures trained and evaluated
    "trained_project": "training",  # test_mistakes.py: a segformer trained for one epoch
    "local_study": "training",  # test_study.py, test_slurm.py: the tiny study, run here
}
"""Markers that follow from a fixture: a test using one (directly or through another fixture)
needs what the fixture starts or trains, so `make test-fast` leaves it out undecorated."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, mark in FIXTURE_MARKS.items():
            if fixture in item.fixturenames:
                item.add_marker(mark)


@pytest.fixture(scope="session", autouse=True)
def _mlflow_store_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """CLI runs in tests track into a throwaway sqlite store, never the project's mlruns/."""
    store = tmp_path_factory.mktemp("mlruns") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        yield
