"""The DVC pipeline, run for real with `dvc repro` in a temporary copy of the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .browser import Tab
from .conftest import ARTIFACTS, BIN, pipeline_copy
from .sshd import ssh_server
from .test_tracking import _free_port, _stop, _wait_http

pytestmark = pytest.mark.pipeline
ARCHS = ("convnext", "segformer", "maxvit")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC copy of the pipeline files with a tiny synthetic set, reproduced once for
    every test of this module (they run in order: the later ones commit, push, run an
    experiment)."""
    copy = pipeline_copy(tmp_path_factory.mktemp("pipeline"))
    _run([str(BIN / "dvc"), "repro"], copy)
    return copy


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_and_is_a_no_op_the_second_time(project: Path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    manifest = json.loads((project / "data" / "raw" / "manifest.json").read_text())
    assert manifest["records"] == params["ingest"]["n"]
    for name in ("split.csv", "lo_content.csv", "lo_material.csv"):
        assert (project / "data" / "splits" / name).is_file()
    for name in ("images.npy", "masks.npy", "index.csv", "cache.json"):
        assert (project / "data" / "cache" / name).is_file()
    weights = json.loads((project / "data" / "class_weights.json").read_text())
    assert weights["method"] == params["weights"]["method"] and len(weights["weights"]) == 16
    for arch in ARCHS:
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
    assert "test mIoU (95% CI)" in summary and "no model (every pixel labelled" in summary
    assert all(f"{arch} " in summary for arch in ARCHS)
    _assert_tracked_in_mlflow(project)
    again = _run([str(BIN / "dvc"), "repro"], project)
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    status = _run([str(BIN / "dvc"), "status", "dvc.yaml"], project)  # not study/dvc.yaml yet
    assert "up to date" in status.stdout


@pytest.mark.slow
def test_a_fresh_clone_pulls_from_an_ssh_remote_and_repro_is_a_no_op(project, tmp_path):
    """The team's remote over SSH (Debian's sshd on loopback, a throw-away key): push the
    benchmark just reproduced and commit; a fresh `git clone` + `dvc pull` has the same
    models and reports, and `dvc repro` there runs no stage. (Not the default remote: the
    next tests push to the directory one.)"""
    dvc = str(BIN / "dvc")
    with ssh_server(tmp_path) as server:
        _run([dvc, "remote", "add", "team", f"{server.url}{tmp_path}/remote"], project)
        _run([dvc, "remote", "modify", "--local", "team", "keyfile", str(server.keyfile)], project)
        _run([dvc, "push", "-r", "team"], project)
        _commit(project, "the benchmark, pushed to the team's remote")
        clone = tmp_path / "clone"
        _run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
        _run([dvc, "remote", "modify", "--local", "team", "keyfile", str(server.keyfile)], clone)
        _run([dvc, "pull", "-r", "team", "dvc.yaml"], clone)  # the study has not run yet
    assert _weights(clone) == _weights(project)
    for name in ("reports/index.html", "data/raw/manifest.json", "metrics/segformer/per_image.npz"):
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name
    assert "up to date" in _run([dvc, "status", "dvc.yaml"], clone).stdout
    repro = _run([dvc, "repro"], clone).stdout
    assert "Running stage" not in repro, repro


def _commit(project: Path, message: str) -> None:
    """Commit what git keeps of the project (dvc.lock, the metrics DVC leaves to git, the
    remote's name), as a team does with each result; nothing new to commit is fine."""
    _run(["git", "add", "-A"], project)
    if _run(["git", "status", "--porcelain"], project).stdout:
        _run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "commit",
              "-qm", message], project)  # fmt: skip


