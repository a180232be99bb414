"""Run a stage's function here or on a Slurm cluster through submitit, and wait for it.

`local` calls the function in this process (as DVC runs it by default); `debug` goes through
submitit's DebugExecutor (the pickling path of a real job, in this process, pdb-friendly);
`slurm` submits it with sbatch, configured by a profile file in slurm/. Submitting blocks
until every job has ended, so DVC never caches a missing output; while waiting it prints
state changes and new log lines, a remote failure becomes a LaunchError carrying the remote
traceback and the log path, and Ctrl-C cancels the jobs it submitted.
"""

from __future__ import annotations

import dataclasses
import os
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from annotated_types import Ge

from heritageseg.core.config import (
    Count,
    FieldError,
    LaunchConfig,
    Positive,
    check_fields,
    from_mapping,
)
from heritageseg.core.errors import ConfigError, HeritagesegError

EXECUTORS = typing.get_args(typing.get_type_hints(LaunchConfig)["executor"])  # local, debug, slurm


class LaunchError(HeritagesegError):
    """A submitted job failed, was cancelled or ran out of time."""


@dataclass(frozen=True)
class SlurmProfile:
    """One cluster's sbatch settings, read from a YAML file such as slurm/v100.yaml."""

    partition: str | None = None
    nodes: Count = 1
    tasks_per_node: Count = 1  # > 1: one DDP process per task (torch.distributed)
    gpus_per_node: Annotated[int, Ge(0)] = 0  # requested as GRES; Slurm sets CUDA_VISIBLE_DEVICES
    cpus_per_task: Count = 2
    mem_gb: Positive | None = None
    time_min: Count = 60
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: Count = 3  # --arch all: how many array tasks run at once
    signal_delay_s: Count = 120  # USR2 this long before the time limit: save, requeue
    max_requeues: Annotated[int, Ge(0)] = 3  # time-outs after which a job is not requeued again
    folder: str = "slurm/logs"  # submitit files and job logs, one folder per submission

    def __post_init__(self) -> None:
        check_fields(self)
        if self.signal_delay_s >= self.time_min * 60:
            raise FieldError(
                "signal_delay_s",
                self.signal_delay_s,
                f"need < the time limit ({self.time_min * 60} s), or the job is signalled at once",
            )

    def sbatch(self, job_name: str) -> dict[str, Any]:
        """The profile as submitit SlurmExecutor parameters."""
        values = {
            "job_name": job_name,
            "partition": self.partition,
            "nodes": self.nodes,
            "ntasks_per_node": self.tasks_per_node,
            "gpus_per_node": self.gpus_per_node or None,
            "cpus_per_task": self.cpus_per_task,
            "mem": f"{int(self.mem_gb * 1024)}MB" if self.mem_gb else None,
            "time": self.time_min,
            "account": self.account,
            "qos": self.qos,
            "constraint": self.constraint,
            "array_parallelism": self.array_parallelism,
            "signal_delay_s": self.signal_delay_s,
        }
        return {key: value for key, value in values.items() if value is not None}


