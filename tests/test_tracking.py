"""MLflow for real: a tiny tracked run in a sqlite store, the registry's promotion gate,
the production model in a fresh process and over REST, concurrent logging to sqlite and to
a live `mlflow server`, an unreachable server, and the UI in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from heritageseg import cli
from heritageseg.core.config import TrackingConfig, load_params
from heritageseg.core.paths import METRICS_FILE
from heritageseg.data.images import open_scan
from heritageseg.infer.regions import RegionCounter
from heritageseg.ops import registry, tracking
from heritageseg.stages.predict import damage_report
from tests.browser import Tab, chromium, ink, screenshot
from tests.images import header_only_png

from .conftest import ARTIFACTS, BIN, ROOT

BENCHMARK = "test-benchmark"
NAME = "heritageseg-segformer"
CFG = TrackingConfig()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh sqlite store for this module, named by MLFLOW_TRACKING_URI."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv(tracking.BENCHMARK_ENV, BENCHMARK)
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield uri


@pytest.fixture(scope="module")
def tracked(tiny_project, store, tmp_path_factory):
    """`heritageseg train` + `evaluate` of segformer with tracking on, as the CLI runs them."""
    out = tmp_path_factory.mktemp("tracked")
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["train"]["epochs"] = 2
    params["evaluate"]["bootstrap"] = 100
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--params", str(out / "params.yaml")]
    data = tiny_project / "data"
    assert cli.main([*common, "train", "--arch", "segformer", "--cache", str(data / "cache"),
                     "--weights", str(data / "class_weights.json"), "--raw", str(data / "raw"),
                     "--out", str(out / "models")]) == 0  # fmt: skip
    assert cli.main([*common, "evaluate", "--arch", "segformer", "--cache", str(data / "cache"),
                     "--raw", str(data / "raw"), "--splits", str(data / "splits"), "--models",
                     str(out / "models"), "--out", str(out / "metrics")]) == 0  # fmt: skip
    saved = json.loads((out / "models" / "segformer" / tracking.RUN_FILE).read_text())
    return {"out": out, "data": data, "params": out / "params.yaml", **saved}


def test_a_tiny_run_records_params_metrics_table_confusion_and_model(tracked):
    client = MlflowClient()
    run = client.get_run(tracked["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "segformer"
    settings = load_params(tracked["params"])
    model, epochs = settings.train.segformer, settings.train.epochs
    params = run.data.params
    assert params["train.epochs"] == str(epochs) and params["model.encoder"] == model.encoder
    assert params["model.image_size"] == str(model.image_size)
    assert params["evaluate.bootstrap"] == str(settings.evaluate.bootstrap)
    assert "config.normalization.mean" in params and "config.cache.side" in params
    tags = run.data.tags
    for key in ("git.commit", "git.dirty", "data.manifest_sha256", "host", "executor"):
        assert tags[key], key
    assert tags["stage"] == "train" and tags[tracking.TAG_BENCHMARK] == BENCHMARK
    parent = client.get_run(tags["mlflow.parentRunId"])
    assert parent.data.tags[tracking.TAG_ROLE] == "benchmark"
    assert parent.info.run_id == tracked["parent_run_id"]

    history = client.get_metric_history(tracked["run_id"], "val_miou")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))
    metrics = json.loads((tracked["out"] / "metrics" / "segformer" / "metrics.json").read_text())
    assert run.data.metrics["test_miou"] == pytest.approx(metrics["miou"])
    assert "test_native_miou" in run.data.metrics and "best_val_miou" in run.data.metrics

    table = client.load_table(
        run.info.experiment_id, "evaluate/test_per_class.json", run_ids=[tracked["run_id"]]
    )
    assert len(table) == 16 and list(table["class"])[9] == "Cracks"
    assert table["iou"].iloc[0] == pytest.approx(metrics["per_class"]["Clean"]["iou"])
    folder = Path(client.download_artifacts(tracked["run_id"], "evaluate"))
    matrix = json.loads((folder / "test_confusion_matrix.json").read_text())["matrix"]
    assert matrix == metrics["confusion_matrix"]
    assert Image.open(folder / "test_confusion_matrix.png").size[0] > 400
    assert (folder / "metrics.json").is_file()  # every file of metrics/ARCH comes along
    train = Path(client.download_artifacts(tracked["run_id"], "train"))
    assert (train / "history.csv").read_text().count("\n") == 1 + epochs  # header + epochs

    (version,) = client.search_model_versions(f"name = '{NAME}'")
    assert version.run_id == tracked["run_id"]
    assert float(version.tags["test_miou"]) == pytest.approx(metrics["miou"], abs=1e-6)
    model = mlflow.models.get_model_info(f"models:/{NAME}/{version.version}")
    assert model.signature.inputs.input_names() == ["image"]
    files = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/{version.version}"))
    assert (files / "artifacts" / "model.safetensors").is_file()


def test_the_report_is_logged_to_the_benchmarks_parent_run(tracked, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "benchmark.md").write_text("# benchmark\n")
    parents = tracking.log_report(CFG, tmp_path / "reports", tracked["out"] / "models")
    assert parents == [tracked["parent_run_id"]]
    files = MlflowClient().list_artifacts(tracked["parent_run_id"], "report")
    assert [f.path for f in files] == ["report/benchmark.md"]


def test_a_model_trained_against_another_store_is_logged_to_new_runs(tracked, tmp_path):
    """A model pulled from a team's DVC remote names runs of its trainer's store: evaluate
    and report log to new runs here, with a warning naming the file, not a traceback."""
    model_dir = tmp_path / "models" / "segformer"
    shutil.copytree(tracked["out"] / "models" / "segformer", model_dir)
    saved = json.loads((model_dir / tracking.RUN_FILE).read_text())
    elsewhere = {**saved, "run_id": "f" * 32, "parent_run_id": "e" * 32}
    (model_dir / tracking.RUN_FILE).write_text(json.dumps(elsewhere))
    metrics_dir = tracked["out"] / "metrics" / "segformer"
    document = json.loads((metrics_dir / METRICS_FILE).read_text())
    with pytest.warns(UserWarning, match=rf"{tracking.RUN_FILE} names MLflow run f+, which"):
        run_id, benchmark = tracking.log_evaluation(
            load_params(tracked["params"]), "segformer", model_dir, metrics_dir,
            {METRICS_FILE: document}, tracked["data"] / "raw", tracked["params"],
        )  # fmt: skip
    run = MlflowClient().get_run(run_id)
    assert run_id not in (saved["run_id"], elsewhere["run_id"]) and benchmark == BENCHMARK
    assert run.data.metrics["test_miou"] == pytest.approx(document["miou"])
    assert run.data.tags["mlflow.parentRunId"] == tracked["parent_run_id"]  # the benchmark's
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "benchmark.md").write_text("# benchmark\n")
    with pytest.warns(UserWarning, match="names MLflow run e+, which"):
        parents = tracking.log_report(CFG, tmp_path / "reports", tmp_path / "models")
    assert parents == [tracked["parent_run_id"]]


def _version_with_miou(source_version, miou: float):
    """A new registered version of the same logged model, tagged with another test mIoU:
    the gate reads only the tag, so this stands for a retrained model of that quality."""
    client = MlflowClient()
    version = mlflow.register_model(f"models:/{NAME}/{source_version}", NAME)
    tags = {**client.get_model_version(NAME, source_version).tags, "test_miou": str(miou)}
    for key, value in tags.items():
        if not key.startswith("promotion."):
            client.set_model_version_tag(NAME, version.version, key, value)
    return str(version.version)


def _production() -> str:
    return str(MlflowClient().get_model_version_by_alias(NAME, "production").version)


def test_promotion_gate_refuses_worse_promotes_better_and_rollback_restores(tracked, capsys):
    client = MlflowClient()
    first = client.get_model_version(NAME, "1")
    base = float(first.tags["test_miou"])
    params = ["--params", str(tracked["params"])]
    assert cli.main([*params, "promote", "--arch", "segformer"]) == 0
    assert _production() == "1"
    worse = _version_with_miou("1", base - 0.05)
    assert cli.main([*params, "promote", "--arch", "segformer"]) == 0
    assert "refused" in capsys.readouterr().out
    assert _production() == "1"
    refused = client.get_model_version(NAME, worse)
    assert refused.tags["promotion.decision"] == "refused"
    assert float(refused.tags["promotion.production_test_miou"]) == pytest.approx(base)
    assert float(refused.tags["promotion.candidate_test_miou"]) == pytest.approx(base - 0.05)

    better = _version_with_miou("1", base + 0.05)
    decision = registry.promote(CFG, "segformer")
    assert decision.verdict == "promoted" and _production() == better
    with warnings.catch_warnings():  # stages: deprecated, still supported
        warnings.simplefilter("ignore", FutureWarning)
        assert client.get_model_version(NAME, better).current_stage == "Production"
        assert client.get_model_version(NAME, "1").current_stage == "Archived"
    parent = client.get_run(tracked["parent_run_id"]).data.tags
    assert parent["segformer.promotion.decision"] == "promoted"
    assert parent["segformer.promotion.candidate_version"] == better

    assert cli.main([*params, "promote", "--arch", "segformer", "--rollback"]) == 0
    assert _production() == "1"
    assert client.get_model_version(NAME, better).tags["promotion.rolled_back"] == "true"
    forced = registry.promote(CFG, "segformer", version=worse, force=True)
    assert forced.verdict == "forced" and _production() == worse
    registry.rollback(CFG, "segformer")
    assert _production() == "1"
    with pytest.raises(tracking.TrackingError, match="none to roll back to"):
        registry.rollback(CFG, "segformer")


def test_promotion_writes_the_model_card_as_the_versions_description(tracked, tmp_path):
    out, data, card = tracked["out"], tracked["data"], tmp_path / "model_card.md"
    assert cli.main(["--params", str(tracked["params"]), "promote", "--arch", "segformer",
                     "--version", "1", "--raw", str(data / "raw"), "--models", str(out / "models"),
                     "--metrics", str(out / "metrics"), "--card", str(card)]) == 0  # fmt: skip
    text = card.read_text()
    manifest = json.loads((data / "raw" / "manifest.json").read_text())
    metrics = json.loads((out / "metrics" / "segformer" / "metrics.json").read_text())
    low, high = metrics["miou_ci95"]
    assert text.startswith(f"# {NAME} v1: model card")
    for part in ("## Intended use", f"`{manifest['checksum']}`",
                 f"records: {manifest['records']}", "| resolution | mIoU [95% CI] |",
                 f"| prepared | {100 * metrics['miou']:.2f} % [{100 * low:.2f}, {100 * high:.2f}]",
                 "| native |", "no-model floor", "Never learned (in the test truth",
                 "encoder mit_b0", "## Promotion"):  # fmt: skip
        assert part in text, part
    never = text.split("Never learned (in the test truth, IoU 0 at every resolution): ")[1]
    native = json.loads((out / "metrics" / "segformer" / "metrics_native.json").read_text())
    for name, entry in metrics["per_class"].items():
        if entry["support"] > 0 and entry["iou"] == 0 == native["per_class"][name]["iou"]:
            assert name in never.split(".")[0], name
    assert MlflowClient().get_model_version(NAME, "1").description == text


def _image(path: Path, height: int, width: int) -> Path:
    rng = np.random.default_rng(height)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _env(store: str) -> dict:
    """A fresh process's environment: the store, offline, the venv's tools (uvicorn) first."""
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "MLFLOW_TRACKING_URI": store, "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT / "src"), "PATH": path}  # fmt: skip


def _set_production(version: str = "1") -> None:
    MlflowClient().set_registered_model_alias(NAME, "production", version)


@pytest.mark.slow
def test_production_model_predicts_damage_maps_in_a_fresh_process(tracked, store, tmp_path):
    _set_production()
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@production").unwrap_python_model().segmenter
    # evaluate registered it with its graphs: int8 where it labels as exact onnx does
    assert "onnx" in served.graphs and served.backend == (
        "int8" if "int8" in served.graphs else "onnx"
    )
    images = [_image(tmp_path / "wide.png", 70, 130), _image(tmp_path / "small.jpg", 33, 41)]
    predict = [str(BIN / "heritageseg"), "--params", str(ROOT / "params.yaml"), "predict",
               "--model", f"models:/{NAME}@production"]  # fmt: skip
    done = subprocess.run(
        [*predict, *map(str, images), "--out", str(tmp_path / "maps")],
        env=_env(store), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for image, (height, width) in zip(images, [(70, 130), (33, 41)], strict=True):
        mask = Image.open(tmp_path / "maps" / f"{image.stem}.png")
        assert mask.mode == "L" and mask.size == (width, height)
        assert np.asarray(mask).max() < 16
        overlay = Image.open(tmp_path / "maps" / f"{image.stem}_overlay.tif")
        assert overlay.size == (width, height)
        assert (tmp_path / "maps" / f"{image.stem}_iiif" / "viewer.html").is_file()
        report = json.loads((tmp_path / "maps" / f"{image.stem}.json").read_text())
        assert report["model"] == {"name": NAME, "version": "1"}
        assert (report["width"], report["height"]) == (width, height)
        assert sum(c["area_pct"] for c in report["classes"].values()) == pytest.approx(100)
        counter = RegionCounter()
        counter.add(0, np.asarray(mask))
        counter.finish()
        scan = open_scan(image, max_pixels=10**9, name=str(image), option="x")
        expected = damage_report(counter, scan, NAME, "1")
        assert report == {**expected, "backend": served.backend, "window": report["window"]}
        assert report["window"] == {"tile": 64, "overlap": 21}  # the training size, 1/3 overlap
    assert "damage maps" in done.stderr and "tile/s" in done.stderr  # over images, over tiles
    eager = subprocess.run(
        [*predict, str(images[0]), "--out", str(tmp_path / "eager"), "--backend", "eager"],
        env=_env(store), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert eager.returncode == 0, eager.stderr[-3000:]
    report = json.loads((tmp_path / "eager" / f"{images[0].stem}.json").read_text())
    assert report["backend"] == "eager"
    same = np.asarray(Image.open(tmp_path / "eager" / "wide.png")) == np.asarray(
        Image.open(tmp_path / "maps" / "wide.png")
    )
    # exact onnx agrees with eager PyTorch to ~1e-6 in the logits; int8 was checked on the
    # validation images at registration, not on noise like this
    assert same.mean() > (0.99 if served.backend == "onnx" else 0.8)
    folder = tmp_path / "scans"
    folder.mkdir()
    grey = np.random.default_rng(3).integers(0, 256, (30, 40), dtype=np.uint8)
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "archive16.png")
    (folder / "empty.png").write_bytes(b"")
    header_only_png(folder / "huge.png", 40_000, 30_000)
    skipped = subprocess.run(
        [*predict, str(folder), "--out", str(tmp_path / "many"), "--on-error", "skip"],
        env=_env(store), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert skipped.returncode == 2, skipped.stderr[-3000:]
    assert "2 image(s) skipped" in skipped.stderr and "Traceback" not in skipped.stderr
    assert f"{folder / 'empty.png'}: empty file (0 bytes)" in skipped.stderr
    assert "40000 x 30000 = 1,200,000,000 pixels is over the limit" in skipped.stderr
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == [
        "archive16.json", "archive16.png", "archive16_iiif", "archive16_legend.png",
        "archive16_overlay.tif",
    ]  # fmt: skip
    report = json.loads((tmp_path / "many" / "archive16.json").read_text())
    assert (report["width"], report["height"]) == (40, 30)


@pytest.mark.slow
def test_peak_memory_of_predict_does_not_grow_with_the_scans_area(tracked, store, tmp_path):
    """`bench predict` maps synthetic scans of 4 and 16 Mpx, each in a fresh process: 4x the
    area, the same peak RSS within 25 % (the whole-image reader needed ~25 bytes a pixel)."""
    _set_production()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # fewer, larger tiles (faster), in batches that a row of tiles fills at both sizes: a
    # batch holds activations for its tiles, so a part-filled one would hide the growth
    params["predict"].update(tile=256, batch_size=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [str(BIN / "heritageseg"), "--params", str(tmp_path / "params.yaml"), "bench", "predict",
         "--mpx", "4", "16", "--model", f"models:/{NAME}@production", "--work", str(tmp_path)],
        env=_env(store), capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if "x" in line.split()[0]]
    peaks = {float(row[1]): float(row[-1]) for row in rows if len(row) == 5}
    assert sorted(peaks) == [4.0, 16.0], done.stdout
    assert peaks[16.0] < 1.25 * peaks[4.0], done.stdout


def test_a_benchmark_command_run_keeps_its_figures_and_files(tmp_path, monkeypatch):
    """Logged into the store the params name, whatever store MLflow pointed at before."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    own = f"sqlite:///{tmp_path}/own.db"
    table = tmp_path / "inference.md"
    table.write_text("| backend | img/s |\n")
    figures = {"infer/segformer/160/bf16/speedup": 1.7, "infer/segformer/160/bf16/img_s": 30.0}
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        run_id = tracking.log_benchmark_run(
            TrackingConfig(uri=own), "bench-infer", figures, [table]
        )
    finally:  # connect() points MLflow at `own` for the whole process: restore the others' store
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    client = MlflowClient(own)
    run = client.get_run(run_id)
    assert run.data.metrics == figures and run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id)] == ["inference.md"]


