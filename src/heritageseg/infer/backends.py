"""Inference backends: one trained model, several ways to run its forward pass.

Every backend turns a model into a `Predict` function (normalised NCHW float batch -> fine
logits, float32 on the CPU), so `infer.sliding_window_predict`, `evaluate` and `predict` take
any of them. `BACKENDS` is the one table of them (name -> builder and the facts the callers
need); the CLI's choices, `available_backends` and every error message are read from it.
`eager` (fp32) is the reference the others are checked against:

- `bf16`: bf16 autocast + channels_last (native on CPUs with AVX512-BF16 or AMX).
- `fp16`: fp16 autocast + channels_last on CUDA (a CPU has no fp16 units).
- `compile`: `torch.compile` (inductor) under the device's half-precision autocast.
- `onnx`: exported to ONNX (dynamic batch, height and width) and run by onnxruntime.
- `int8`: the ONNX graph with static QDQ quantisation (per-channel weights, activations
  calibrated on a few train images) run by onnxruntime. Served models run the graph
  `export onnx --int8` calibrated, logged beside the weights (`serving_predictor`).
- `int8-inductor`: static int8 in PyTorch itself: `torch.export`, torchao's PT2E
  `X86InductorQuantizer` (per-channel weights, calibrated activations), compiled by inductor
  into oneDNN int8 kernels. The fastest on x86 CPUs with VNNI (3-4x eager at 384 px), but it
  compiles for one input size and costs 30-110 s of compilation on two cores.

torch, onnx and onnxruntime are imported inside the functions: the CLI reads the table to
build its parser, and `heritageseg --help` should not pay torch's seconds of import.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import sha256_file
from heritageseg.core.paths import INT8_GRAPH, WEIGHTS

if TYPE_CHECKING:
    import torch

    from heritageseg.infer.window import Predict

    # (model, device, example_size, calibration) -> Predict
    Builder = Callable[[torch.nn.Module, torch.device, int, torch.Tensor | None], Predict]

INDUCTOR_BATCH = 4  # int8-inductor's compiled batch size
# 20: GELU is one `Gelu` node, which onnxruntime keeps whole between int8 MatMuls / Convs
# (at 18 the int8 MiT-B3 graph ran it as Div/Erf/Add/Mul: int8 7.6 % slower, median of 10 pairs).
ONNX_OPSET = 20
GRAPH_BACKEND = "int8"  # the backend a served model's INT8_GRAPH runs as
_WEIGHTS_SHA256 = "heritageseg.weights_sha256"  # ONNX metadata: the weights a graph came from


class BackendError(HeritagesegError):
    """A backend that does not exist, or cannot run on this device."""


@dataclass(frozen=True)
class BackendSpec:
    """One row of `BACKENDS`: how to build the backend and where it can run."""

    build: Builder
    devices: tuple[str, ...]  # torch device types it runs on
    calibrated: bool = False  # needs calibration images to build (int8 activation ranges)


def _eager(model, device, size, calibration):
    from heritageseg.infer.window import model_predictor

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
    "onnx": BackendSpec(_onnx, ("cpu",)),  # onnxruntime's CPU execution provider
    "int8": BackendSpec(_int8, ("cpu",), calibrated=True),
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


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that run on `device`, in the table's order."""
    import torch

    kind = torch.device(device).type
    return [name for name, spec in BACKENDS.items() if kind in spec.devices]


def _check_device(name: str, device: torch.device | str) -> None:
    import torch

    spec, kind = backend_spec(name), torch.device(device).type
    if kind not in spec.devices:
        raise BackendError(
            f"backend {name!r} runs on {' or '.join(spec.devices)} only, not on {kind}; "
            f"on {kind} choose one of {', '.join(available_backends(kind))}"
        )


def default_backend(device: torch.device) -> str:
    """What `predict` uses unless told otherwise: fp16 on CUDA, the measured best on a CPU."""
    return CUDA_DEFAULT if device.type == "cuda" else DEFAULT_PREDICT_BACKEND


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
    def predict(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype):
            return fine_logits(model(batch)).float().cpu()

    return predict


def _compiled_predictor(model: torch.nn.Module, device: torch.device) -> Predict:
    """Inductor-compiled under half-precision autocast (fp32 where none is native)."""
    import torch

    from heritageseg.nn.engine import resolve_precision
    from heritageseg.nn.models import fine_logits

    precision = resolve_precision("auto", device)
    compiled = torch.compile(model.to(memory_format=torch.channels_last), dynamic=False)

    @torch.no_grad()
    def predict(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device).contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            return fine_logits(compiled(batch)).float().cpu()

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
    def predict(images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != size:
            raise BackendError(
                f"int8-inductor was compiled for {size[0]}x{size[1]} inputs, got "
                f"{images.shape[-2]}x{images.shape[-1]}: build it for that size"
            )
        outs = []
        with _freezing(), _quiet():
            for chunk in images.float().cpu().split(INDUCTOR_BATCH):
                outs.append(compiled(_pad(chunk, INDUCTOR_BATCH))[: len(chunk)].float())
        return torch.cat(outs)

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
    import torch

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_predictor(graph: bytes | str | Path, workers: int | None = None) -> Predict:
    """An ONNX graph (bytes or a file) with input `image` and output `logits` as a `Predict`.

    A batch is split across `workers` single-threaded sessions (default: torch's thread
    count), run side by side: on two cores that is 1.3x the tiles/s of one session with two
    intra-op threads (MiT-B0 at 96 px, fp32 and int8), whose small ops leave one thread
    waiting on the other. A batch smaller than that runs whole on one session with them all."""
    import functools
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    workers = workers or torch.get_num_threads()
    whole = functools.cache(lambda: onnx_session(graph))  # built on the first small batch
    if workers == 1:
        whole()  # a graph that does not load fails here, not at the first batch
    parts = [onnx_session(graph, threads=1) for _ in range(workers)] if workers > 1 else []
    pool = ThreadPoolExecutor(workers, thread_name_prefix="onnx") if parts else None

    def run(session, array: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"image": array})[0]

    def predict(batch: torch.Tensor) -> torch.Tensor:
        array = batch.float().cpu().numpy()
        if len(array) < len(parts) or pool is None:
            return torch.from_numpy(run(whole(), array))
        chunks = np.array_split(array, len(parts))
        return torch.from_numpy(np.concatenate(list(pool.map(run, parts, chunks))))

    return predict


