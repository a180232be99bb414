"""Outputs a team can share and trust: permissions the umask gives, no staging left by a killed
stage, one training per output folder, a failed training that leaves its folder as it was, a
folder source that cannot read outside itself, and registry commands that create no store."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from heritageseg.core import paths
from heritageseg.core.fileio import exclusive, process_umask
from heritageseg.data.artefact import check_record, iter_folder
from heritageseg.nn.checkpoint import save_resume, save_weights
from heritageseg.ops.tracking import DEFAULT_URI
from heritageseg.stages.evaluate import Evaluation, Scored, metrics_document, write_evaluation
from tests.conftest import BIN, ROOT
from tests.test_mistakes import FOLDER_SOURCE, folder_source, run_cli

_WRITERS = """
import os, stat, sys
os.umask(int(sys.argv[1], 8))
from pathlib import Path
from heritageseg.core.fileio import atomic_dir, atomic_write_bytes, write_json
write_json("out/doc.json", {})
atomic_write_bytes("out/blob.bin", b"x")
with atomic_dir("out/folder") as staging:
    (staging / "inside.txt").write_text("y")
for path in ("out/doc.json", "out/blob.bin", "out/folder", "out/folder/inside.txt"):
    print(path, oct(stat.S_IMODE(os.stat(path).st_mode)))
