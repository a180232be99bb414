"""`heritageseg bench gpu`: the GPU check's smoke mode on the CPU, so it never rots between loans.

No GPU here: the CUDA rows are reported as not run; the rest (training with the loss check,
the backends, two-process DDP over gloo, the loader rate, the report) runs for real.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from heritageseg.bench.gpu import GpuCheck, GpuReport, failures, gpu_markdown, train_check
from heritageseg.cli import main
from heritageseg.core.config import TrainConfig, with_overrides


@pytest.mark.slow
def test_smoke_mode_runs_every_section_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "gpu.md"
    # 8 steps (smoke's default 12): the losses still fall, in a third less of the suite's time
    assert (
        main(["bench", "gpu", "--device", "cpu", "--smoke", "--steps", "8", "--out", str(out)]) == 0
    )
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["smoke"] and report["environment"]["torch"] == torch.__version__
    for row in report["training"]:
        if row["precision"] == "fp16":
            assert row["status"].startswith("not run") and "CUDA" in row["status"]
        else:
            assert row["status"] == "ok" and row["last_loss"] < row["first_loss"]
            assert row["img_s"] > 0 and row["peak_memory_mb"] > 0
    ran = {(r["arch"], r["backend"]) for r in report["inference"] if r["status"] == "ok"}
    assert {(a, b) for a in ("convnext", "segformer", "maxvit") for b in ("eager", "bf16")} <= ran
    compiled = [r["status"] for r in report["inference"] if r["backend"] == "compile"]
    assert compiled == ["not run: compiled for no model (smoke mode)"] * 3  # test_backends has it
    for row in report["inference"]:
        if row["status"] == "ok":
            assert row["agreement"] > 0.9 and row["ms_per_image"] > 0
    ddp = report["ddp"]
    assert ddp["status"] == "ok" and ddp["backend"] == "gloo"
    assert ddp["ranks_same_weights"] and ddp["confusion_equal"]
    assert {r["arch"] for r in report["data"]} == {"convnext", "segformer", "maxvit"}
    text = out.read_text()
    for section in ("## Training", "## Inference", "## DDP", "## Data path", "no failures"):
        assert section in text
    assert "written to" in capsys.readouterr().out


def test_the_paper_check_without_cuda_says_how_to_run_on_a_cpu(capsys):
    assert main(["bench", "gpu"]) == 2
    assert "--device cpu --smoke" in capsys.readouterr().err
    assert main(["bench", "gpu", "--device", "cpu"]) == 2
    assert "add --smoke" in capsys.readouterr().err


def _tiny_check(lr: float) -> GpuCheck:
    train = TrainConfig()
    segformer = with_overrides(train.segformer, image_size=64, batch_size=2, lr=lr)
    return GpuCheck(torch.device("cpu"), replace(train, segformer=segformer), steps=8)


def _pool() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 64, 64, generator=generator)
    return images, torch.randint(0, 16, (4, 64, 64), generator=generator)


def test_the_training_check_lowers_the_loss_of_a_small_pool():
    row, model = train_check(_tiny_check(1e-3), "segformer", "fp32", _pool())
    assert row["status"] == "ok", row
    assert row["last_loss"] < row["first_loss"] and model is not None


def test_a_diverging_run_is_a_failure_in_the_report():
    row, model = train_check(_tiny_check(1e12), "segformer", "fp32", _pool())
    assert row["status"].startswith("FAILED") and model is None
    report = GpuReport(_tiny_check(1e12), training=[row])
    assert failures(report) == [f"segformer fp32: {row['status']}"]
    assert "failed: segformer fp32" in gpu_markdown(report)
