"""`heritageseg server` for a team: PostgreSQL (Debian's, on loopback, data in a folder the
test names), `mlflow server` over it with proxied artifacts and basic-auth logins; the test
creates its own users and stops everything at the end."""

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
from PIL import Image

from heritageseg.ops.server import ADMIN_PASSWORD_ENV

from .conftest import BIN, ROOT
from .test_tracking import _free_port, _log_concurrently

pytestmark = [pytest.mark.slow, pytest.mark.server]
ADMIN = ("admin", "admin-pass-4-tests")
READER = ("rita", "reader-pass-123")
MAINTAINER = ("max", "maintainer-pass-123")
NAME = "heritageseg-segformer"


def _postgres() -> None:
    """Debian's PostgreSQL server, installed when missing and root; else skip (fail in CI)."""
    if any(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "postgresql"]):  # fmt: skip
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=900)
        return
    reason = "PostgreSQL is missing and cannot be installed here (not root or no apt-get)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _env(user: tuple[str, str] | None, uri: str) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    if user:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = user
    return env


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """The server on free ports; its users: the admin, a reader and a maintainer."""
    _postgres()
    # under /tmp, not pytest's folder: PostgreSQL runs as user postgres, which may not enter
    # root's 0700 pytest folders
    folder = Path(tempfile.mkdtemp(prefix="heritageseg-team-")) / "server"
    folder.parent.chmod(0o755)  # as a folder a team would name, e.g. /srv/mlflow
    log_folder = tmp_path_factory.mktemp("team")
    port, db_port = _free_port(), _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = log_folder / "server.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            [str(BIN / "heritageseg"), "server", "--folder", str(folder), "--port", str(port),
             "--db-port", str(db_port)],
            env={**_env(None, uri), ADMIN_PASSWORD_ENV: ADMIN[1]}, stdout=stream,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_health(uri, process, log)
        for user, password in (READER, MAINTAINER):
            account = {"username": user, "password": password}
            done = requests.post(f"{uri}/api/2.0/mlflow/users/create", auth=ADMIN,
                                 json=account, timeout=30)  # fmt: skip
            assert done.status_code == 200, done.text
        yield {"uri": uri, "folder": folder, "log": log}
    finally:
        process.send_signal(signal.SIGTERM)  # heritageseg stops mlflow, then the database
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    assert not (folder / "postgres" / "postmaster.pid").exists(), "PostgreSQL left running"
    shutil.rmtree(folder.parent, ignore_errors=True)


def _wait_health(uri: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
        try:
            if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{uri} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def _cli(user, uri: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "heritageseg"), *args], cwd=cwd, env=_env(user, uri),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_anonymous_clients_are_refused_and_readers_can_only_read(team_server):
    search = f"{team_server['uri']}/api/2.0/mlflow/experiments/search?max_results=5"
    assert requests.get(search, timeout=30).status_code == 401
    assert requests.get(search, auth=READER, timeout=30).status_code == 200
    api = f"{team_server['uri']}/api/2.0/mlflow"
    made = requests.post(f"{api}/experiments/create", auth=MAINTAINER, json={"name": "max's"},
                         timeout=30)  # fmt: skip
    assert made.status_code == 200, made.text
    experiment = made.json()["experiment_id"]
    run = requests.post(f"{api}/runs/create", auth=READER, json={"experiment_id": experiment},
                        timeout=30)  # fmt: skip
    assert run.status_code == 403, run.text  # READ on it, not EDIT
    assert requests.post(f"{api}/runs/create", auth=MAINTAINER, json={
        "experiment_id": experiment}, timeout=30).status_code == 200  # fmt: skip
    anonymous = _cli(None, team_server["uri"], "ui", "--help")  # a client command, no login
    assert anonymous.returncode == 0


def test_a_maintainer_registers_and_promotes_a_reader_may_not_and_predicts(
    team_server, tiny_project, tmp_path
):
    """Train + evaluate as the maintainer (the registered model and its artifacts go through
    the server, into its folder), promotion refused to the reader with the permission it
    lacks, granted to the maintainer; the reader maps damage from models:/NAME@production."""
    uri, data = team_server["uri"], tiny_project / "data"
    params = ["--params", str(tiny_project / "params.yaml")]
    refused = _cli(None, uri, *params, "promote", "--arch", "segformer")
    assert refused.returncode == 2 and "needs a login" in refused.stderr, refused.stderr
    models, metrics = tmp_path / "models", tmp_path / "metrics"
    train = _cli(MAINTAINER, uri, *params, "train", "--arch", "segformer", "--cache",
                 str(data / "cache"), "--weights", str(data / "class_weights.json"),
                 "--raw", str(data / "raw"), "--out", str(models))  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    evaluate = _cli(MAINTAINER, uri, *params, "evaluate", "--arch", "segformer",
                    "--cache", str(data / "cache"), "--raw", str(data / "raw"),
                    "--splits", str(data / "splits"), "--models", str(models),
                    "--out", str(metrics))  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert any((team_server["folder"] / "artifacts").rglob("model.safetensors"))  # proxied
    promote = [*params, "promote", "--arch", "segformer", "--raw", str(data / "raw"),
               "--models", str(models), "--metrics", str(metrics), "--card",
               str(tmp_path / "model_card.md")]  # fmt: skip
    reader = _cli(READER, uri, *promote)
    assert reader.returncode == 2, reader.stdout + reader.stderr
    assert f"rita may not promote {NAME}: it needs MANAGE permission on the registered model" in (
        reader.stderr)  # fmt: skip
    maintainer = _cli(MAINTAINER, uri, *promote)
    assert maintainer.returncode == 0, maintainer.stderr[-3000:]
    assert f"{NAME} v1: promoted" in maintainer.stdout
    scan = tmp_path / "scan.png"
    Image.fromarray(np.full((200, 300, 3), 180, np.uint8)).save(scan)
    mapped = _cli(READER, uri, *params, "predict", str(scan), "--out", str(tmp_path / "maps"))
    assert mapped.returncode == 0, mapped.stderr[-3000:]
    assert (tmp_path / "maps" / "scan.png").is_file()


def test_three_concurrent_writers_lose_no_metric_on_the_team_server(team_server, monkeypatch):
    """3 processes x 3 metrics x 40 steps into PostgreSQL through the server, signed in."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MAINTAINER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MAINTAINER[1])
    previous = os.environ["MLFLOW_TRACKING_URI"]  # the session's store (conftest)
    try:
        _log_concurrently(team_server["uri"], "concurrency-team", 40)
    finally:  # set_tracking_uri also sets the environment the next tests' processes inherit
        mlflow.set_tracking_uri(previous)
        os.environ["MLFLOW_TRACKING_URI"] = previous
