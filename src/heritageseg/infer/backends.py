"""Inference backends: one trained model, several ways to run its forward pass.

Every backend turns a model into a `Predict` function (normalised NCHW float32 batch ->
fine logits, float32, both NumPy arrays on the host), so `infer.sliding_window_predict`,
`evaluate` and `predict` take any of them. `BACKENDS` is the one table of them (name ->
builder and the facts the callers need); the CLI's choices, `available_backends` and every
error message are read from it. `eager` (fp32) is the reference the others are checked against:

- `bf16`: bf16 autocast + channels_last (native on CPUs with AVX512-BF16 or AMX).
- `fp16`: fp16 autocast + channels_last on CUDA (a CPU has no fp16 units).
- `compile`: `torch.compile` (inductor) under the device's half-precision autocast.
- `onnx`: exported to ONNX (dynamic batch, height and width) and run by onnxruntime.
- `int8`: the ONNX graph with static QDQ quantisation (per-channel weights, activations
  calibrated on a few train images) run by onnxruntime. A served model runs the int8 graph
  made at its registration (`serving_graphs`), where it labels like exact onnx.
- `int8-inductor`: static int8 in PyTorch itself: `torch.export`, torchao's PT2E
  `X86InductorQuantizer` (per-channel weights, calibrated activations), compiled by inductor
  into oneDNN int8 kernels. The fastest on x86 CPUs with VNNI (3-4x eager at 384 px), but it
  compiles for one input size and costs 30-110 s of compilation on two cores.

torch, onnx and onnxruntime are imported inside the functions: the CLI reads the table to
build its parser, and `heritageseg --help` should not pay torch's seconds of import; and a
served model that carries its exported graphs (`serving_predictor`) maps scans with
onnxruntime and NumPy alone, never importing torch (0.6 GB of RSS) or building the network.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import sha256_file
from heritageseg.core.paths import INT8_GRAPH, ONNX_GRAPH, WEIGHTS

if TYPE_CHECKING:
    import numpy as np
    import torch

    from heritageseg.infer.window import Predict

    # (model, device, example_size, calibration) -> Predict
    Builder = Callable[[torch.nn.Module, torch.device, int, torch.Tensor | None], Predict]

INDUCTOR_BATCH = 4  # int8-inductor's compiled batch size
# 20: GELU is one `Gelu` node, which onnxruntime keeps whole between int8 MatMuls / Convs
# (at 18 the int8 MiT-B3 graph ran it as Div/Erf/Add/Mul: int8 7.6 % slower, median of 10 pairs).
ONNX_OPSET = 20
# The backends that run an exported graph file, which a served model carries (made at
# registration, or by `export onnx [--int8]`): by backend, the file's name in models/ARCH.
GRAPH_FILES = {"onnx": ONNX_GRAPH, "int8": INT8_GRAPH}
# int8 serves by default only where its labels agree with exact onnx on this share of the
# validation pixels (1 %: the bound predict's window is held to; MaxViT's int8 misses it)
MIN_INT8_AGREEMENT = 0.99
_WEIGHTS_SHA256 = "heritageseg.weights_sha256"  # ONNX metadata: the weights a graph came from


class BackendError(HeritagesegError):
    """A backend that does not exist, or cannot run on this device."""


@dataclass(frozen=True)
class BackendSpec:
    """One row of `BACKENDS`: how to build the backend and where it can run."""

    build: Builder
    devices: tuple[str, ...]  # torch device types it runs on
    calibrated: bool = False  # needs calibration images to build (int8 activation ranges)
    # onnxruntime's per-core sessions: a second call keeps the cores busy while the first
    # waits for its slowest session (the sliding window runs `in_flight` calls at once)
    in_flight: int = 1


def _eager(model, device, size, calibration):
    return model_predictor(model)


def _bf16(model, device, size, calibration):
    import torch

    return _half_predictor(model, torch.bfloat16, device)


def _fp16(model, device, size, calibration):
    import torch

    return _half_predictor(model, torch.float16, device)


def _compile(model, device, size, calibration):
    return _compiled_predictor(model, device)


def _onnx(model, device, size, calibration):
    return onnx_predictor(export_onnx_bytes(model, size))


def _int8(model, device, size, calibration):
    return onnx_predictor(quantize_int8(export_onnx_bytes(model, size), calibration))


def _int8_inductor(model, device, size, calibration):
    return _inductor_int8_predictor(model, calibration)


_ANY = ("cpu", "cuda")
BACKENDS: dict[str, BackendSpec] = {
    "eager": BackendSpec(_eager, _ANY),
    "bf16": BackendSpec(_bf16, _ANY),
    "fp16": BackendSpec(_fp16, ("cuda",)),
    "compile": BackendSpec(_compile, _ANY),
    "onnx": BackendSpec(_onnx, ("cpu",), in_flight=2),  # onnxruntime's CPU execution provider
    "int8": BackendSpec(_int8, ("cpu",), calibrated=True, in_flight=2),
    "int8-inductor": BackendSpec(_int8_inductor, ("cpu",), calibrated=True),
}
CALIBRATED = tuple(name for name, spec in BACKENDS.items() if spec.calibrated)
CUDA_DEFAULT = "fp16"
# `predict`'s default on a CPU: the fastest backend within 0.5 mIoU points that needs no
# compilation at start-up (reports/inference.md: 2.4x / 1.4x eager for ConvNeXt-Tiny / MiT-B3
# at 384 px; int8-inductor is 4.4x / 2.9x but compiles for 30-110 s, which a handful of
# images never earns back). It runs the model's exported graph (`export onnx --int8`); a
# model registered without one falls back to exact `CPU_FALLBACK`.
DEFAULT_PREDICT_BACKEND = "int8"
CPU_FALLBACK = "onnx"
PREDICT_DEFAULT_HELP = (
    f"default: {DEFAULT_PREDICT_BACKEND} on a CPU when the model was registered with its "
    f"{INT8_GRAPH} (export onnx --int8), else {CPU_FALLBACK}; {CUDA_DEFAULT} on CUDA"
)


def backend_spec(name: str) -> BackendSpec:
    """The table's row for `name`; an unknown name fails with the list of valid ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendError(
            f"unknown inference backend {name!r}; valid: {', '.join(BACKENDS)}"
        ) from None