def _wait_http(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        )
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Stop a server started in its own session: its process group is its pid."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
@pytest.mark.server
def test_served_production_model_answers_a_rest_prediction(tracked, store, tmp_path):
    _set_production()
    port = _free_port()
    command = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@production",
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(
            command, env=_env(store), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", server, 180, tmp_path / "serve.log")
        buffer = io.BytesIO()
        Image.open(_image(tmp_path / "x.png", 50, 90)).save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode()
        body = {"dataframe_split": {"columns": ["image"], "data": [[encoded]]}}
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=120)
        assert answer.status_code == 200, answer.text[-2000:]
        (prediction,) = answer.json()["predictions"]
        assert (prediction["height"], prediction["width"]) == (50, 90)
        mask = Image.open(io.BytesIO(base64.b64decode(prediction["mask"])))
        assert mask.mode == "L" and mask.size == (90, 50)
        huge = base64.b64encode(header_only_png(tmp_path / "huge.png", 40_000, 30_000).read_bytes())
        body = {"dataframe_split": {"columns": ["image"], "data": [[huge.decode()]]}}
        refused = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert refused.status_code == 400, refused.text[-2000:]
        assert "40000 x 30000 = 1,200,000,000 pixels is over the limit" in refused.text
    finally:
        _stop(server)