@pytest.mark.slow
def test_the_study_pipeline_reruns_only_the_runs_whose_inputs_changed(project: Path):
    """`dvc repro study/dvc.yaml` after the benchmark: two runs and the report with the
    study's sections, a no-op the second time; one more seed reruns the stage, which trains
    the new seed's two runs only."""
    dvc, params_file = str(BIN / "dvc"), project / "params.yaml"
    first = _run([dvc, "repro", "study/dvc.yaml"], project)
    assert "study: 2 run(s), 0 with a current result, 2 to run (local)" in first.stdout
    summary = json.loads((project / "metrics" / "study" / "summary.json").read_text())
    (pair,) = summary["comparisons"]
    assert pair["single_seed"] in ("within noise", "segformer better", "convnext better")
    report = (project / "reports" / "study" / "benchmark.md").read_text()
    assert "## Results" in report and "## Study: pairwise differences over seeds" in report
    again = _run([dvc, "repro", "study/dvc.yaml"], project)
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["study"]["seeds"] = [0, 1]
    params_file.write_text(yaml.safe_dump(params))
    try:
        more = _run([dvc, "repro", "study/dvc.yaml"], project)
        assert "study: 4 run(s), 2 with a current result, 2 to run (local)" in more.stdout
    finally:
        params_file.write_text(original)


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.browser
def test_the_mlflow_ui_opens_on_the_three_architectures_and_their_test_miou(project, tmp_path):
    """`heritageseg ui` over the project's store prints the benchmark's link; opened in
    headless Chromium at a laptop's size, its first screen shows one row an architecture,
    best test mIoU first, with the figures of metrics/ARCH/metrics.json."""
    port, log = _free_port(), tmp_path / "ui.log"
    with log.open("w") as stream:
        ui = subprocess.Popen(
            [str(BIN / "heritageseg"), "ui", "--port", str(port)], cwd=project,
            env={**_env(), "PYTHONUNBUFFERED": "1"}, stdout=stream, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", ui, 120, log)
        (link,) = re.findall(r"one row an architecture: (\S+)", log.read_text())
        with Tab(ARTIFACTS, 1400, 900) as tab:
            tab.open(link, "['convnext', 'segformer', 'maxvit'].every(name => "
                     "document.body.innerText.includes(name))", 120)  # fmt: skip
            tab.wait_for("document.body.innerText.includes('test_miou')")
            shown = tab.evaluate(_ON_FIRST_SCREEN)
            tab.screenshot(ARTIFACTS / "mlflow-ui-benchmark.png")
    finally:
        _stop(ui)
    scores = {arch: json.loads((project / "metrics" / arch / "metrics.json").read_text())["miou"]
              for arch in ARCHS}  # fmt: skip
    best_first = sorted(ARCHS, key=scores.get, reverse=True)
    assert [name for name in shown["texts"] if name in ARCHS] == best_first, shown
    assert "test_miou" in shown["texts"] and "test_miou_damage" in shown["texts"]
    for arch in ARCHS:
        assert repr(scores[arch]) in shown["texts"], (arch, scores[arch])


# The texts of the elements wholly inside the window: what a person sees without scrolling.
_ON_FIRST_SCREEN = """(() => {
  const texts = [];
  for (const element of document.querySelectorAll('body *')) {
    if (element.children.length) continue;
    const box = element.getBoundingClientRect(), text = element.innerText?.trim();
    if (text && box.width && box.top >= 0 && box.bottom <= innerHeight
        && box.left >= 0 && box.right <= innerWidth) texts.push(text);
  }
  return {texts};
})()"""


def _env() -> dict[str, str]:
    """The pipeline's environment: the venv first, offline, the project's own MLflow store."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store, as `dvc repro` uses it
    return env


@pytest.mark.slow
def test_a_forced_rerun_gives_identical_weights_and_scores(project: Path) -> None:
    """Same params, same code, CPU: retraining every architecture gives the same weights, byte
    for byte, and re-evaluating gives the same scores in every metrics file (one architecture:
    evaluation is the same code for all). The models/ARCH folders still change hash: their
    history holds timings."""
    before = _scores(project), _weights(project)
    dvc = str(BIN / "dvc")
    _run([dvc, "repro", "--force", "--single-item", *(f"train@{a}" for a in ARCHS)], project)
    assert _weights(project) == before[1]
    _run([dvc, "repro", "--force", "--single-item", "evaluate@segformer"], project)
    assert _scores(project) == before[0]


SPEED_KEYS = {"throughput_img_s", "latency_ms", "peak_mem_mb"}  # measurements, not results


def _scores(project: Path) -> dict:
    return {
        f"{arch}/{name}": {
            k: v
            for k, v in json.loads((project / "metrics" / arch / name).read_text()).items()
            if k not in SPEED_KEYS
        }
        for arch in ARCHS
        for name in ("metrics.json", "metrics_native.json")
    }


def _weights(project: Path) -> dict[str, bytes]:
    return {arch: (project / "models" / arch / "model.safetensors").read_bytes() for arch in ARCHS}


@pytest.mark.slow
def test_push_and_pull_restore_everything(project: Path) -> None:
    """The example remote (a directory beside the checkout) holds every DVC output: after
    deleting them and the cache, `dvc pull` gives back the same bytes and the same status."""
    status = _run([str(BIN / "dvc"), "status"], project).stdout
    _run([str(BIN / "dvc"), "push"], project)
    assert (project.parent / "heritageseg-dvc-remote").is_dir()
    weights = (project / "models" / "segformer" / "model.safetensors").read_bytes()
    for folder in ("data/raw", "data/cache", "models/segformer", "reports", ".dvc/cache"):
        _empty_but_gitignore(project / folder)
    _run([str(BIN / "dvc"), "pull"], project)
    assert (project / "models" / "segformer" / "model.safetensors").read_bytes() == weights
    assert (project / "reports" / "index.html").is_file()
    assert _run([str(BIN / "dvc"), "status"], project).stdout == status


def _empty_but_gitignore(folder: Path) -> None:
    """Delete what DVC restores; keep the .gitignore it wrote, as a user's checkout would."""
    for path in folder.iterdir():
        if path.name != ".gitignore":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _experiment(project: Path) -> str:
    """The MLflow experiment the project's params track into."""
    return yaml.safe_load((project / "params.yaml").read_text())["tracking"]["experiment"]


def _assert_tracked_in_mlflow(project: Path) -> None:
    """`dvc repro` lands in the project's store: a parent run, one child per arch, SegFormer
    promoted by the last stage."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(_experiment(project)).experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment])}
    (parent,) = [r for name, r in runs.items() if name.startswith("benchmark-")]
    for arch in ARCHS:
        assert runs[arch].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "test_miou" in runs[arch].data.metrics
    assert parent.data.tags["segformer.promotion.decision"] == "promoted"
    assert client.get_model_version_by_alias("heritageseg-segformer", "production")


@pytest.mark.slow
def test_an_experiment_lands_in_mlflow(project: Path) -> None:
    """`dvc exp run -S` trains the changed architecture again, tracked like any run (only
    its train stage is the target: evaluating it is the same code the first test checks)."""
    from mlflow.tracking import MlflowClient

    _commit(project, "baseline")
    size = yaml.safe_load((project / "params.yaml").read_text())["train"]["segformer"]["image_size"]
    other = size + 32  # another multiple of 32
    _run([str(BIN / "dvc"), "exp", "run", "-S", f"train.segformer.image_size={other}",
          "train@segformer"], project)  # fmt: skip
    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(_experiment(project)).experiment_id
    sizes = [r.data.params.get("model.image_size") for r in client.search_runs([experiment])
             if r.info.run_name == "segformer"]  # fmt: skip
    assert str(other) in sizes and str(size) in sizes
    shown = _run([str(BIN / "dvc"), "exp", "show", "--json"], project).stdout
    assert re.search(rf'"image_size":\s*{other}', shown), f"no image_size {other} in exp show"


@pytest.mark.slow
def test_a_params_mistake_stops_dvc_repro_before_any_output_is_removed(project: Path) -> None:
    """The validate stage runs first: a bad value (or no params file) stops `dvc repro`
    with the key named, and every stage's outputs are still there."""
    params = project / "params.yaml"
    good = params.read_text()
    outputs = [project / "data" / name for name in ("raw", "splits", "cache")]
    bad = yaml.safe_load(good)
    bad["split"]["test"] = 0.35  # fractions sum to 1.2
    params.write_text(yaml.safe_dump(bad))
    failed = _dvc_fails(project)
    assert "split.train/val/test=(0.7, 0.15, 0.35)" in failed and "Traceback" not in failed
    assert all(path.is_dir() and any(path.iterdir()) for path in outputs)
    params.unlink()
    failed = _dvc_fails(project)
    assert "params.yaml" in failed
    assert all(path.is_dir() and any(path.iterdir()) for path in outputs)
    params.write_text(good)


def _dvc_fails(project: Path) -> str:
    done = subprocess.run(
        [str(BIN / "dvc"), "repro"], cwd=project, capture_output=True, text=True, check=False,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    return done.stdout + done.stderr
