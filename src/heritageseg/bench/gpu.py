"""`heritageseg bench gpu`: one short run that proves every CUDA path and measures it.

A GPU is lent for minutes, so the check makes its own synthetic records (no download),
keeps to a time budget (a section that would start after it is reported as not run) and
rewrites its report after every section, so a run cut short still leaves what it measured.
`--smoke` runs the same code with the laptop models on the CPU, which keeps it from rotting
between GPU loans (it runs in `make test`).

Sections: the software and device; training img/s, peak memory and a loss check per model and
precision (fp16 with a GradScaler, bf16); inference img/s per backend at batch 32 with pixel
agreement against fp32, beside the reference's V100 figures; two-process DDP whose reduced
metrics must equal one process's; the cached loader's sample rate against the training rate.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from heritageseg.core.classes import NUM_CLASSES
from heritageseg.core.config import ARCHS, IngestConfig, ModelConfig, TrainConfig
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import atomic_write_text, write_json
from heritageseg.data.cache import CacheDataset
from heritageseg.data.transforms import eval_transform, normalization
from heritageseg.infer.backends import BACKENDS, build_predictor
from heritageseg.infer.window import Predict
from heritageseg.nn.engine import (
    NonFiniteLossError,
    evaluate,
    peak_memory_mb,
    reset_peak_memory,
    resolve_precision,
    train_one_epoch,
)
from heritageseg.nn.losses import build_loss
from heritageseg.nn.models import build_model

# The reference's inference figures (ARTeFACT, WACV 2025), measured on a V100 at 384 px: the
# reference's, on other hardware, shown beside ours for scale only.
REFERENCE_V100_IMG_S = {"convnext": 122.6, "segformer": 81.9, "maxvit": 65.1}
REFERENCE_V100_TRAIN = "SegFormer-B3 U-Net: ~10 h for 50 epochs on one V100"
PRECISIONS = ("fp16", "bf16")
INFER_BACKENDS = ("eager", "fp16", "bf16", "compile")
DDP_WORLD = 2  # processes in the DDP check
CHUNKS = 4  # the training steps run as this many passes: the first warms up, losses compared


@dataclass(frozen=True)
class GpuCheck:
    """What to run; `bench_gpu` fills `GpuReport` from it."""

    device: torch.device
    train: TrainConfig  # the models (paper sizes, or the laptop's for --smoke) and the loss
    steps: int = 160  # training steps per model and precision
    infer_batch: int = 32
    infer_batches: int = 6
    records: int = 140  # synthetic records drawn (the train split feeds the pool)
    record_size: tuple[int, int] = (256, 640)
    loader_workers: int = 8
    budget_s: float = 420.0
    compile_archs: tuple[str, ...] = ARCHS  # inductor: ~1 min a model on two cores (smoke: none)
    smoke: bool = False

    def models(self) -> dict[str, ModelConfig]:
        return {arch: replace(self.train.model(arch), encoder_weights=None) for arch in ARCHS}


@dataclass
class GpuReport:
    check: GpuCheck
    environment: dict = field(default_factory=dict)
    training: list[dict] = field(default_factory=list)
    inference: list[dict] = field(default_factory=list)
    ddp: dict = field(default_factory=dict)
    data: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "device": str(self.check.device), "smoke": self.check.smoke,
            "steps": self.check.steps, "infer_batch": self.check.infer_batch,
            "environment": self.environment, "training": self.training,
            "inference": self.inference, "ddp": self.ddp, "data": self.data,
        }  # fmt: skip


class Deadline:
    """The time budget: sections past it are reported as not run."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def spent(self) -> str | None:
        if time.monotonic() > self.end:
            return f"not run: the {self.seconds:.0f} s time budget was spent"
        return None