def test_unreachable_tracking_server_fails_before_the_first_epoch(tracked, tmp_path, capsys):
    uri = f"http://127.0.0.1:{_free_port()}"
    data = tracked["data"]
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        status = cli.main(["--params", str(tracked["params"]), "train", "--arch", "segformer",
                           "--cache", str(data / "cache"), "--weights",
                           str(data / "class_weights.json"), "--out", str(tmp_path)])  # fmt: skip
    assert status == 2
    error = capsys.readouterr().err
    assert uri in error and "unreachable" in error and "tracking.enabled: false" in error
    assert not (tmp_path / "segformer").exists()  # not one epoch ran
    assert time.monotonic() - start < 15


def test_epoch_metrics_survive_a_server_that_goes_away_mid_training(store, monkeypatch):
    experiment = tracking.connect(TrackingConfig(experiment="outage"))
    tracker = tracking.RunTracker(MlflowClient().create_run(experiment).info.run_id)
    tracker.on_epoch({"epoch": 1, "val_miou": 0.1})
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(f"http://127.0.0.1:{_free_port()}")  # the server is gone
    with pytest.warns(UserWarning, match="kept for retry"):
        tracker.on_epoch({"epoch": 2, "val_miou": 0.2})
    assert len(tracker.pending) == 1
    mlflow.set_tracking_uri(store)  # back again
    tracker.on_epoch({"epoch": 3, "val_miou": 0.3})
    assert not tracker.pending
    history = MlflowClient().get_metric_history(tracker.run_id, "val_miou")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.3)]


