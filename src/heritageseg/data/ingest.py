"""The ingest stage: any source -> validated shards in the published schema + manifest.

Everything is written into a staging folder that replaces the output only when the whole
source went through, so `--on-error fail` leaves nothing partial behind and a crash never
leaves a half-written `data/raw` for DVC to cache.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from heritageseg.core.classes import BACKGROUND_ID, CLASS_NAMES, colourise
from heritageseg.core.config import RECORD_MAX_PIXELS, IngestConfig
from heritageseg.core.errors import DataError, RecordError
from heritageseg.core.fileio import atomic_dir, write_json
from heritageseg.core.paths import FOLDER_METADATA, MANIFEST, REJECTS
from heritageseg.data.artefact import (
    PUBLISHED_COLUMNS,
    RawRecord,
    check_record,
    find_shards,
    iter_folder,
    iter_parquet,
)
from heritageseg.data.shards import ShardWriter, encode_png, sha256_file
from heritageseg.data.synth import SynthSample, generate_sample


@dataclass
class IngestResult:
    out: Path
    records: int
    rejects: list[RecordError] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)


# ---------------------------------------------------------------- sources


def open_source(cfg: IngestConfig) -> tuple[Iterator[RawRecord], int | None, dict]:
    """The records of the configured source, their count if known, and how to describe it."""
    if cfg.source == "synthetic":
        description = {
            "kind": "synthetic",
            **{k: getattr(cfg, k) for k in ("n", "seed", "min_size", "max_size")},
            "background_fraction": cfg.background_fraction,
        }
        return synthetic_records(cfg), cfg.n, description
    if cfg.source == "hf":
        folder = download_hf(cfg.hf_repo, cfg.hf_revision, cfg.path)
        description = {"kind": "hf", "repo": cfg.hf_repo, "revision": cfg.hf_revision}
        return iter_parquet(folder), count_parquet_rows(folder), description
    path = Path(cfg.path or "")
    if cfg.source == "folder":
        if not (path / FOLDER_METADATA).is_file():
            raise DataError(f"{path}: no metadata.csv; a folder source needs one (see README)")
        return iter_folder(path), None, {"kind": "folder", "path": str(path)}
    return iter_parquet(path), count_parquet_rows(path), {"kind": "parquet", "path": str(path)}


def count_parquet_rows(path: Path) -> int:
    """Row count from the shards' footers, without reading any data."""
    return sum(pq.ParquetFile(s).metadata.num_rows for s in find_shards(Path(path)))


def synthetic_records(cfg: IngestConfig) -> Iterator[RawRecord]:
    """Generated and PNG-encoded in worker processes, yielded in index order."""
    workers = cfg.workers or os.cpu_count() or 1
    jobs = [
        (i, cfg.seed, cfg.min_size, cfg.max_size, cfg.background_fraction) for i in range(cfg.n)
    ]
    if workers == 1:
        yield from map(_synthetic_record, jobs)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap(_synthetic_record, jobs, chunksize=2)


def _synthetic_record(job: tuple[int, int, int, int, float]) -> RawRecord:
    index, seed, min_size, max_size, background_fraction = job
    sample = generate_sample(index, seed, min_size, max_size, background_fraction)
    return sample_to_raw(sample, origin=f"synthetic #{index}")


def sample_to_raw(sample: SynthSample, origin: str) -> RawRecord:
    return RawRecord(
        id=sample.id,
        origin=origin,
        image=encode_png(sample.image),
        annotation=encode_png(sample.annotation, mode="L"),
        annotation_rgb=encode_png(colourise(sample.annotation)),
        material=sample.material,
        content=sample.content,
        type=sample.type,
        damage_description=sample.damage_description,
        llava_description=sample.llava_description,
        verified_description=sample.verified_description,
    )


