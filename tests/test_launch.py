"""heritageseg.ops.launch without a cluster: profile files, the sbatch settings they become,
the local and debug executors, and the log tail (test_slurm.py runs the real cluster)."""

from __future__ import annotations

import functools
import operator

import pytest
import yaml

from heritageseg.core.config import load_params
from heritageseg.core.errors import ConfigError
from heritageseg.ops.launch import SlurmProfile, _LogTail, load_profile, run_jobs

from .conftest import ROOT


def test_the_shipped_profile_becomes_sbatch_settings_with_gres_gpus():
    path = ROOT / "slurm" / "v100.yaml"
    shipped = yaml.safe_load(path.read_text())
    settings = load_profile(path).sbatch("train-all")
    assert settings["job_name"] == "train-all"
    for key in ("partition", "gpus_per_node", "cpus_per_task", "signal_delay_s"):
        assert settings[key] == shipped[key], key
    assert settings["ntasks_per_node"] == shipped["tasks_per_node"]
    assert settings["time"] == shipped["time_min"]
    assert settings["mem"] == f"{int(shipped['mem_gb'] * 1024)}MB"
    for key in ("account", "qos", "constraint"):  # null: left to the cluster's defaults
        assert (key in settings) == (shipped[key] is not None), key


def test_profile_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("partition: gpu\ngpus: 2\n")
    with pytest.raises(ConfigError, match=r"cluster.yaml: unknown key\(s\) gpus"):
        load_profile(path)
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="signal_delay_s=120"):
        SlurmProfile(time_min=1, signal_delay_s=120)


def test_params_launch_section_defaults_to_running_here():
    launch = load_params(ROOT / "params.yaml").launch
    assert launch.executor == "local"  # `make repro` needs no cluster
    load_profile(ROOT / launch.profile)  # and the profile `--executor slurm` takes is there


def test_local_and_debug_executors_return_results_in_order(tmp_path):
    calls = [{"b": 2}, {"b": 5}]
    add_one = functools.partial(operator.add, 1)
    profile = SlurmProfile(folder=str(tmp_path))
    assert run_jobs(lambda b: 1 + b, calls, executor="local") == [3, 6]
    assert run_jobs(lambda b: add_one(b), calls, executor="debug", profile=profile) == [3, 6]
    with pytest.raises(ConfigError, match="executor 'kubernetes'"):
        run_jobs(add_one, calls, executor="kubernetes")


def test_log_tail_returns_each_complete_line_once(tmp_path):
    log = tmp_path / "job.out"
    tail = _LogTail(log)
    assert tail.new_lines() == []
    log.write_text("epoch 1\nepo")
    assert tail.new_lines() == ["epoch 1"]
    with log.open("a") as stream:
        stream.write("ch 2\r\nlast")
    assert tail.new_lines() == ["epoch 2"]
    assert tail.new_lines(final=True) == ["last"]