def agreement(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Share of pixels whose predicted class is the same in two logit batches."""
    return float((reference.argmax(1) == other.argmax(1)).float().mean())


def calibration_images(
    cache: Path, size: int, mean: Sequence[float], std: Sequence[float], count: int = 16
) -> torch.Tensor:
    """`count` normalised train images spread over the split, for int8 calibration."""
    import numpy as np
    import torch

    from heritageseg.data.cache import CacheDataset
    from heritageseg.data.transforms import eval_transform

    transform = eval_transform(size, mean, std)
    dataset = CacheDataset(cache, "train", transform)
    if len(dataset) == 0:
        raise HeritagesegError(f"{cache}: no train images to calibrate int8 on")
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


def exported_int8_graph(folder: Path) -> Path | None:
    """`folder`/model.int8.onnx if it was exported from `folder`'s current weights.

    `train` keeps models/ARCH across runs (dvc `persist`), so a graph exported before the
    last training would serve other weights than the ones evaluated: such a graph, or one
    exported before graphs were stamped, is left out with a warning saying how to re-export.
    """
    graph = Path(folder) / INT8_GRAPH
    if not graph.is_file():
        return None
    if graph_weights_sha256(graph) != weights_sha256(folder):
        warnings.warn(
            f"{graph} was not exported from {folder}'s current model.safetensors: left out of "
            f"the served model (exact {CPU_FALLBACK} instead); re-run `heritageseg export onnx "
            f"--arch {Path(folder).name} --int8` and evaluate again to serve int8",
            stacklevel=2,
        )
        return None
    return graph


def export_trained_onnx(folder: Path, out: Path, *, int8: bool, cache: Path) -> dict:
    """models/ARCH -> ONNX at `out` (written atomically, stamped with the weights' sha256)
    after checking it against eager."""
    import torch

    from heritageseg.core.fileio import atomic_write_bytes
    from heritageseg.infer.window import model_predictor
    from heritageseg.nn.checkpoint import load_trained

    trained = load_trained(folder)
    model, size = trained.network, trained.model.image_size
    graph = export_onnx_bytes(model, size)
    if int8:
        graph = quantize_int8(graph, calibration_images(cache, size, trained.mean, trained.std))
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    reference = model_predictor(model)(example)
    exported = onnx_predictor(graph)(example)
    check = {
        "max_abs_diff": float((reference - exported).abs().max()),
        "agreement": agreement(reference, exported),
    }
    if not int8 and check["max_abs_diff"] > 1e-2:
        raise BackendError(f"{out}: onnxruntime differs from eager by {check['max_abs_diff']:.3g}")
    atomic_write_bytes(out, _stamped(graph, weights_sha256(folder)))
    return check


def serving_predictor(
    model: torch.nn.Module,
    backend: str | None,
    device: torch.device | str,
    size: int,
    int8_graph: Path | None = None,
    arch: str = "ARCH",
) -> tuple[str, Predict]:
    """(backend name, Predict) for a served model (the MLflow pyfunc), which carries no
    calibration images: `int8` runs `int8_graph` (the model's `export onnx --int8` graph,
    logged with it), the default when there is one on a CPU; without it the default is
    exact onnx and an explicit int8 fails saying how to get the graph."""
    import torch

    device = torch.device(device)
    chosen = check_backend(backend or default_backend(device))
    if chosen == GRAPH_BACKEND and int8_graph is not None:
        _check_device(chosen, device)
        return chosen, onnx_predictor(int8_graph)
    if chosen == GRAPH_BACKEND and backend is None:
        chosen = CPU_FALLBACK
    if backend_spec(chosen).calibrated:
        servable = [b for b in available_backends(device) if not BACKENDS[b].calibrated]
        if chosen == GRAPH_BACKEND:
            raise BackendError(
                f"backend {chosen}: this model was registered without {INT8_GRAPH}; run "
                f"`heritageseg export onnx --arch {arch} --int8` before `heritageseg evaluate "
                f"--arch {arch}` registers it, or choose one of {', '.join(servable)}"
            )
        raise BackendError(
            f"backend {chosen} needs calibration images, which a served model does not carry: "
            f"choose one of {', '.join(servable)}"
        )
    return chosen, build_predictor(model, chosen, device, size)
