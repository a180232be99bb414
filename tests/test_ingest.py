"""The ingest stage end to end: sources, fail/skip modes, manifest, determinism, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from heritageseg.cli import main
from heritageseg.core.classes import CLASS_NAMES
from heritageseg.core.config import IngestConfig
from heritageseg.core.errors import DataError, RecordError
from heritageseg.data.artefact import decode_record, iter_parquet
from heritageseg.data.ingest import ingest, run_ingest
from heritageseg.data.shards import encode_png
from heritageseg.data.synth import generate_sample

from .conftest import SYNTHETIC, make_raw, write_shards

GOOD = [make_raw(f"cgood{i:020d}") for i in range(5)]


def _bad_set():
    """Five good records with four bad ones between them."""
    bad = [
        make_raw("cbadimage", image=None),
        make_raw("cbadsize", mask=np.zeros((10, 10), np.uint8)),
        make_raw("cbadlabel", mask=np.full((16, 24), 99, np.uint8)),
        make_raw("cbadmeta", material=None),
    ]
    bad[0] = type(bad[0])(**{**bad[0].__dict__, "image": b"garbage"})
    return [GOOD[0], bad[0], GOOD[1], bad[1], GOOD[2], bad[2], GOOD[3], bad[3], GOOD[4]]


def test_reading_back_a_synthetic_set_gives_identical_pixels(synthetic_raw):
    for index, raw in enumerate(iter_parquet(synthetic_raw)):
        if index % 20:
            continue
        cfg = SYNTHETIC
        sample = generate_sample(
            index, cfg.seed, cfg.min_size, cfg.max_size, cfg.background_fraction
        )
        record = decode_record(raw)
        assert raw.id == sample.id
        np.testing.assert_array_equal(record.image, sample.image)
        np.testing.assert_array_equal(record.mask, sample.annotation)
        assert (raw.material, raw.content) == (sample.material, sample.content)


def test_all_fifteen_damage_classes_appear_in_the_default_set(synthetic_raw):
    manifest = json.loads((synthetic_raw / "manifest.json").read_text())
    assert manifest["records"] == SYNTHETIC.n
    assert set(manifest["class_pixels"]) == {*CLASS_NAMES, "Background"}
    missing = [name for name in CLASS_NAMES if manifest["class_pixels"][name] == 0]
    assert not missing
    assert manifest["class_pixels"]["Background"] > 0
    clean = manifest["class_pixels"]["Clean"]
    assert clean > max(v for k, v in manifest["class_pixels"].items() if k != "Clean")


def test_manifest_describes_the_set(synthetic_raw):
    manifest = json.loads((synthetic_raw / "manifest.json").read_text())
    assert manifest["source"]["kind"] == SYNTHETIC.source
    assert sum(manifest["content_counts"].values()) == SYNTHETIC.n
    assert sum(manifest["material_counts"].values()) == SYNTHETIC.n
    assert sum(s["records"] for s in manifest["shards"]) == SYNTHETIC.n
    size = manifest["image_size"]
    for side in ("width", "height"):
        low, high = size[f"min_{side}"], size[f"max_{side}"]
        assert SYNTHETIC.min_size <= low <= high <= SYNTHETIC.max_size, side
    assert len(manifest["checksum"]) == 64


def test_fail_mode_stops_at_the_bad_record_and_writes_nothing(tmp_path):
    out = tmp_path / "raw"
    with pytest.raises(RecordError, match=r"cbadimage.*image does not decode"):
        ingest(_bad_set(), out, source={"kind": "test"}, progress=_quiet)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_fail_mode_leaves_an_earlier_output_untouched(tmp_path):
    out = tmp_path / "raw"
    ingest(GOOD, out, source={"kind": "test"}, progress=_quiet)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RecordError):
        ingest(_bad_set(), out, source={"kind": "test"}, progress=_quiet)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_skip_mode_lists_every_reject_and_keeps_every_good_record(tmp_path):
    out = tmp_path / "raw"
    result = ingest(_bad_set(), out, source={"kind": "test"}, on_error="skip", progress=_quiet)
    assert [raw.id for raw in iter_parquet(out)] == [r.id for r in GOOD]
    with (out / "rejects.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["cbadimage", "cbadsize", "cbadlabel", "cbadmeta"]
    reasons = [r["reason"] for r in rows]
    assert "does not decode" in reasons[0]
    assert "annotation is 10x10 but the image is 24x16" in reasons[1]
    assert "99" in reasons[2]
    assert "material is empty" in reasons[3]
    assert len(result.rejects) == 4
    assert json.loads((out / "manifest.json").read_text())["rejected"] == 4


def test_a_record_over_the_pixel_limit_is_rejected_and_the_folder_keeps_the_limit(tmp_path):
    big = make_raw("cbig", image=np.zeros((32, 48, 3), np.uint8))  # 1,536 pixels
    out = tmp_path / "raw"
    result = ingest([GOOD[0], big, GOOD[1]], out, source={}, on_error="skip", progress=_quiet,
                    max_pixels=1000)  # fmt: skip
    (reject,) = result.rejects
    message = "image is 48 x 32 = 1,536 pixels, over the limit of 1,000; raise ingest.max_pixels"
    assert "cbig" in str(reject) and message in str(reject)
    assert json.loads((out / "manifest.json").read_text())["pixel_limit"] == 1000
    # prepare and the native evaluation read the folder under the limit it was ingested with
    assert {raw.max_pixels for raw in iter_parquet(out)} == {1000}


def test_duplicate_ids_are_rejected(tmp_path):
    records = [GOOD[0], GOOD[1], GOOD[0]]
    with pytest.raises(RecordError, match="duplicate id, first seen at test"):
        ingest(records, tmp_path / "raw", source={"kind": "test"}, progress=_quiet)


def test_only_bad_records_is_an_error_not_an_empty_set(tmp_path):
    with pytest.raises(DataError, match="no valid record"):
        ingest(_bad_set()[1::2], tmp_path / "raw", source={}, on_error="skip", progress=_quiet)


def test_parquet_source_reingests_to_the_same_records(tmp_path):
    write_shards(tmp_path / "src", GOOD, rows_per_shard=2)
    cfg = IngestConfig(source="parquet", path=str(tmp_path / "src"))
    result = run_ingest(cfg, tmp_path / "raw")
    assert result.records == 5
    originals = {r.id: r for r in GOOD}
    for raw in iter_parquet(tmp_path / "raw"):
        assert raw.image == originals[raw.id].image  # bytes passed through unchanged


def test_folder_source_in_the_dataset_cards_layout(tmp_path):
    root = tmp_path / "damage_analogue"
    rows = []
    for raw in GOOD:
        for column in ("image", "annotation", "annotation_rgb"):
            (root / column).mkdir(parents=True, exist_ok=True)
            data = getattr(raw, column) or encode_png(np.zeros((16, 24, 3), np.uint8))
            (root / column / f"{raw.id}.png").write_bytes(data)
        rows.append(
            {
                "id": raw.id,
                "material": raw.material,
                "content": raw.content,
                # the card's example writes absolute paths of the machine it ran on
                "image_path": f"/home/someone/data/image/{raw.id}.png",
                "annotation_path": f"/home/someone/data/annotation/{raw.id}.png",
                "annotation_rgb_path": f"/home/someone/data/annotation_rgb/{raw.id}.png",
            }
        )
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "image" / f"{GOOD[2].id}.png").unlink()
    cfg = IngestConfig(source="folder", path=str(root), on_error="skip")
    result = run_ingest(cfg, tmp_path / "raw")
    assert result.records == 4
    assert result.rejects[0].record_id == GOOD[2].id
    assert "not found" in result.rejects[0].problem
    decoded = decode_record(next(iter_parquet(tmp_path / "raw")))
    assert decoded.mask.shape == (16, 24)


def test_synthetic_ingest_is_deterministic_per_seed(tmp_path):
    def checksum(seed: int, name: str) -> str:
        cfg = IngestConfig(n=6, seed=seed, min_size=64, max_size=96, rows_per_shard=4)
        return run_ingest(cfg, tmp_path / name).manifest["checksum"]

    assert checksum(1, "a") == checksum(1, "b")
    assert checksum(1, "a") != checksum(2, "c")


def test_hf_source_offline_fails_at_once_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(DataError, match="--source parquet --path"):
        run_ingest(IngestConfig(source="hf", path=str(tmp_path / "dl")), tmp_path / "raw")
    assert time.perf_counter() - start < 30
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="HF_HUB_OFFLINE"):
        run_ingest(IngestConfig(source="hf"), tmp_path / "raw")


def test_hf_source_with_mocked_hub_ingests_the_downloaded_shards(tmp_path, monkeypatch):
    """The hub cannot be reached here: snapshot_download is replaced by a local copy."""
    calls = {}

    def fake_snapshot_download(**kwargs):
        calls.update(kwargs)
        return str(write_shards(tmp_path / "snapshot", GOOD, rows_per_shard=3))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = IngestConfig(source="hf", hf_repo="someone/a-copy", hf_revision="v2")
    result = run_ingest(cfg, tmp_path / "raw")
    assert result.records == 5
    assert (calls["repo_id"], calls["revision"]) == (cfg.hf_repo, cfg.hf_revision)
    assert calls["repo_type"] == "dataset"
    assert result.manifest["source"]["kind"] == "hf"


def test_cli_ingest_reads_params_and_overrides(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  n: 3\n  min_size: 64\n  max_size: 80\n  workers: 1\n")
    out = tmp_path / "raw"
    assert main(["--params", str(params), "ingest", "--out", str(out), "--n", "4"]) == 0
    assert json.loads((out / "manifest.json").read_text())["records"] == 4
    assert "ingested 4 records" in capsys.readouterr().out


def test_cli_reports_bad_params_by_key(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  nn: 3\n")
    assert main(["--params", str(params), "ingest", "--out", str(tmp_path / "raw")]) == 2
    assert "unknown key(s) ingest.nn" in capsys.readouterr().err


def test_console_script_runs_a_stage(tmp_path):
    script = Path(sys.executable).with_name("heritageseg")
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  min_size: 64\n  max_size: 64\n")
    done = subprocess.run(
        [str(script), "--params", str(params), "ingest", "--out", "raw", "--n", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "raw" / "data" / "train-00000-of-00001.parquet").exists()


def _quiet(iterable, **_):
    return iterable
