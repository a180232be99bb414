"""The DVC pipeline, run for real with `dvc repro` in a temporary copy of the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store, as `dvc repro` uses it
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC copy of the pipeline files, with a tiny synthetic set."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copytree(ROOT / ".dvc", copy / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    (copy / "data").mkdir()
    shutil.copy(ROOT / "data" / ".gitignore", copy / "data" / ".gitignore")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"].update(n=12, min_size=64, max_size=96, rows_per_shard=4)
    params["prepare"].update(size=64)
    params["train"].update(epochs=1, num_workers=0)
    for arch in ("convnext", "segformer", "maxvit"):
        params["train"][arch].update(image_size=64, batch_size=4)
    (copy / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], copy)
    return copy


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_and_is_a_no_op_the_second_time(project: Path):
    _run([str(BIN / "dvc"), "repro"], project)
    manifest = json.loads((project / "data" / "raw" / "manifest.json").read_text())
    assert manifest["records"] == 12
    for name in ("split.csv", "lo_content.csv", "lo_material.csv"):
        assert (project / "data" / "splits" / name).is_file()
    for name in ("images.npy", "masks.npy", "index.csv", "cache.json"):
        assert (project / "data" / "cache" / name).is_file()
    weights = json.loads((project / "data" / "class_weights.json").read_text())
    assert weights["method"] == "inverse_sqrt_log_scaled" and len(weights["weights"]) == 16
    for arch in ("convnext", "segformer", "maxvit"):
        for name in ("model.safetensors", "config.json", "history.csv", "train_metrics.json"):
            assert (project / "models" / arch / name).is_file(), f"{arch}/{name}"
        for name in ("metrics.json", "metrics_native.json"):
            metrics = json.loads((project / "metrics" / arch / name).read_text())
            assert metrics["arch"] == arch and len(metrics["per_class"]) == 16
        assert (project / "metrics" / arch / "plots" / "samples.png").is_file()
    shown = _run([str(BIN / "dvc"), "metrics", "show"], project)
    assert "metrics/segformer/metrics.json" in shown.stdout
    for name in ("benchmark.md", "index.html", "comparisons.json"):
        assert (project / "reports" / name).is_file(), name
    plots = _run([str(BIN / "dvc"), "plots", "show", "--json"], project).stdout
    for title in ("IoU per class (test, prepared size)", "Validation mIoU per epoch"):
        assert title in plots, title
    assert "metrics/maxvit/plots/confusion.png" in plots
    summary = _run([str(BIN / "heritageseg"), "summary"], project).stdout
    assert "test mIoU (95% CI)" in summary
    assert all(f"{arch} " in summary for arch in ("convnext", "segformer", "maxvit"))
    _assert_tracked_in_mlflow(project)
    again = _run([str(BIN / "dvc"), "repro"], project)
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    status = _run([str(BIN / "dvc"), "status"], project)
    assert "up to date" in status.stdout
    _check_push_and_pull_restore_everything(project)
    _check_forced_rerun_gives_identical_scores(project)
    _check_an_experiment_lands_in_mlflow(project)


SPEED_KEYS = {"throughput_img_s", "latency_ms", "peak_mem_mb"}  # measurements, not results


def _scores(project: Path) -> dict:
    return {
        f"{arch}/{name}": {
            k: v
            for k, v in json.loads((project / "metrics" / arch / name).read_text()).items()
            if k not in SPEED_KEYS
        }
        for arch in ("convnext", "segformer", "maxvit")
        for name in ("metrics.json", "metrics_native.json")
    }


def _check_push_and_pull_restore_everything(project: Path) -> None:
    """The example remote (a directory beside the checkout) holds every DVC output."""
    _run([str(BIN / "dvc"), "push"], project)
    assert (project.parent / "heritageseg-dvc-remote").is_dir()
    weights = (project / "models" / "segformer" / "model.safetensors").read_bytes()
    for folder in ("data/raw", "data/cache", "models/segformer", "reports", ".dvc/cache"):
        shutil.rmtree(project / folder)
    _run([str(BIN / "dvc"), "pull"], project)
    assert (project / "models" / "segformer" / "model.safetensors").read_bytes() == weights
    assert (project / "reports" / "index.html").is_file()
    assert "up to date" in _run([str(BIN / "dvc"), "status"], project).stdout


def _check_forced_rerun_gives_identical_scores(project: Path) -> None:
    """Same params, same code, CPU: every score of every metrics file is identical."""
    before = _scores(project), _weights(project)
    _run([str(BIN / "dvc"), "repro", "--force"], project)
    assert (_scores(project), _weights(project)) == before


def _weights(project: Path) -> dict[str, bytes]:
    return {
        arch: (project / "models" / arch / "model.safetensors").read_bytes()
        for arch in ("convnext", "segformer", "maxvit")
    }


def _assert_tracked_in_mlflow(project: Path) -> None:
    """`dvc repro` lands in the project's store: a parent run, one child per arch, SegFormer
    promoted by the last stage."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("artefact-benchmark").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment])}
    (parent,) = [r for name, r in runs.items() if name.startswith("benchmark-")]
    for arch in ("convnext", "segformer", "maxvit"):
        assert runs[arch].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "test_miou" in runs[arch].data.metrics
    assert parent.data.tags["segformer.promotion.decision"] == "promoted"
    assert client.get_model_version_by_alias("heritageseg-segformer", "production")


def _check_an_experiment_lands_in_mlflow(project: Path) -> None:
    """`dvc exp run -S` trains the changed architecture again, tracked like any run."""
    from mlflow.tracking import MlflowClient

    (project / ".gitignore").write_text("/mlruns/\n")
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-qm",
          "baseline"], project)  # fmt: skip
    _run([str(BIN / "dvc"), "exp", "run", "-S", "train.segformer.image_size=96"], project)
    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("artefact-benchmark").experiment_id
    sizes = [r.data.params.get("model.image_size") for r in client.search_runs([experiment])
             if r.info.run_name == "segformer"]  # fmt: skip
    assert "96" in sizes and "64" in sizes
    shown = _run([str(BIN / "dvc"), "exp", "show", "--json"], project).stdout
    assert re.search(r'"image_size":\s*96', shown), "dvc exp show lists no image_size 96"