def check_backend(name: str) -> str:
    """`name` if the table has it, else a BackendError listing the valid names."""
    backend_spec(name)
    return name


def _kind(device: torch.device | str) -> str:
    """ "cpu" or "cuda" of a torch.device or its name ("cuda:1")."""
    return str(device).split(":")[0]


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that run on `device`, in the table's order."""
    kind = _kind(device)
    return [name for name, spec in BACKENDS.items() if kind in spec.devices]


def _check_device(name: str, device: torch.device | str) -> None:
    spec, kind = backend_spec(name), _kind(device)
    if kind not in spec.devices:
        raise BackendError(
            f"backend {name!r} runs on {' or '.join(spec.devices)} only, not on {kind}; "
            f"on {kind} choose one of {', '.join(available_backends(kind))}"
        )


def default_backend(device: torch.device | str) -> str:
    """What `predict` uses unless told otherwise: fp16 on CUDA, the measured best on a CPU."""
    return CUDA_DEFAULT if _kind(device) == "cuda" else DEFAULT_PREDICT_BACKEND


def cuda_available() -> bool:
    """Whether a CUDA device is visible. Asked of the driver (libcuda, as torch asks it) while
    torch is not imported, so that a served model deciding between its exported graph on a
    CPU and PyTorch on a GPU imports torch only for the GPU."""
    if "torch" in sys.modules:
        return sys.modules["torch"].cuda.is_available()
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:  # no NVIDIA driver on this machine
        return False
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    return count.value > 0