"""


@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"),
                         [("022", "0o644", "0o755"), ("002", "0o664", "0o775")])  # fmt: skip
def test_atomic_writers_keep_the_umasks_permissions(umask, file_mode, folder_mode, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _WRITERS, umask], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=120, check=True,
    )  # fmt: skip
    modes = dict(line.split() for line in done.stdout.splitlines())
    assert modes == {"out/doc.json": file_mode, "out/blob.bin": file_mode,
                     "out/folder": folder_mode, "out/folder/inside.txt": file_mode}  # fmt: skip


def _evaluation(arch: str) -> Evaluation:
    """A small evaluation from random confusion matrices, as evaluate would score it."""
    rng = np.random.default_rng(0)
    scored = Scored(ids=["a", "b", "c"], per_image=rng.integers(0, 50, (3, 16, 16)),
                    model_seconds=1.0, images=3)  # fmt: skip
    document = metrics_document(arch, "test", scored, 1.0, 10, 0, torch.device("cpu"))
    return Evaluation(arch, "test", {"prepared": scored}, {paths.METRICS_FILE: document}, [])


def test_stage_outputs_are_readable_by_the_group_and_others(tiny):
    """Data stages (the tiny project's), a model and its resume state, an evaluation."""
    if process_umask() & 0o055:
        pytest.skip(f"umask {process_umask():03o} hides files from others by choice")
    model = torch.nn.Linear(2, 2)
    save_weights(model, tiny / paths.MODELS / "convnext", {"arch": "convnext"})
    save_resume(tiny / paths.MODELS / "convnext", {"model": model}, {})
    write_evaluation(_evaluation("convnext"), tiny / paths.METRICS / "convnext")
    hidden = [
        f"{path.relative_to(tiny)} {stat.filemode(path.stat().st_mode)}"
        for path in tiny.rglob("*")
        if (path.stat().st_mode & 0o044) != 0o044
        or (path.is_dir() and (path.stat().st_mode & 0o011) != 0o011)
    ]
    assert not hidden
    assert (tiny / paths.CACHE).is_dir() and (tiny / paths.METRICS / "convnext" / "plots").is_dir()


def _staging(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.tmp-*")) + sorted(folder.glob(f".{name}.old-*"))


def test_a_killed_prepare_leaves_no_staging_after_the_next_run(tiny):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    prepare = subprocess.Popen([str(BIN / "heritageseg"), "prepare"], cwd=tiny, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not _staging(tiny / "data", "cache") and prepare.poll() is None:
        assert time.monotonic() < deadline, "prepare never started its staging folder"
        time.sleep(0.005)
    prepare.send_signal(signal.SIGKILL)
    prepare.wait()
    assert prepare.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
    assert _staging(tiny / "data", "cache")  # what the kill left
    code, output = run_cli(tiny, ("prepare",))
    assert code == 0, output
    assert _staging(tiny / "data", "cache") == []
    info = json.loads((tiny / paths.CACHE / paths.CACHE_INFO).read_text())
    index = (tiny / paths.CACHE / paths.CACHE_INDEX).read_text().splitlines()
    assert info["rows"] == len(index) - 1  # the header


def test_a_staging_folder_of_a_live_writer_is_left_alone(tmp_path):
    from heritageseg.core.fileio import atomic_dir

    with atomic_dir(tmp_path / "out") as first:  # a writer still at work (this process)
        with atomic_dir(tmp_path / "out") as second:
            (second / "x").write_text("second")
        assert first.is_dir()
        (first / "x").write_text("first")
    assert (tmp_path / "out" / "x").read_text() == "first"
    assert _staging(tmp_path, "out") == []


_HOLD = """
import sys, time
from pathlib import Path
from heritageseg.core.fileio import exclusive
with exclusive(Path(sys.argv[1]), "training"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_training_into_the_same_folder_fails_at_once_naming_the_holder(tiny):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tiny / paths.MODELS / "convnext")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        code, output = run_cli(tiny, ("train", "--arch", "convnext"))
        assert time.monotonic() - start < 10
    finally:
        holder.kill()
        holder.wait()
    assert code == 2, output
    assert f"pid {holder.pid}" in output and "models/convnext" in output
    assert not (tiny / paths.MODELS / "convnext").exists()
    with exclusive(tiny / paths.MODELS / "convnext", "training"):  # free once its holder is gone
        pass


def test_a_failed_training_leaves_mlflow_json_as_it_was(tiny):
    """A real failure inside the tracked run: class weights for the wrong classes."""
    params = yaml.safe_load((tiny / "params.yaml").read_text())
    params["tracking"]["enabled"] = True
    (tiny / "params.yaml").write_text(yaml.safe_dump(params))
    weights = json.loads((tiny / paths.CLASS_WEIGHTS).read_text())
    (tiny / paths.CLASS_WEIGHTS).write_text(json.dumps({**weights, "classes": ["Clean"]}))
    run_file = tiny / paths.MODELS / "convnext" / paths.RUN_FILE
    run_file.parent.mkdir(parents=True)
    run_file.write_text('{"run_id": "the-previous-good-run"}\n')
    code, output = run_cli(tiny, ("train", "--arch", "convnext"))
    assert code == 2 and "classes do not match" in output, output
    assert run_file.read_text() == '{"run_id": "the-previous-good-run"}\n'
    failed = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(params["tracking"]["experiment"]).experiment_id],
        "attributes.status = 'FAILED' and tags.`heritageseg.arch` = 'convnext'",
    )
    assert failed  # the run itself is kept, marked FAILED


def test_predict_outside_the_project_creates_no_store(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = ("--params", str(tiny / "params.yaml"), "predict", "photo.png", "--out", "maps")
    code, output = run_cli(elsewhere, argv)
    assert code == 2, output
    assert DEFAULT_URI in output and "MLFLOW_TRACKING_URI" in output
    assert list(elsewhere.iterdir()) == []


def test_unreadable_and_empty_files_are_named_as_such(tiny, monkeypatch):
    folder_source({"image/crecordtwo.png": b""})(tiny)
    original = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == "crecordone.png" and path.parent.name == "image":
            raise PermissionError(13, "Permission denied")  # root reads anything: simulated
        return original(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    records = list(iter_folder(tiny / FOLDER_SOURCE))
    problems = []
    for raw in records:
        with pytest.raises(Exception) as caught:
            check_record(raw)
        problems.append(str(caught.value))
    assert "crecordone" in problems[0] and "cannot be read: permission denied" in problems[0]
    assert "crecordtwo" in problems[1] and "is empty (0 bytes)" in problems[1]


def test_a_symlink_out_of_the_folder_is_refused(tiny, tmp_path):
    folder_source()(tiny)
    secret = tmp_path / "secret.png"
    secret.write_bytes((tiny / FOLDER_SOURCE / "image" / "crecordone.png").read_bytes())
    link = tiny / FOLDER_SOURCE / "image" / "crecordone.png"
    link.unlink()
    link.symlink_to(secret)
    first, second = iter_folder(tiny / FOLDER_SOURCE)
    assert "outside the source folder" in (first.problem or "")
    check_record(second)


def test_ingest_skip_drops_records_with_unusable_files_and_lists_them(tiny):
    folder_source({"image/zero.png": b""}, image_path="image/zero.png")(tiny)
    code, output = run_cli(
        tiny, ("ingest", "--source", "folder", "--path", FOLDER_SOURCE, "--on-error", "skip",
               "--out", "fresh"),
    )  # fmt: skip
    assert code == 0, output
    rejects = (tiny / "fresh" / paths.REJECTS).read_text()
    assert "crecordone" in rejects and "is empty (0 bytes)" in rejects
    assert json.loads((tiny / "fresh" / paths.MANIFEST).read_text())["records"] == 1


def test_an_absolute_path_elsewhere_falls_back_to_the_file_inside(tiny, tmp_path):
    """The card's metadata.csv lists absolute paths of another machine; the file of the same
    name inside the folder is read, never the one outside."""
    elsewhere = tmp_path / "crecordone.png"
    elsewhere.write_bytes(b"outside")
    folder_source(image_path=str(elsewhere))(tiny)
    first, _ = iter_folder(tiny / FOLDER_SOURCE)
    assert first.problem is None
    assert first.image == (tiny / FOLDER_SOURCE / "image" / "crecordone.png").read_bytes()
