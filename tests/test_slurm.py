"""heritageseg.ops.launch on a real single-node Slurm cluster (slurm/local-cluster/: munge,
MariaDB, slurmdbd, slurmctld, slurmd on loopback), started once for the session: a training
round trip, a 3-architecture job array, a remote traceback, cancellation (scancel and
Ctrl-C), a time limit that requeues and resumes, and a 2-task DDP job (gloo on the CPU)."""

from __future__ import annotations

import functools
import json
import operator
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from heritageseg.core.config import load_params
from heritageseg.ops.launch import (
    LaunchError,
    TrainJob,
    load_profile,
    prepare_job_process,
    print_epoch,
    run_jobs,
)

from .conftest import BIN, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
CLUSTER = ROOT / "slurm" / "local-cluster"
STATE = ROOT / ".slurm-local"


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local cluster, installed (Debian packages) and started if needed; stopped after
    the session unless it was already running. Skips only where it cannot be installed
    (not root, no apt-get) and CI is unset."""
    for script in ("install.sh", "start.sh"):
        done = subprocess.run(
            [str(CLUSTER / script), str(STATE)], capture_output=True, text=True, timeout=600
        )
        if done.returncode == 3 and not os.environ.get("CI"):
            pytest.skip(f"no Slurm cluster on this machine: {done.stderr.strip()}")
        assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"
    conf = done.stdout.strip().rsplit("=", 1)[1]
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if previous is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = previous
    if "already running" not in done.stderr:
        subprocess.run([str(CLUSTER / "stop.sh"), str(STATE)], check=True, timeout=120)


def _profile(folder: Path, **changes) -> Path:
    """A profile for the local cluster, written as a user would write theirs."""
    values = {"partition": "v100", "cpus_per_task": 1, "time_min": 5, "signal_delay_s": 60,
              "folder": str(folder / "logs")}  # fmt: skip
    values.update(changes)
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _params(tiny: Path, folder: Path, epochs: int) -> Path:
    """The tiny cache's params.yaml with `epochs` (and patience to match)."""
    params = yaml.safe_load((tiny / "params.yaml").read_text())
    params["train"].update(epochs=epochs, patience=epochs)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _env() -> dict[str, str]:
    """One torch thread, as in the jobs (cpus_per_task: 1): bf16 results depend on it."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(tiny: Path, params: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        str(BIN / "heritageseg"), "--params", str(params), "train",
        "--cache", str(tiny / "data" / "cache"),
        "--weights", str(tiny / "data" / "class_weights.json"), "--out", str(out), *extra,
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env()
    )


def _assert_same_weights(first: Path, second: Path) -> None:
    expected = load_file(str(first / "model.safetensors"))
    actual = load_file(str(second / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tiny_project, tmp_path_factory) -> Path:
    """segformer trained here for 2 epochs: what every Slurm run must reproduce."""
    folder = tmp_path_factory.mktemp("reference")
    done = _train(
        tiny_project, _params(tiny_project, folder, 2), folder / "models", "--arch", "segformer"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "models" / "segformer"


def test_tiny_training_round_trip_through_slurm_equals_the_local_run(
    slurm_cluster, tiny, reference, tmp_path
):
    done = _train(
        tiny, _params(tiny, tmp_path, 2), tmp_path / "models", "--arch", "segformer",
        "--executor", "slurm", "--profile", str(_profile(tmp_path)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert "submitted 1 job(s) to Slurm" in done.stdout
    # states as sacct reports them (slurmdbd may lag behind a job this short)
    assert re.search(r"^job \d+: (PENDING|RUNNING|COMPLETED)$", done.stdout, re.MULTILINE)
    assert "epoch 2: train loss" in done.stdout  # the job's log, tailed while waiting
    assert "slurm_job_id=" in done.stdout and "slurm_node=localhost" in done.stdout
    assert "segformer: best val mIoU" in done.stdout
    _assert_same_weights(reference, tmp_path / "models" / "segformer")


def test_evaluate_through_slurm_scores_like_the_local_run(slurm_cluster, tiny, reference, tmp_path):
    command = [
        str(BIN / "heritageseg"), "--params", str(tiny / "params.yaml"), "evaluate",
        "--arch", "segformer", "--cache", str(tiny / "data" / "cache"),
        "--raw", str(tiny / "data" / "raw"), "--splits", str(tiny / "data" / "splits"),
        "--models", str(reference.parent),
    ]  # fmt: skip
    slurm = [*command, "--out", str(tmp_path / "slurm"), "--executor", "slurm",
             "--profile", str(_profile(tmp_path))]  # fmt: skip
    for args in ([*command, "--out", str(tmp_path / "local")], slurm):
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=_env())
        assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert "submitted 1 job(s) to Slurm" in done.stdout
    for name in ("metrics.json", "metrics_native.json"):
        local = json.loads((tmp_path / "local" / "segformer" / name).read_text())
        remote = json.loads((tmp_path / "slurm" / "segformer" / name).read_text())
        assert remote["confusion_matrix"] == local["confusion_matrix"]
        assert remote["miou"] == local["miou"] and remote["miou_ci95"] == local["miou_ci95"]


def test_all_three_architectures_run_as_one_job_array(slurm_cluster, tiny, tmp_path):
    done = _train(
        tiny, _params(tiny, tmp_path, 1), tmp_path / "models", "--arch", "all",
        "--executor", "slurm", "--profile", str(_profile(tmp_path, array_parallelism=2)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    submitted = next(line for line in done.stdout.splitlines() if line.startswith("submitted"))
    ids = submitted.split(": ", 1)[1].split(";")[0].split(", ")
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{index}" for index in range(3)]
    for arch in ("convnext", "segformer", "maxvit"):
        assert (tmp_path / "models" / arch / "model.safetensors").is_file()
        assert f"{arch}: best val mIoU" in done.stdout
    assert "slurm_array_index=2" in done.stdout


def test_a_raising_job_surfaces_its_remote_traceback_and_log(slurm_cluster, tmp_path):
    profile = load_profile(_profile(tmp_path))
    start = time.monotonic()
    with pytest.raises(LaunchError, match="ZeroDivisionError") as error:
        run_jobs(functools.partial(operator.truediv, 1, 0), [{}], executor="slurm",
                 profile=profile, log=lambda line: None)  # fmt: skip
    assert "Traceback (most recent call last)" in str(error.value)
    log = Path(str(error.value).split("log: ", 1)[1].split()[0])
    assert log.is_file() and "ZeroDivisionError" in log.read_text()
    assert time.monotonic() - start < 30


def test_a_cancelled_job_surfaces_its_state_promptly(slurm_cluster, tmp_path):
    profile = load_profile(_profile(tmp_path))
    cancelled_at = []

    def cancel_when_running(line: str) -> None:
        if line.endswith(": RUNNING") and not cancelled_at:
            subprocess.run(["scancel", line.split()[1].rstrip(":")], check=True)
            cancelled_at.append(time.monotonic())

    with pytest.raises(LaunchError, match="CANCELLED"):
        run_jobs(functools.partial(time.sleep, 300), [{}], executor="slurm", profile=profile,
                 log=cancel_when_running)  # fmt: skip
    assert cancelled_at and time.monotonic() - cancelled_at[0] < 10


def test_ctrl_c_while_waiting_cancels_the_jobs(slurm_cluster, tmp_path):
    # A command started in the background by a non-interactive shell (CI runners, `cmd &`)
    # inherits SIGINT ignored, and so would this child: give it a terminal's Ctrl-C back.
    script = (
        "import functools, signal, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from heritageseg.ops.launch import load_profile, run_jobs\n"
        f"run_jobs(functools.partial(time.sleep, 300), [{{}}], executor='slurm',"
        f" profile=load_profile({str(_profile(tmp_path))!r}),"
        " log=lambda line: print(line, flush=True))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, cwd=ROOT,
    )  # fmt: skip
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.rstrip().endswith(": RUNNING"):
            process.send_signal(signal.SIGINT)
            break
    output = "".join(lines) + process.communicate(timeout=60)[0]
    assert process.returncode != 0
    job = lines[-1].split()[1].rstrip(":")
    assert f"cancelled job(s) {job}" in output
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        squeue = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True)
        if not squeue.stdout.strip():
            break
        time.sleep(0.5)
    assert not squeue.stdout.strip(), f"job {job} still queued: {squeue.stdout}"


def _slow_first_run(row: dict) -> None:
    """Test hook: the first run idles after epoch 1 until the time-limit signal comes (the
    cluster checks limits every 30 s, so a tiny epoch would otherwise end before it)."""
    print_epoch(row)
    if row["epoch"] == 1 and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
        time.sleep(60)


def test_a_job_at_its_time_limit_requeues_resumes_and_equals_the_local_run(
    slurm_cluster, tiny, reference, tmp_path
):
    """A real 1-minute limit: Slurm sends USR2 at its last 30 s check before limit -
    signal_delay_s, i.e. 20-50 s into the job; submitit calls TrainJob.checkpoint and
    requeues; the requeued job resumes from the saved epoch and ends with the
    uninterrupted run's weights."""
    profile = load_profile(_profile(tmp_path, time_min=1, signal_delay_s=10, max_requeues=4))
    lines: list[str] = []
    params = load_params(_params(tiny, tmp_path, 2))
    call = {"params": params, "arch": "segformer", "cache": tiny / "data" / "cache",
            "class_weights": tiny / "data" / "class_weights.json",
            "out": tmp_path / "models" / "segformer", "progress": False,
            "on_epoch": _slow_first_run}  # fmt: skip
    (result,) = run_jobs(TrainJob(), [call], executor="slurm", profile=profile, log=lines.append)
    log = "\n".join(lines)
    assert "this job is timed-out" in log and "Requeued job" in log, log[-3000:]
    if log.index("epoch 1:") < log.index("Requeued job"):
        assert "resuming" in log.split("Requeued job", 1)[1], log[-3000:]
    assert result.epochs_run == 2
    _assert_same_weights(reference, tmp_path / "models" / "segformer")