LOGGER = """
import sys
from heritageseg.core.config import TrackingConfig
from heritageseg.ops.tracking import RunTracker, connect
from mlflow.tracking import MlflowClient
experiment = connect(TrackingConfig(experiment=sys.argv[1]))
run = MlflowClient().create_run(experiment, run_name=sys.argv[2])
tracker = RunTracker(run.info.run_id)
for epoch in range(1, int(sys.argv[3]) + 1):
    tracker.on_epoch({"epoch": epoch, "loss": 1.0 / epoch, "miou": epoch / 100})
    MlflowClient().log_metric(run.info.run_id, "single", epoch, step=epoch)
assert tracker.flush(), "metrics left unsent"
MlflowClient().set_terminated(run.info.run_id)
"""


def _log_concurrently(uri: str, experiment: str, steps: int) -> None:
    env = _env(uri)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", LOGGER, experiment, f"w{i}", str(steps)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for worker in workers:
        _, error = worker.communicate(timeout=240)
        assert worker.returncode == 0, error[-3000:]
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["w0", "w1", "w2"]
    for run in runs:
        for key in ("loss", "miou", "single"):
            steps_logged = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps_logged) == list(range(1, steps + 1)), (run.info.run_name, key)


@pytest.fixture(scope="module")
def ui_server(tracked, store, tmp_path_factory):
    """`heritageseg ui` (an `mlflow ui` server) over the module's store, on a free port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with open(log, "w") as stream:
        server = subprocess.Popen(
            [str(BIN / "heritageseg"), "ui", "--port", str(port)], env=_env(store),
            stdout=stream, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", server, 120, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(server)
        mlflow.set_tracking_uri(store)


@pytest.mark.slow
def test_three_processes_lose_no_metric_in_sqlite_or_on_a_server(store, ui_server):
    _log_concurrently(store, "concurrency-sqlite", 40)
    _log_concurrently(ui_server, "concurrency-server", 40)


def _dom(url: str) -> str:
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--virtual-time-budget=20000", "--dump-dom", url]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=180).stdout


@pytest.mark.slow
@pytest.mark.browser
def test_mlflow_ui_in_headless_chromium_shows_the_benchmark_runs(tracked, ui_server):
    client = MlflowClient()
    experiment = client.get_run(tracked["run_id"]).info.experiment_id
    assert client.get_experiment(experiment).tags[tracking.EXPERIMENT_KIND] == (
        "custom_model_development"
    )
    parent = client.get_run(tracked["parent_run_id"]).data.metrics
    assert {
        "segformer_test_miou",
        "segformer_test_miou_ci95_low",
        "segformer_test_dice",
        "segformer_test_throughput_img_s",
        "segformer_test_native_miou",
    } <= set(parent)
    landing = f"{ui_server}/{tracking.experiment_page(experiment)}"  # `heritageseg ui` prints it
    with Tab(ARTIFACTS, 1600, 1000) as tab:  # the first screen, as a person opens it
        tab.open(landing, "document.body.innerText.includes('segformer_test_miou')", 120)
        tab.wait_for("document.querySelectorAll('.js-plotly-plot').length >= 3", 60)
        text = tab.evaluate("document.body.innerText")
        tab.screenshot(ARTIFACTS / "mlflow-ui-experiment.png")
    assert f"benchmark-{BENCHMARK}" in text and "Model training" in text
    assert "segformer_test_miou" in text and "segformer_test_dice" in text
    runs_page = _dom(f"{ui_server}/#/experiments/{experiment}/runs")
    assert f"benchmark-{BENCHMARK}" in runs_page, runs_page[-2000:]
    children = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{tracked['parent_run_id']}'"
    )
    ids = json.dumps([tracked["parent_run_id"], *(r.info.run_id for r in children)])
    compare = f'{ui_server}/#/compare-runs?runs={ids}&experiments=["{experiment}"]'
    page = _dom(compare)
    assert "segformer" in page and f"benchmark-{BENCHMARK}" in page and "test_miou" in page
    shot = screenshot(compare, ARTIFACTS / "mlflow-ui-compare.png", 1600, 1100, wait_ms=20000)
    assert ink(shot) > 0.02
