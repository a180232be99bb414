"""`heritageseg server` for a team: PostgreSQL (Debian's, on loopback, data in a folder the
test names), `mlflow server` over it with proxied artifacts and basic-auth logins. The test
creates its own users, runs the whole `dvc repro` through it, restarts it in the middle of a
training and stops everything at the end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from heritageseg.ops.server import ADMIN_PASSWORD_ENV

from .conftest import BIN, ROOT, pipeline_copy
from .debian import require
from .test_tracking import _free_port, _log_concurrently, _wait_http

pytestmark = [pytest.mark.slow, pytest.mark.server]
ADMIN = ("admin", "admin-pass-4-tests")
READER = ("rita", "reader-pass-123")
MAINTAINER = ("max", "maintainer-pass-123")
NAME = "heritageseg-segformer"


def _postgres() -> None:
    """Debian's PostgreSQL server (tests/debian.py installs it when it can)."""
    require(
        "postgresql", lambda: next(map(str, Path("/usr/lib/postgresql").glob("*/bin/initdb")), None)
    )


def _env(user: tuple[str, str] | None, uri: str) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    if user:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = user
    return env


class TeamServer:
    """`heritageseg server` on fixed ports and folder, stopped and started at will (the data
    stays in the folder, as a team's server restarts)."""

    def __init__(self, folder: Path, log: Path):
        self.folder, self.log = folder, log
        self.port, self.db_port = _free_port(), _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as stream:
            self.process = subprocess.Popen(
                [str(BIN / "heritageseg"), "server", "--folder", str(self.folder), "--port",
                 str(self.port), "--db-port", str(self.db_port)],
                env={**_env(None, self.uri), ADMIN_PASSWORD_ENV: ADMIN[1]}, stdout=stream,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        _wait_http(f"{self.uri}/health", self.process, 180, self.log)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)  # heritageseg stops mlflow, then the database
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        assert not (self.folder / "postgres" / "postmaster.pid").exists(), "PostgreSQL left"


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """The server on free ports; its users: the admin, a reader and a maintainer."""
    _postgres()
    # under /tmp, not pytest's folder: PostgreSQL runs as user postgres, which may not enter
    # root's 0700 pytest folders
    folder = Path(tempfile.mkdtemp(prefix="heritageseg-team-")) / "server"
    folder.parent.chmod(0o755)  # as a folder a team would name, e.g. /srv/mlflow
    server = TeamServer(folder, tmp_path_factory.mktemp("team") / "server.log")
    server.start()
    try:
        for user, password in (READER, MAINTAINER):
            account = {"username": user, "password": password}
            done = requests.post(f"{server.uri}/api/2.0/mlflow/users/create", auth=ADMIN,
                                 json=account, timeout=30)  # fmt: skip
            assert done.status_code == 200, done.text
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder.parent, ignore_errors=True)


def _cli(user, uri: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "heritageseg"), *args], cwd=cwd, env=_env(user, uri),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_anonymous_clients_are_refused_and_readers_can_only_read(team_server):
    search = f"{team_server.uri}/api/2.0/mlflow/experiments/search?max_results=5"
    assert requests.get(search, timeout=30).status_code == 401
    assert requests.get(search, auth=READER, timeout=30).status_code == 200
    api = f"{team_server.uri}/api/2.0/mlflow"
    made = requests.post(f"{api}/experiments/create", auth=MAINTAINER, json={"name": "max's"},
                         timeout=30)  # fmt: skip
    assert made.status_code == 200, made.text
    experiment = made.json()["experiment_id"]
    run = requests.post(f"{api}/runs/create", auth=READER, json={"experiment_id": experiment},
                        timeout=30)  # fmt: skip
    assert run.status_code == 403, run.text  # READ on it, not EDIT
    assert requests.post(f"{api}/runs/create", auth=MAINTAINER, json={
        "experiment_id": experiment}, timeout=30).status_code == 200  # fmt: skip
    anonymous = _cli(None, team_server.uri, "ui", "--help")  # a client command, no login
    assert anonymous.returncode == 0