def _job_environment() -> dict[str, str | None]:
    """What a task of a job sees after TrainJob's preparation (runs on the cluster)."""
    prepare_job_process()
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "CUDA_VISIBLE_DEVICES")
    return {name: os.environ.get(name) for name in names}


def test_gpus_come_from_gres_and_ranks_from_submitit(slurm_cluster, tmp_path):
    """Two fake V100s requested as GRES: Slurm, not our code, sets CUDA_VISIBLE_DEVICES;
    each of the 2 tasks keeps both and picks its GPU by LOCAL_RANK."""
    profile = load_profile(_profile(tmp_path, tasks_per_node=2, gpus_per_node=2))
    (env,) = run_jobs(_job_environment, [{}], executor="slurm", profile=profile, log=print)
    assert env == {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
                   "CUDA_VISIBLE_DEVICES": "0,1"}  # fmt: skip


def test_a_two_task_ddp_job_trains_like_the_local_two_process_run(slurm_cluster, tiny, tmp_path):
    """2 tasks of 1 CPU each, gloo: RANK, WORLD_SIZE, MASTER_ADDR come from submitit's
    TorchDistributedEnvironment; the local reference is torchrun with 2 processes."""
    params = _params(tiny, tmp_path, 1)
    local = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "heritageseg.cli",
         "--params", str(params), "train", "--arch", "segformer",
         "--cache", str(tiny / "data" / "cache"),
         "--weights", str(tiny / "data" / "class_weights.json"), "--out", str(tmp_path / "local")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env(),
    )  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    done = _train(
        tiny, params, tmp_path / "slurm", "--arch", "segformer",
        "--executor", "slurm", "--profile", str(_profile(tmp_path, tasks_per_node=2)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert done.stdout.count("segformer: best val mIoU") == 1
    _assert_same_weights(tmp_path / "local" / "segformer", tmp_path / "slurm" / "segformer")


def _preempted_once(row: dict) -> None:
    """Test hook: array task 0 idles after its first epoch on its first run, for the test
    to kill and requeue it (`scontrol requeue`, as a preemption does) while it waits."""
    print_epoch(row)
    first_run = os.environ.get("SLURM_RESTART_COUNT", "0") == "0"
    if row["epoch"] == 1 and os.environ.get("SLURM_ARRAY_TASK_ID") == "0" and first_run:
        time.sleep(60)


def test_a_study_is_one_job_array_that_survives_a_killed_job_and_equals_the_local_study(
    slurm_cluster, local_study, tmp_path
):
    """The tiny study (2 archs x 2 seeds) as one array of 4 tasks, 2 at a time; task 0 is
    killed and requeued after its first epoch and resumes from it; every result equals the
    study run here (test_study.py's, one thread as in the jobs)."""
    from heritageseg.ops.study import StudyFolders, run_study

    data = Path(shutil.copytree(local_study.folder / "data", tmp_path / "data", symlinks=True))
    params = load_params(local_study.folder / "params.yaml")
    folders = StudyFolders(cache=data / "cache", splits=data / "splits",
                           class_weights=data / "class_weights.json", metrics=tmp_path / "metrics",
                           work=tmp_path / "work", out=tmp_path / "study")  # fmt: skip
    lines, preempted = [], []

    def preempt_task_0(line: str) -> None:
        lines.append(line)
        found = re.match(r"\[(\d+_0)\] epoch 1:", line)
        if found and not preempted:
            subprocess.run(["scontrol", "requeue", found.group(1)], check=True)
            preempted.append(found.group(1))

    profile = load_profile(_profile(tmp_path, array_parallelism=2))
    outcome = run_study(params, folders, executor="slurm", profile=profile, log=preempt_task_0,
                        on_epoch=_preempted_once)  # fmt: skip
    assert not outcome.failures, outcome.failures
    submitted = next(line for line in lines if line.startswith("submitted"))
    ids = submitted.split(": ", 1)[1].split(";")[0].split(", ")
    assert ids == [f"{ids[0].split('_')[0]}_{index}" for index in range(4)]  # one array
    task_0 = [line for line in lines if line.startswith(f"[{preempted[0]}]")]
    starts = [i for i, line in enumerate(task_0) if "Starting with JobEnvironment" in line]
    assert len(starts) == 2, "\n".join(task_0)[-3000:]  # killed, requeued, started again
    assert any("resuming" in line for line in task_0[starts[1] :]), "\n".join(task_0)[-3000:]
    local = local_study.folder / "metrics" / "study" / "runs"
    for path in sorted(local.glob("*.json")):
        expected = json.loads(path.read_text())
        actual = json.loads((folders.out / "runs" / path.name).read_text())
        assert actual["per_image"] == expected["per_image"], path.name
        assert actual["miou"] == expected["miou"] and actual["image_ids"] == expected["image_ids"]
    assert (
        outcome.summary["comparisons"][0]["verdict"]
        == json.loads((local.parent / "summary.json").read_text())["comparisons"][0]["verdict"]
    )