def load_profile(path: str | Path) -> SlurmProfile:
    """Read a profile file; unknown keys and wrong types are errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"slurm profile {path} not found: write one like slurm/v100.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return from_mapping(SlurmProfile, data, where=str(path))


@dataclass(frozen=True)
class JobFailure:
    """A call that ended without a result, in place of it (`run_jobs(contain=True)`)."""

    message: str  # the error with its traceback (the remote one for a job)
    log: str | None = None  # the job's stderr; None for a call run in this process


def run_jobs(
    fn: Callable[..., Any],
    calls: Sequence[Mapping[str, Any]],
    *,
    executor: str,
    profile: SlurmProfile | None = None,
    name: str = "heritageseg",
    log: Callable[[str], None] = print,
    contain: bool = False,
) -> list[Any]:
    """`fn(**call)` for each call, here or as jobs (several calls: one job array); blocks
    until all have ended and returns their results in order (rank 0's for multi-task jobs).
    A failure raises, or with `contain` takes its result's place as a JobFailure, after
    the other calls have run."""
    if executor == "local":
        return [_contained(fn, call) if contain else fn(**call) for call in calls]
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    profile = profile or SlurmProfile()
    backend = _make_executor(executor, profile, name)
    with backend.batch():
        jobs = [backend.submit(fn, **call) for call in calls]
    if executor == "debug":  # runs here, on result(); a failure opens pdb post-mortem
        return [_contained(job.result) if contain else job.result() for job in jobs]
    log(f"submitted {len(jobs)} job(s) to Slurm: {', '.join(j.job_id for j in jobs)}; "
        f"logs in {jobs[0].paths.folder}")  # fmt: skip
    try:
        wait(jobs, log=log)
    except KeyboardInterrupt:
        cancel(jobs, log)
        raise
    if not contain:
        return [_outcome(job) for job in jobs]
    return [_contained(_outcome, {"job": job}, str(_logs(job)[1])) for job in jobs]


def _contained(fn: Callable[..., Any], call: Mapping[str, Any] | None = None,
               log: str | None = None) -> Any:  # fmt: skip
    """fn(**call), or a JobFailure with the traceback if it raises (Ctrl-C still stops)."""
    import traceback

    try:
        return fn(**(call or {}))
    except Exception as error:
        remote = isinstance(error, LaunchError)  # already carries the remote traceback
        return JobFailure(str(error) if remote else traceback.format_exc(), log)


def _make_executor(kind: str, profile: SlurmProfile, name: str):
    import submitit

    # a folder per submission: a restarted cluster reuses job ids, and submitit would
    # otherwise pick up an old <id>_result.pkl as this job's result
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{os.getpid()}"
    folder = Path(profile.folder).absolute() / stamp / "%j"
    if kind == "debug":
        return submitit.DebugExecutor(folder)
    backend = submitit.SlurmExecutor(folder, max_num_timeout=profile.max_requeues)
    backend.update_parameters(**profile.sbatch(name))
    return backend


def wait(jobs: Sequence, *, log: Callable[[str], None] = print, poll_s: float = 1.0) -> None:
    """Poll until every job has ended, printing state changes and new log lines. Polls
    every `poll_s` at first, backing off to 15 s, so a long job costs few sacct calls."""
    states: dict[str, str] = {}
    tails = {job.job_id: [_LogTail(path) for path in _logs(job)] for job in jobs}
    start = time.monotonic()
    while True:
        finished = all(_ended(job) for job in jobs)
        jobs[0].watcher.update()  # after done(): the last round shows the final states
        for job in jobs:
            state = job.watcher.get_state(job.job_id, mode="cache")
            if states.get(job.job_id, "UNKNOWN") != state:
                states[job.job_id] = state
                log(f"job {job.job_id}: {state}")
            for tail in tails[job.job_id]:
                for line in tail.new_lines(final=finished):
                    log(f"[{job.job_id}] {line}")
        if finished:
            return
        time.sleep(min(15.0, poll_s + (time.monotonic() - start) / 30))


def _ended(job) -> bool:
    """Whether the job is over. submitit's `done()` trusts sacct, which can report a job
    requeued after a preemption or time-out as CANCELLED (and caches it) before slurmctld
    restarts it: a job without its result is over only when squeue no longer lists it."""
    return _has_result(job) or (job.done() and not _queued(job.job_id))


def _queued(job_id: str) -> bool:
    """squeue (slurmctld itself, not the accounting database) lists the job: it is pending,
    running or requeued."""
    import subprocess

    try:
        found = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format", "%T"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0 and bool(found.stdout.strip())


def _has_result(job) -> bool:
    """Every task of the job wrote its result (or its error) file."""
    tasks = [job.task(i) for i in range(job.num_tasks)] if job.num_tasks > 1 else [job]
    return all(task.paths.result_pickle.exists() for task in tasks)


def _logs(job) -> tuple[Path, Path]:
    """stdout and stderr of the job's first task (rank 0 of a multi-task job)."""
    first = job.task(0) if job.num_tasks > 1 else job
    return first.paths.stdout, first.paths.stderr


def cancel(jobs: Sequence, log: Callable[[str], None] = print) -> None:
    """scancel each job (Ctrl-C while waiting: nothing keeps running on the cluster)."""
    for job in jobs:
        job.cancel(check=False)
    log(f"cancelled job(s) {', '.join(job.job_id for job in jobs)}")


def _outcome(job) -> Any:
    """The job's result (rank 0's), or a LaunchError with the remote traceback or the
    final Slurm state, and where the log is."""
    import submitit

    stderr = _logs(job)[1]
    if not _has_result(job):
        state = job.watcher.get_state(job.job_id, mode="force")
        raise LaunchError(
            f"job {job.job_id} ended {state} without a result; log: {stderr}{_last_lines(stderr)}"
        )
    try:
        results = job.results()
    except submitit.core.utils.FailedJobError as error:
        raise LaunchError(f"job {job.job_id} failed; log: {stderr}\n{error}") from None
    return results[0]


def _last_lines(path: Path, count: int = 20) -> str:
    if not path.is_file():
        return ""
    lines = path.read_text(errors="replace").splitlines()[-count:]
    return "\n" + "\n".join(lines) if lines else ""


class _LogTail:
    """New complete lines of a growing log file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_lines(self, final: bool = False) -> list[str]:
        """Lines completed since the last call; `final`: the unterminated last one too."""
        if not self.path.is_file():
            return []
        with self.path.open("rb") as file:
            file.seek(self.offset)
            chunk = file.read()
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).replace(b"\r", b"\n").split(b"\n")
        if final:
            lines, self.partial = [*lines, self.partial], b""
        return [line.decode(errors="replace") for line in lines if line.strip()]


def prepare_job_process() -> None:
    """In a Slurm job: use the CPUs Slurm gave the task (without cgroups torch would take
    every core of the node), and in a multi-task job export RANK, WORLD_SIZE, MASTER_ADDR...
    for env:// (train.init_distributed reads them). GPUs stay those Slurm's GRES gave."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return
    if "SLURM_CPUS_PER_TASK" in os.environ:
        import torch

        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def job_labels() -> dict[str, str]:
    """Where this process runs on Slurm (job id, array index, node); empty elsewhere."""
    names = {"SLURM_JOB_ID": "slurm_job_id", "SLURM_ARRAY_TASK_ID": "slurm_array_index",
             "SLURMD_NODENAME": "slurm_node"}  # fmt: skip
    return {label: os.environ[var] for var, label in names.items() if var in os.environ}


class TrainJob:
    """`train.run_training` as a job that survives its time limit and preemption: on
    Slurm's USR2 submitit calls `checkpoint` and requeues the job, and the requeued job
    resumes from the state run_training saves after every epoch (never mid-save)."""

    def __call__(self, **kwargs: Any):
        from heritageseg.stages.train import run_training

        prepare_job_process()
        return dataclasses.replace(run_training(**kwargs), job=job_labels())

    def checkpoint(self, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(type(self)(), **{**kwargs, "fresh": False})


class StudyJob(TrainJob):
    """`study.run_study_run`: one (arch, seed, fold) trained and tested; requeued and
    resumed like TrainJob (its training saves every epoch), so the evaluation runs once."""

    def __call__(self, **kwargs: Any):
        from heritageseg.stages.study import run_study_run

        prepare_job_process()
        return {**run_study_run(**kwargs), "job": job_labels()}


def print_epoch(row: dict) -> None:
    """One line per epoch in a job's log (instead of progress bars), with where it ran."""
    where = " ".join(f"{k}={v}" for k, v in job_labels().items())
    print(
        f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, val mIoU "
        f"{row['val_miou']:.4f}, {row['epoch_seconds']:.1f} s {where}".rstrip(),
        flush=True,
    )