def environment(device: torch.device) -> dict:
    """Versions of everything a GPU figure depends on."""
    facts = {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(), "gpus_visible": torch.cuda.device_count(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts |= {
            "device": props.name, "memory_gb": props.total_memory / 2**30,
            "capability": f"{props.major}.{props.minor}", "driver": _driver_version(),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }  # fmt: skip
    else:
        facts["device"] = f"CPU ({facts['cpu']})"
    return facts


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # no NVML: ask nvidia-smi
        import subprocess

        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=True,
            )  # fmt: skip
            return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return None


# ---------------------------------------------------------------- the synthetic pool


def synthetic_cache(check: GpuCheck, folder: Path) -> tuple[Path, Path]:
    """Synthetic ARTeFACT records and their resize cache at the models' image size."""
    from heritageseg.bench.data import prepare_bench_cache

    sizes = {cfg.image_size for cfg in check.models().values()}
    if len(sizes) != 1:
        raise HeritagesegError(f"bench gpu needs one image size for all models, got {sizes}")
    low, high = check.record_size
    ingest = IngestConfig(n=check.records, min_size=low, max_size=high, on_error="fail")
    return prepare_bench_cache(ingest, folder, sizes.pop())


def image_pool(cache: Path, model: ModelConfig, device: torch.device) -> tuple:
    """The cached train split, normalised for `model`'s encoder, on `device`."""
    mean, std = normalization(model.encoder)
    dataset = CacheDataset(cache, "train", eval_transform(model.image_size, mean, std))
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([i["image"] for i in items]).to(device)
    masks = torch.stack([i["mask"] for i in items]).long().to(device)
    return images, masks


def _batches(images: torch.Tensor, masks: torch.Tensor, batch: int, steps: int, seed: int):
    """`steps` batches drawn from the pool (with replacement across batches)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randperm(len(images), generator=generator)[:batch]
        index = pick.repeat(math.ceil(batch / len(pick)))[:batch].to(images.device)
        yield {"image": images[index], "mask": masks[index]}


# ---------------------------------------------------------------- training


def _seeded_model(cfg: ModelConfig, device: torch.device, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg).to(device).to(memory_format=torch.channels_last)


def train_check(
    check: GpuCheck, arch: str, precision_name: str, pool: tuple
) -> tuple[dict, torch.nn.Module | None]:
    """Training img/s, peak memory and whether `steps` steps lowered the loss, all finite."""
    cfg = check.models()[arch]
    row = {"arch": arch, "encoder": cfg.encoder, "image_size": cfg.image_size,
           "batch_size": cfg.batch_size, "precision": precision_name}  # fmt: skip
    device = check.device
    try:
        precision = resolve_precision(precision_name, device)
    except HeritagesegError as error:
        return row | {"status": f"not run: {error}"}, None
    cuda_bf16 = precision.dtype is torch.bfloat16 and device.type == "cuda"
    if cuda_bf16 and not torch.cuda.is_bf16_supported():
        return row | {"status": "not run: this GPU has no bf16"}, None
    model = _seeded_model(cfg, device, check.train.seed)
    loss_fn = build_loss(check.train.loss, torch.ones(NUM_CLASSES, device=device), cfg.head)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=check.train.lr_for(arch), weight_decay=check.train.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scale_grads)
    per_chunk = max(1, check.steps // CHUNKS)
    losses, seconds = [], []
    reset_peak_memory(device)
    try:
        for chunk in range(CHUNKS):
            stats = train_one_epoch(
                model, _batches(*pool, cfg.batch_size, per_chunk, seed=chunk), loss_fn,
                optimizer, precision=precision, scaler=scaler,
                clip_grad_norm=check.train.clip_grad_norm, channels_last=True, device=device,
                progress=False, description=f"{arch} {precision_name}",
            )  # fmt: skip
            _synchronize(device)
            losses.append(stats.loss)
            seconds.append(stats.seconds)
    except NonFiniteLossError as error:
        return row | {"status": "FAILED", "error": str(error), "losses": losses}, None
    except torch.cuda.OutOfMemoryError:
        return row | {"status": "FAILED: out of GPU memory at this batch size"}, None
    timed = seconds[1:] or seconds  # the first pass pays for cuDNN autotuning and warm-up
    rate = per_chunk * cfg.batch_size * len(timed) / sum(timed)
    lowered = losses[-1] < losses[0]
    row |= {
        "status": "ok" if lowered else "FAILED: the loss did not go down",
        "steps": per_chunk * CHUNKS, "img_s": rate, "peak_memory_mb": peak_memory_mb(device),
        "first_loss": losses[0], "last_loss": losses[-1], "losses": losses,
        "scaler_scale": scaler.get_scale() if scaler.is_enabled() else None,
    }  # fmt: skip
    return row, model


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- inference


def infer_check(check: GpuCheck, arch: str, model: torch.nn.Module, images: torch.Tensor) -> list:
    """img/s and ms/img per backend at `infer_batch`, and pixel agreement with eager fp32."""
    batch = images[: check.infer_batch]
    if len(batch) < check.infer_batch:
        batch = batch.repeat(math.ceil(check.infer_batch / len(batch)), 1, 1, 1)
        batch = batch[: check.infer_batch]
    rows, reference = [], None
    for backend in INFER_BACKENDS:
        row = {"arch": arch, "backend": backend, "batch_size": len(batch),
               "reference_v100_img_s": REFERENCE_V100_IMG_S[arch]}  # fmt: skip
        if check.device.type not in BACKENDS[backend].devices:
            rows.append(row | {"status": f"not run: {backend} needs CUDA"})
            continue
        if backend == "compile" and arch not in check.compile_archs:
            compiled = ", ".join(check.compile_archs) or "no model (smoke mode)"
            rows.append(row | {"status": f"not run: compiled for {compiled}"})
            continue
        try:
            start = time.perf_counter()
            predict = build_predictor(copy.deepcopy(model), backend, check.device, batch.shape[-1])
            labels = predict(batch).argmax(1)  # warm-up (and compilation); numpy
            setup_s = time.perf_counter() - start
            rate = _images_per_second(predict, batch, check.infer_batches)
        except Exception as error:  # a backend that breaks is the finding, not the end
            rows.append(row | {"status": f"FAILED: {type(error).__name__}: {error}"[:500]})
            continue
        reference = labels if reference is None else reference
        rows.append(row | {
            "status": "ok", "img_s": rate, "ms_per_image": 1000.0 / rate, "setup_s": setup_s,
            "agreement": float((labels == reference).mean()),
        })  # fmt: skip
    return rows


def _images_per_second(predict: Predict, batch: torch.Tensor, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        predict(batch)  # every backend returns host logits: each call has finished on the device
    return len(batch) * repeats / (time.perf_counter() - start)


# ---------------------------------------------------------------- DDP


def ddp_check(check: GpuCheck, pool: tuple, folder: Path) -> dict:
    """Two processes train a few steps (NCCL on two GPUs, gloo on the CPU in smoke mode) and
    evaluate their halves; their reduced metrics must equal one process evaluating it all."""
    if check.device.type == "cuda" and torch.cuda.device_count() < 2:
        return {"status": f"not run: {torch.cuda.device_count()} GPU visible, DDP needs two"}
    backend = "nccl" if check.device.type == "cuda" else "gloo"
    cfg = check.models()["segformer"]
    cfg = replace(cfg, batch_size=DDP_WORLD * math.ceil(cfg.batch_size / DDP_WORLD))
    images, masks = (t.cpu() for t in pool)
    torch.save({"images": images, "masks": masks}, folder / "pool.pt")
    start = time.perf_counter()
    torch.multiprocessing.start_processes(
        _ddp_rank, args=(DDP_WORLD, backend, cfg, check.train, str(folder)), nprocs=DDP_WORLD,
        start_method="spawn",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(DDP_WORLD)]
    same_weights = all(
        torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]) for k in ranks[0]["state"]
    )
    single = _seeded_model(cfg, check.device, 0)
    single.load_state_dict(ranks[0]["state"])
    whole = evaluate(
        single, _in_order(images, masks, check.device, cfg.batch_size // DDP_WORLD), None,
        precision=resolve_precision("fp32", check.device), device=check.device,
    )  # fmt: skip
    equal = torch.equal(ranks[0]["confusion"], whole.confusion.matrix)
    return {
        "status": "ok" if equal and same_weights else "FAILED",
        "backend": backend, "processes": DDP_WORLD, "seconds": seconds,
        "ranks_same_weights": same_weights, "confusion_equal": equal,
        "images": len(images),
        "train_loss_reduced": ranks[0]["train_loss"],
    }  # fmt: skip


def _in_order(images, masks, device, batch):
    """`images` in batches of `batch`, in order: a rank's shard, or the single process's all."""
    for i in range(0, len(images), batch):
        yield {"image": images[i : i + batch].to(device), "mask": masks[i : i + batch].to(device)}


def _ddp_rank(rank: int, world: int, backend: str, cfg, train: TrainConfig, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        backend, init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
    )
    try:
        device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(1)
        pool = torch.load(Path(folder) / "pool.pt", weights_only=True)
        images, masks = pool["images"][rank::world], pool["masks"][rank::world]
        model = _seeded_model(cfg, device, 0)
        ids = [device] if device.type == "cuda" else None
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        fp32 = resolve_precision("fp32", device)
        loss_fn = build_loss(train.loss, torch.ones(NUM_CLASSES, device=device), cfg.head)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        stats = train_one_epoch(
            ddp, _batches(images.to(device), masks.to(device), cfg.batch_size // world, 3, 0),
            loss_fn, optimizer, precision=fp32, device=device, progress=False,
        )  # fmt: skip
        for buffer in model.buffers():  # BatchNorm statistics: rank 0's, as DDP's forward does
            dist.broadcast(buffer, 0)
        shard = _in_order(images, masks, device, cfg.batch_size // world)
        result = evaluate(model, shard, None, precision=fp32, device=device)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        out = {"state": state, "confusion": result.confusion.matrix, "train_loss": stats.loss}
        torch.save(out, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- data path


def data_check(check: GpuCheck, raw: Path, cache: Path, training: list[dict]) -> list[dict]:
    """The memmap cache's training-loader rate against each model's consumption."""
    from heritageseg.bench.data import measure_loader

    size = next(iter(check.models().values())).image_size
    loader = measure_loader("cache", raw, cache, size, check.loader_workers)
    rows = []
    for row in training:
        if row.get("status") != "ok":
            continue
        ratio = loader["img_s"] / row["img_s"]
        rows.append({
            "arch": row["arch"], "precision": row["precision"], "model_img_s": row["img_s"],
            "loader_img_s": loader["img_s"], "loader_workers": check.loader_workers,
            "ratio": ratio, "gpu_waits": ratio < 1.0,
        })  # fmt: skip
    return rows


# ---------------------------------------------------------------- the run


def bench_gpu(check: GpuCheck, out: Path) -> GpuReport:
    """Every section in turn, the report rewritten after each."""
    report = GpuReport(check)
    deadline = Deadline(check.budget_s)
    report.environment = environment(check.device)
    write_gpu_report(report, out)
    if check.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(prefix="heritageseg-gpu-") as work:
        raw, cache = synthetic_cache(check, Path(work))
        for arch, cfg in check.models().items():
            pool = image_pool(cache, cfg, check.device)
            trained = None
            for precision in PRECISIONS:
                if spent := deadline.spent():
                    report.training.append({"arch": arch, "precision": precision, "status": spent})
                    continue
                row, model = train_check(check, arch, precision, pool)
                report.training.append(row)
                trained = model if trained is None else trained
                write_gpu_report(report, out)
            if spent := deadline.spent():
                report.inference.append({"arch": arch, "status": spent})
            else:
                model = trained if trained is not None else _seeded_model(cfg, check.device, 0)
                report.inference += infer_check(check, arch, model.eval(), pool[0])
            del pool, trained
            write_gpu_report(report, out)
        if spent := deadline.spent():
            report.ddp = {"status": spent}
        else:
            pool = image_pool(cache, check.models()["segformer"], torch.device("cpu"))
            report.ddp = ddp_check(check, pool, Path(work))
        write_gpu_report(report, out)
        if spent := deadline.spent():
            report.data = [{"status": spent}]
        else:
            report.data = data_check(check, raw, cache, report.training)
    write_gpu_report(report, out)
    return report


def failures(report: GpuReport) -> list[str]:
    """The rows that failed (not those that could not run here)."""
    rows = [*report.training, *report.inference, report.ddp]
    return [
        f"{r.get('arch', 'ddp')} {r.get('precision') or r.get('backend') or ''}: {r['status']}"
        for r in rows
        if str(r.get("status", "")).startswith("FAILED")
    ]


def write_gpu_report(report: GpuReport, out: Path) -> None:
    """reports/gpu.md and, beside it, the same figures as gpu.json."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, gpu_markdown(report))
    write_json(out.with_suffix(".json"), report.as_dict())


def _figure(row: dict, key: str, digits: int = 1) -> str:
    value = row.get(key)
    return "" if value is None else f"{value:.{digits}f}"


def gpu_markdown(report: GpuReport) -> str:
    env, check = report.environment, report.check
    lines = [
        "# GPU check" + (" (smoke mode: laptop models on the CPU)" if check.smoke else ""),
        "",
        f"- device: **{env.get('device')}** ({check.device}); driver {env.get('driver')}, "
        f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, torch {env.get('torch')}, "
        f"Python {env.get('python')}; {env.get('gpus_visible')} GPU(s) visible "
        f"(CUDA_VISIBLE_DEVICES={env.get('cuda_visible_devices')})",
        f"- synthetic ARTeFACT-schema records made here ({check.records}, "
        f"{check.record_size[0]}-{check.record_size[1]} px, resized to the models' size); "
        f"{check.steps} training steps per model and precision, channels_last, AdamW at the "
        "params' learning rate; the first quarter warms up and is not timed",
        "",
        "## Training",
        "",
        "| arch | encoder | px | batch | precision | img/s | peak MB (GPU; CPU: RSS) "
        "| loss first → last | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.training:
        loss = f"{r['first_loss']:.3f} → {r['last_loss']:.3f}" if "first_loss" in r else ""
        lines.append(
            f"| {r['arch']} | {r.get('encoder', '')} | {r.get('image_size', '')} "
            f"| {r.get('batch_size', '')} | {r['precision']} | {_figure(r, 'img_s')} "
            f"| {_figure(r, 'peak_memory_mb', 0)} | {loss} | {r['status']} |"
        )
    lines += [
        "", f"Reference (V100, other hardware): {REFERENCE_V100_TRAIN}.", "",
        "## Inference", "",
        f"Batch {check.infer_batch}, {check.infer_batches} timed batches after a warm-up; "
        "times include copying the logits to the host, as `predict` does; agreement = share "
        "of pixels with eager fp32's label (the model trained above). The reference's "
        "figures are the reference's, measured on a V100.",
        "",
        "| arch | backend | img/s | ms/img | agreement | setup s | reference V100 img/s "
        "| status |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in report.inference:
        lines.append(
            f"| {r['arch']} | {r.get('backend', '')} | {_figure(r, 'img_s')} "
            f"| {_figure(r, 'ms_per_image', 2)} | {_figure(r, 'agreement', 4)} "
            f"| {_figure(r, 'setup_s')} | {r.get('reference_v100_img_s', '')} | {r['status']} |"
        )
    lines += ["", "## DDP", "", _ddp_line(report.ddp), "", "## Data path", ""]
    for r in report.data:
        if "arch" not in r:
            lines.append(f"- {r['status']}")
            continue
        verdict = "the GPU waits for data" if r["gpu_waits"] else "the loader keeps ahead"
        lines.append(
            f"- {r['arch']} {r['precision']}: model {r['model_img_s']:.1f} img/s, cached loader "
            f"{r['loader_img_s']:.1f} img/s with {r['loader_workers']} workers "
            f"({r['ratio']:.1f}x): {verdict}"
        )
    failed = failures(report)
    lines += ["", "## Verdict", "", f"- failed: {'; '.join(failed)}" if failed else "- no failures"]
    return "\n".join(lines) + "\n"


def _ddp_line(ddp: dict) -> str:
    if not ddp:
        return "- not reached"
    if "backend" not in ddp:
        return f"- {ddp['status']}"
    return (
        f"- {ddp['processes']} processes over {ddp['backend']}, 3 steps, then each evaluates "
        f"its half: ranks hold the same weights: {ddp['ranks_same_weights']}; the reduced "
        f"confusion matrix equals one process's over all {ddp['images']} images: "
        f"{ddp['confusion_equal']} ({ddp['seconds']:.0f} s): **{ddp['status']}**"
    )