def cpu_cores() -> int:
    """The cores inference may use: a Slurm task's CPUs, else this process's affinity."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    return int(slurm) if slurm else len(os.sched_getaffinity(0))


def model_predictor(model: torch.nn.Module, autocast: Callable | None = None) -> Predict:
    """A segmentation model (fine or hierarchical heads) as a `Predict`, on its own device,
    under `autocast` when given. Like every PyTorch backend it also takes a batch that is a
    tensor already on that device (`bench gpu` times the network without the copy)."""
    import torch

    from heritageseg.nn.models import fine_logits

    model.eval()

    @torch.no_grad()
    def predict(batch: np.ndarray) -> np.ndarray:
        device = next(model.parameters()).device
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = fine_logits(model(torch.as_tensor(batch).to(device)))
        return logits.float().cpu().numpy()

    return predict


def build_predictor(
    model: torch.nn.Module,
    backend: str,
    device: torch.device | str = "cpu",
    example_size: int = 160,
    calibration: torch.Tensor | None = None,
) -> Predict:
    """`model` (fine or hierarchical heads) run by `backend` on `device` as a `Predict`.

    `example_size` is the side of the example input used to export or warm up; `calibration`
    (normalised N x 3 x H x W) is what the calibrated backends fit their activation ranges on.
    """
    import torch

    spec = backend_spec(backend)
    _check_device(backend, device)
    if spec.calibrated and calibration is None:
        raise BackendError(f"backend {backend} needs calibration images (calibration_images)")
    device = torch.device(device)
    return spec.build(model.eval().to(device), device, example_size, calibration)


def _half_predictor(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> Predict:
    import torch

    from heritageseg.nn.models import fine_logits

    model = model.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def predict(batch: np.ndarray) -> np.ndarray:
        images = torch.as_tensor(batch).to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype):
            return fine_logits(model(images)).float().cpu().numpy()

    return predict


def _compiled_predictor(model: torch.nn.Module, device: torch.device) -> Predict:
    """Inductor-compiled under half-precision autocast (fp32 where none is native)."""
    import torch

    from heritageseg.nn.engine import resolve_precision
    from heritageseg.nn.models import fine_logits

    precision = resolve_precision("auto", device)
    compiled = torch.compile(model.to(memory_format=torch.channels_last), dynamic=False)

    @torch.no_grad()
    def predict(batch: np.ndarray) -> np.ndarray:
        images = torch.as_tensor(batch).to(device).contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            return fine_logits(compiled(images)).float().cpu().numpy()

    return predict


def _inductor_int8_predictor(model: torch.nn.Module, calibration: torch.Tensor) -> Predict:
    """PT2E static int8 (x86 inductor quantizer), compiled for `calibration`'s image size.

    Exported and compiled for batches of `INDUCTOR_BATCH`: calls are cut or zero-padded to
    it, so no batch size ever triggers a second (long) compilation.
    """
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    from heritageseg.nn.models import FineOnly

    size = tuple(calibration.shape[-2:])
    chunks = calibration.float().split(INDUCTOR_BATCH)
    with torch.no_grad(), _quiet():
        exported = torch.export.export(
            FineOnly(model.cpu()).eval(), (_pad(chunks[0], INDUCTOR_BATCH),)
        ).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        for chunk in chunks:
            prepared(_pad(chunk, INDUCTOR_BATCH))
        quantized = convert_pt2e(prepared)
        compiled = torch.compile(quantized, dynamic=False)

    @torch.no_grad()
    def predict(images: np.ndarray) -> np.ndarray:
        if tuple(images.shape[-2:]) != size:
            raise BackendError(
                f"int8-inductor was compiled for {size[0]}x{size[1]} inputs, got "
                f"{images.shape[-2]}x{images.shape[-1]}: build it for that size"
            )
        outs = []
        with _freezing(), _quiet():
            for chunk in torch.as_tensor(images).float().cpu().split(INDUCTOR_BATCH):
                outs.append(compiled(_pad(chunk, INDUCTOR_BATCH))[: len(chunk)].float())
        return torch.cat(outs).numpy()

    return predict


def _pad(batch: torch.Tensor, size: int) -> torch.Tensor:
    """`batch` with zero images appended up to `size`."""
    import torch

    missing = size - len(batch)
    return torch.cat([batch, batch.new_zeros(missing, *batch.shape[1:])]) if missing else batch


@contextlib.contextmanager
def _freezing():
    """Inductor's weight freezing, which its int8 lowering needs, only while we compile."""
    import torch._inductor.config as inductor

    with inductor.patch(freezing=True):
        yield