def download_hf(repo: str, revision: str | None, folder: str | None) -> Path:
    """Fetch the published shards; offline this fails at once with what to do instead."""
    from huggingface_hub import snapshot_download

    advice = (
        f"download the shards where there is internet (`hf download {repo} --repo-type "
        "dataset --local-dir DIR`), copy DIR here and run "
        "`heritageseg ingest --source parquet --path DIR`"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise DataError(f"cannot download {repo}: HF_HUB_OFFLINE is set; {advice}")
    try:
        local = snapshot_download(
            repo_id=repo,
            repo_type="dataset",
            revision=revision,
            allow_patterns=["data/*.parquet"],
            local_dir=folder,
            etag_timeout=10,
        )
    except Exception as exc:  # the hub client raises many types; all mean "not reachable"
        raise DataError(
            f"cannot download {repo} from the Hugging Face hub ({exc}); {advice}"
        ) from exc
    return Path(local)


# ---------------------------------------------------------------- the stage


def ingest(
    records: Iterable[RawRecord],
    out: str | Path,
    *,
    source: dict,
    on_error: str = "fail",
    rows_per_shard: int = 100,
    total: int | None = None,
    progress: Callable[..., Iterable] = tqdm,
    max_pixels: int = RECORD_MAX_PIXELS,
) -> IngestResult:
    """Validate every record (its images at most `max_pixels` each) and write the shards,
    manifest.json (which keeps that limit for the folder's later readers) and rejects.csv."""
    out = Path(out)
    summary = _Summary()
    rejects: list[RecordError] = []
    seen: dict[str, str] = {}
    with atomic_dir(out) as staging:
        writer = ShardWriter(staging, rows_per_shard)
        for raw in progress(records, total=total, desc="ingest", unit="img", mininterval=1.0):
            try:
                _check_unique(raw, seen)
                check = check_record(dataclasses.replace(raw, max_pixels=max_pixels))
                _check_metadata(raw)
            except RecordError as error:
                if on_error == "fail":
                    raise
                rejects.append(error)
                continue
            seen[raw.id] = raw.origin
            summary.add(raw, check.width, check.height, check.label_counts)
            writer.add(raw)
        shards = writer.close()
        if not shards:
            raise DataError(
                f"no valid record in the source ({len(rejects)} rejected): nothing to write"
            )
        manifest = summary.manifest(source, staging, shards, rejected=len(rejects))
        manifest["pixel_limit"] = max_pixels
        write_json(staging / MANIFEST, manifest)
        if on_error == "skip":
            _write_rejects(staging / REJECTS, rejects)
    return IngestResult(out=out, records=summary.records, rejects=rejects, manifest=manifest)


def _check_unique(raw: RawRecord, seen: dict[str, str]) -> None:
    if raw.id in seen:
        raise RecordError(raw.id, raw.origin, f"duplicate id, first seen at {seen[raw.id]}")


def _check_metadata(raw: RawRecord) -> None:
    for name in ("material", "content"):
        if not getattr(raw, name):
            raise RecordError(
                raw.id, raw.origin, f"{name} is empty; splits group and stratify by it"
            )


def _write_rejects(path: Path, rejects: list[RecordError]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "origin", "reason"])
    writer.writerows([e.record_id, e.origin, e.problem] for e in rejects)
    path.write_text(buffer.getvalue(), encoding="utf-8")


class _Summary:
    """Running statistics for the manifest, kept in O(1) memory per record."""

    def __init__(self) -> None:
        self.records = 0
        self.pixels = np.zeros(256, dtype=np.int64)
        self.widths: list[int] = []
        self.heights: list[int] = []
        self.materials: Counter[str] = Counter()
        self.contents: Counter[str] = Counter()

    def add(self, raw: RawRecord, width: int, height: int, counts: np.ndarray) -> None:
        self.records += 1
        self.pixels += counts
        self.widths.append(width)
        self.heights.append(height)
        self.materials[raw.material or ""] += 1
        self.contents[raw.content or ""] += 1

    def manifest(self, source: dict, root: Path, shards: list[Path], rejected: int) -> dict:
        shard_entries = [
            {
                "file": shard.relative_to(root).as_posix(),
                "records": pq.ParquetFile(shard).metadata.num_rows,
                "bytes": shard.stat().st_size,
                "sha256": sha256_file(shard),
            }
            for shard in shards
        ]
        pixels = [int(w) * int(h) for w, h in zip(self.widths, self.heights, strict=True)]
        class_pixels = {name: int(self.pixels[i]) for i, name in enumerate(CLASS_NAMES)}
        class_pixels["Background"] = int(self.pixels[BACKGROUND_ID])
        return {
            "format": "artefact-parquet",
            "columns": list(PUBLISHED_COLUMNS),
            "source": source,
            "records": self.records,
            "rejected": rejected,
            "class_pixels": class_pixels,
            "image_size": {
                "min_width": min(self.widths),
                "max_width": max(self.widths),
                "min_height": min(self.heights),
                "max_height": max(self.heights),
                "min_pixels": min(pixels),
                "max_pixels": max(pixels),
            },
            "material_counts": dict(sorted(self.materials.items())),
            "content_counts": dict(sorted(self.contents.items())),
            "shards": shard_entries,
            "checksum": hashlib.sha256(
                "".join(s["sha256"] for s in shard_entries).encode()
            ).hexdigest(),
        }


def run_ingest(cfg: IngestConfig, out: str | Path) -> IngestResult:
    """The `heritageseg ingest` stage main."""
    records, total, description = open_source(cfg)
    return ingest(
        records,
        out,
        source=description,
        on_error=cfg.on_error,
        rows_per_shard=cfg.rows_per_shard,
        total=total,
        max_pixels=cfg.max_pixels,
    )
