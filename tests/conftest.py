"""Shared fixtures: small hand-made records and a synthetic set ingested once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from heritageseg.core.config import IngestConfig
from heritageseg.data.artefact import RawRecord
from heritageseg.data.ingest import run_ingest
from heritageseg.data.shards import ShardWriter, encode_png

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


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
    """The default synthetic set of 200 images, ingested once for the whole session."""
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    run_ingest(IngestConfig(n=200, seed=0, rows_per_shard=80), out)
    return out


@pytest.fixture(scope="session", autouse=True)
def _mlflow_store_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """CLI runs in tests track into a throwaway sqlite store, never the project's mlruns/."""
    store = tmp_path_factory.mktemp("mlruns") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        yield