def test_dvc_repro_promotes_through_the_server_a_reader_may_not_and_predicts(team_server, tmp_path):
    """The whole `dvc repro` as the maintainer: runs, registered models and their artifacts
    go through the server (into its folder), the last stage promotes SegFormer. The reader
    is refused promotion with the permission it lacks and maps damage from
    models:/NAME@production; an anonymous client is told to log in."""
    uri, project = team_server.uri, pipeline_copy(tmp_path)
    started = time.monotonic()
    repro = subprocess.run([str(BIN / "dvc"), "repro"], cwd=project, capture_output=True,
                           text=True, timeout=1200, env=_env(MAINTAINER, uri))  # fmt: skip
    assert repro.returncode == 0, (repro.stdout + repro.stderr)[-4000:]
    print(f"dvc repro against the team server: {time.monotonic() - started:.1f} s")
    assert f"{NAME} v1: promoted" in repro.stdout, repro.stdout[-3000:]
    assert any((team_server.folder / "artifacts").rglob("model.safetensors"))  # proxied
    api = f"{uri}/api/2.0/mlflow"
    alias = requests.get(f"{api}/registered-models/alias", auth=READER, timeout=30,
                         params={"name": NAME, "alias": "production"})  # fmt: skip
    assert alias.status_code == 200 and alias.json()["model_version"]["version"] == "1"
    found = requests.post(f"{api}/runs/search", auth=READER, timeout=30, json={
        "experiment_ids": [_experiment(uri, project)], "max_results": 50,
        "filter": "tags.`heritageseg.role` = 'arch'"}).json()["runs"]  # fmt: skip
    assert sorted(r["info"]["run_name"] for r in found) == ["convnext", "maxvit", "segformer"]
    assert all(any(m["key"] == "test_miou" for m in r["data"]["metrics"]) for r in found)

    data = ["--raw", "data/raw", "--models", "models", "--metrics", "metrics"]
    refused = _cli(None, uri, "promote", "--arch", "segformer", *data, cwd=project)
    assert refused.returncode == 2 and "needs a login" in refused.stderr, refused.stderr
    reader = _cli(READER, uri, "promote", "--arch", "segformer", *data,
                  "--card", str(tmp_path / "model_card.md"), cwd=project)  # fmt: skip
    assert reader.returncode == 2, reader.stdout + reader.stderr
    assert f"rita may not promote {NAME}: it needs MANAGE permission on the registered model" in (
        reader.stderr)  # fmt: skip
    scan = tmp_path / "scan.png"
    Image.fromarray(np.full((200, 300, 3), 180, np.uint8)).save(scan)
    mapped = _cli(READER, uri, "predict", str(scan), "--out", str(tmp_path / "maps"), cwd=project)
    assert mapped.returncode == 0, mapped.stderr[-3000:]
    assert (tmp_path / "maps" / "scan.png").is_file()
    assert NAME in (tmp_path / "maps" / "scan.json").read_text()  # the report names the model


def _experiment(uri: str, project: Path) -> str:
    name = yaml.safe_load((project / "params.yaml").read_text())["tracking"]["experiment"]
    found = requests.get(f"{uri}/api/2.0/mlflow/experiments/get-by-name", auth=READER,
                         params={"experiment_name": name}, timeout=30)  # fmt: skip
    return found.json()["experiment"]["experiment_id"]


# A training loop's tracker (what `heritageseg train` calls each epoch), one epoch every
# 0.3 s until FILE exists; then the last flush, which must leave nothing unsent.
TRAINING = """
import sys, time
from pathlib import Path
from heritageseg.core.config import TrackingConfig
from heritageseg.ops.tracking import RunTracker, connect
from mlflow.tracking import MlflowClient
experiment = connect(TrackingConfig(experiment="restart"))
tracker = RunTracker(MlflowClient().create_run(experiment, run_name="restart").info.run_id)
epoch = 0
while not Path(sys.argv[1]).exists():
    epoch += 1
    tracker.on_epoch({"epoch": epoch, "val_miou": epoch / 100})
    print(tracker.run_id, epoch, len(tracker.pending), flush=True)
    time.sleep(0.3)
assert tracker.flush(), "metrics left unsent"
"""


def test_a_server_restart_in_the_middle_of_training_loses_no_epoch_metric(team_server, tmp_path):
    """The server (mlflow and PostgreSQL) stops after epoch 2 and starts again a few epochs
    later; the epochs logged meanwhile are kept and sent when it is back."""
    done, log = tmp_path / "done", tmp_path / "training.log"
    env = {**_env(MAINTAINER, team_server.uri), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    with log.open("w") as errors:
        training = subprocess.Popen([str(BIN / "python"), "-c", TRAINING, str(done)], env=env,
                                    stdout=subprocess.PIPE, stderr=errors, text=True)  # fmt: skip
    try:
        run_id, _, _ = _until(training, log, lambda epoch, pending: epoch >= 2)
        team_server.stop()
        _, down, kept = _until(training, log, lambda epoch, pending: pending >= 3)
        team_server.start()
        done.touch()
        training.communicate(timeout=120)
    finally:
        if training.poll() is None:
            training.kill()
    error = log.read_text()
    assert training.returncode == 0, error[-3000:]
    assert "kept for retry" in error  # the outage was felt, as warnings
    history = requests.get(f"{team_server.uri}/api/2.0/mlflow/metrics/get-history",
                           auth=READER, params={"run_id": run_id, "metric_key": "val_miou"},
                           timeout=30).json()["metrics"]  # fmt: skip
    steps = sorted(m["step"] for m in history)
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] > down, (steps, down, kept)


def _until(process: subprocess.Popen, log: Path, condition) -> tuple[str, int, int]:
    """Read the training's lines (run id, epoch, metrics pending) until CONDITION holds."""
    for line in process.stdout:
        run_id, epoch, pending = line.split()
        if condition(int(epoch), int(pending)):
            return run_id, int(epoch), int(pending)
    pytest.fail(f"the training ended early:\n{log.read_text()[-3000:]}")


def test_three_concurrent_writers_lose_no_metric_on_the_team_server(team_server, monkeypatch):
    """3 processes x 3 metrics x 40 steps into PostgreSQL through the server, signed in."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MAINTAINER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MAINTAINER[1])
    previous = os.environ["MLFLOW_TRACKING_URI"]  # the session's store (conftest)
    try:
        _log_concurrently(team_server.uri, "concurrency-team", 40)
    finally:  # set_tracking_uri also sets the environment the next tests' processes inherit
        mlflow.set_tracking_uri(previous)
        os.environ["MLFLOW_TRACKING_URI"] = previous