def export_onnx_bytes(model: torch.nn.Module, example_size: int) -> bytes:
    """ONNX graph of `model` (input `image` N x 3 x H x W, output `logits`), fp32 weights.

    The TorchScript exporter: it traces smp U-Nets with timm and MiT encoders in seconds and
    keeps batch, height and width dynamic; the dynamo exporter is slower here and adds nothing.
    """
    import torch

    from heritageseg.nn.models import FineOnly

    example = torch.zeros(1, 3, example_size, example_size)
    wrapped = FineOnly(model.cpu()).eval()  # the exporter restores the wrapper's mode
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            wrapped, (example,), buffer, input_names=["image"],
            output_names=["logits"], dynamic_axes={"image": axes, "logits": axes},
            opset_version=ONNX_OPSET, dynamo=False,
        )  # fmt: skip
    return buffer.getvalue()


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def quantize_int8(graph: bytes, calibration: torch.Tensor) -> bytes:
    """Static QDQ int8: per-channel weights, activation ranges from `calibration` images."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": c[None].numpy()} for c in calibration.float()])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as folder:
        source, prepared, target = (Path(folder) / n for n in ("a.onnx", "b.onnx", "c.onnx"))
        source.write_bytes(graph)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        )  # fmt: skip
        return target.read_bytes()


def onnx_session(graph: bytes | str | Path, threads: int | None = None):
    """An onnxruntime CPU session with full graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or cpu_cores()
    options.log_severity_level = 3
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_predictor(graph: bytes | str | Path, workers: int | None = None) -> Predict:
    """An ONNX graph (bytes or a file) with input `image` and output `logits` as a `Predict`.

    A batch is split across `workers` single-threaded sessions (default: `cpu_cores()`), run
    side by side: on two cores that is 1.3x the tiles/s of one session with two
    intra-op threads (MiT-B0 at 96 px, fp32 and int8), whose small ops leave one thread
    waiting on the other. A batch smaller than that runs whole on one session with them all.
    The sessions write their logits straight into the one array returned (no copies)."""
    import functools
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    workers = workers or cpu_cores()
    whole = functools.cache(lambda: onnx_session(graph))  # built on the first small batch
    parts = [onnx_session(graph, threads=1) for _ in range(workers)] if workers > 1 else []
    classes = (parts or [whole()])[0].get_outputs()[0].shape[1]
    if not isinstance(classes, int):
        raise BackendError(f"ONNX graph: its logits' class dimension is not fixed ({classes})")
    pool = ThreadPoolExecutor(workers, thread_name_prefix="onnx") if parts else None

    def run(session, images: np.ndarray, logits: np.ndarray) -> None:
        binding = session.io_binding()
        binding.bind_cpu_input("image", images)
        binding.bind_output("logits", "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
        session.run_with_iobinding(binding)

    def predict(batch: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(batch, dtype=np.float32)
        logits = np.empty((len(images), classes, *images.shape[2:]), dtype=np.float32)
        if len(images) < len(parts) or pool is None:
            run(whole(), images, logits)
            return logits
        chunks = [slice(r[0], r[-1] + 1) for r in np.array_split(range(len(images)), len(parts))]
        list(pool.map(lambda s, c: run(s, images[c], logits[c]), parts, chunks))
        return logits

    return predict


def agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """Share of pixels whose predicted class is the same in two logit batches."""
    return float((reference.argmax(1) == other.argmax(1)).mean())


def calibration_images(
    cache: Path, size: int, mean: Sequence[float], std: Sequence[float], count: int = 16,
    split: str = "train",
) -> torch.Tensor:  # fmt: skip
    """`count` normalised images spread over the split: train images calibrate int8, validation
    images check it."""
    import numpy as np
    import torch

    from heritageseg.data.cache import CacheDataset
    from heritageseg.data.transforms import eval_transform

    transform = eval_transform(size, mean, std)
    dataset = CacheDataset(cache, split, transform)
    if len(dataset) == 0:
        raise HeritagesegError(f"{cache}: no {split} images to calibrate or check int8 on")
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return torch.stack([dataset[int(i)]["image"] for i in picks])


# ---------------------------------------------------------------- exported graphs


def weights_sha256(folder: Path) -> str:
    """sha256 of `folder`'s model.safetensors: which weights an exported graph was made from."""
    return sha256_file(Path(folder) / WEIGHTS)


def _stamped(graph: bytes, sha256: str) -> bytes:
    """`graph` with the weights' sha256 in its metadata, so a stale graph can be told apart."""
    import onnx

    proto = onnx.load_from_string(graph)
    entry = proto.metadata_props.add()
    entry.key, entry.value = _WEIGHTS_SHA256, sha256
    return proto.SerializeToString()


def graph_weights_sha256(graph: Path) -> str | None:
    """The weights' sha256 `export onnx` stamped into `graph`; None for an unstamped graph."""
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}.get(_WEIGHTS_SHA256)


def current_graph(folder: Path, backend: str) -> Path | None:
    """`folder`'s exported graph for `backend` (GRAPH_FILES) if it was exported from the
    folder's current weights; None when there is none, or it is stale: `train` keeps
    models/ARCH across runs (dvc `persist`), so a graph exported before the last training
    holds other weights (as does one exported before graphs were stamped)."""
    graph = Path(folder) / GRAPH_FILES[backend]
    if graph.is_file() and graph_weights_sha256(graph) == weights_sha256(folder):
        return graph
    return None


def export_trained_onnx(folder: Path, out: Path, *, int8: bool, cache: Path) -> dict:
    """models/ARCH -> ONNX at `out` (written atomically, stamped with the weights' sha256)
    after checking it against eager."""
    from heritageseg.nn.checkpoint import load_trained

    trained = load_trained(folder)
    graph = export_onnx_bytes(trained.network, trained.model.image_size)
    if int8:
        graph = _quantized(trained, graph, cache)
    return _write_checked(trained, folder, graph, out, exact=not int8)


def _quantized(trained, graph: bytes, cache: Path) -> bytes:
    size = trained.model.image_size
    return quantize_int8(graph, calibration_images(cache, size, trained.mean, trained.std))


def _write_checked(trained, folder: Path, graph: bytes, out: Path, *, exact: bool) -> dict:
    """Write `graph` to `out`, stamped, once onnxruntime agrees with eager on random images
    (`exact`: to 1e-2 in every logit); the figures of that check."""
    import numpy as np

    from heritageseg.core.fileio import atomic_write_bytes

    size = trained.model.image_size
    example = np.random.default_rng(0).standard_normal((2, 3, size, size), dtype=np.float32)
    reference = model_predictor(trained.network)(example)
    exported = onnx_predictor(graph)(example)
    check = {
        "max_abs_diff": float(np.abs(reference - exported).max()),
        "agreement": agreement(reference, exported),
    }
    if exact and check["max_abs_diff"] > 1e-2:
        raise BackendError(f"{out}: onnxruntime differs from eager by {check['max_abs_diff']:.3g}")
    atomic_write_bytes(out, _stamped(graph, weights_sha256(folder)))
    return check


def serving_graphs(folder: Path, cache: Path | None, out: Path) -> tuple[dict[str, Path], dict]:
    """The exported graphs a served model carries, by backend, and what int8 was checked to.

    `folder`'s own (`export onnx [--int8]`) where they hold its current weights, else
    exported into `out` now. int8 needs `cache`: calibrated on its train images, it is
    carried only where its labels agree with exact onnx on at least MIN_INT8_AGREEMENT of the
    pixels of its validation images (a warning says when not). A model the exporter cannot
    take carries no graph and is served by PyTorch (a warning says why)."""
    from heritageseg.nn.checkpoint import load_trained

    trained = load_trained(folder)
    graphs: dict[str, Path] = {}
    for backend, name in GRAPH_FILES.items():  # onnx first: int8 is quantised from it
        if backend == "int8" and cache is None:
            continue  # neither made nor checked without images
        graph = current_graph(folder, backend)
        if graph is None:
            fp32 = graphs["onnx"].read_bytes() if graphs else None
            try:
                graph = _export(trained, folder, fp32, cache, out / name)
            except Exception as exc:  # the exporter fails in many ways
                warnings.warn(f"{folder}: no {backend} graph for the served model ({exc}); it "
                              "runs in PyTorch instead", stacklevel=2)  # fmt: skip
                break
        graphs[backend] = graph
    if "int8" not in graphs:
        return graphs, {}
    return _checked_int8(trained, graphs, cache, folder)


def _export(trained, folder: Path, fp32: bytes | None, cache: Path | None, out: Path) -> Path:
    """The exact graph (`fp32` None) or int8 quantised from `fp32`, checked, at `out`."""
    if fp32 is None:
        graph = export_onnx_bytes(trained.network, trained.model.image_size)
    else:
        graph = _quantized(trained, fp32, cache)
    _write_checked(trained, folder, graph, out, exact=fp32 is None)
    return out


def _checked_int8(trained, graphs: dict[str, Path], cache: Path | None, folder: Path):
    """`graphs` without int8 where its labels stray from exact onnx's on the validation
    images; the agreement measured."""
    size = trained.model.image_size
    images = calibration_images(cache, size, trained.mean, trained.std, 64, "val").numpy()
    exact, int8 = (onnx_predictor(graphs[b])(images) for b in ("onnx", "int8"))
    share = agreement(exact, int8)
    if share < MIN_INT8_AGREEMENT:
        warnings.warn(
            f"{folder}: its int8 graph labels only {100 * share:.1f} % of the validation pixels "
            f"as exact onnx does (at least {100 * MIN_INT8_AGREEMENT:.0f} % needed): the served "
            "model runs exact onnx", stacklevel=2,
        )  # fmt: skip
        graphs = {k: v for k, v in graphs.items() if k != "int8"}
    return graphs, {"int8_agreement": share}


def serving_predictor(
    config: Path,
    weights: Path,
    backend: str | None,
    size: int,
    graphs: dict[str, Path],
    arch: str = "ARCH",
) -> tuple[str, Predict]:
    """(backend name, Predict) for a served model (the MLflow pyfunc), which carries its
    exported `graphs` (by backend) and no calibration images.

    A backend whose graph the model carries runs it in onnxruntime: neither torch nor the
    network is loaded. The default is fp16 on CUDA; on a CPU int8 where the model carries
    that graph, else exact onnx (exported from the weights now for a model registered
    before graphs were carried). Any other backend rebuilds the network in PyTorch."""
    device = "cuda" if cuda_available() else "cpu"
    chosen = check_backend(backend or default_backend(device))
    if chosen == "int8" and "int8" not in graphs and backend is None:
        chosen = CPU_FALLBACK
    if chosen in graphs:
        _check_device(chosen, device)
        return chosen, onnx_predictor(graphs[chosen])
    if backend_spec(chosen).calibrated:
        servable = [b for b in available_backends(device) if not BACKENDS[b].calibrated]
        if chosen == "int8":
            raise BackendError(
                f"backend int8: this model was registered without its int8 graph "
                f"({INT8_GRAPH}: made when `heritageseg evaluate --arch {arch}` registers it, "
                f"where its labels agree with exact onnx on "
                f"{100 * MIN_INT8_AGREEMENT:.0f} % of the validation pixels); choose one of "
                f"{', '.join(servable)}"
            )
        raise BackendError(
            f"backend {chosen} needs calibration images, which a served model does not carry: "
            f"choose one of {', '.join(servable)}"
        )
    from heritageseg.nn.checkpoint import load_checkpoint

    network = load_checkpoint(config, weights).network
    return chosen, build_predictor(network, chosen, device, size)
