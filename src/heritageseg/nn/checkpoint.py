"""Weights as safetensors, everything else as JSON: nothing loaded from disk is unpickled.

Two kinds of checkpoint live in `models/ARCH/`:
- the best epoch's `model.safetensors` + `config.json` (what evaluation, MLflow and
  inference load), and
- `resume/`, the last epoch's full training state (model, optimizer, scheduler, grad
  scaler, RNG states, epoch, history), written as one atomic folder so a kill at any
  moment leaves either the previous state or the new one.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import atomic_dir, share, write_json
from heritageseg.core.paths import CONFIG, RESUME, WEIGHTS
from heritageseg.core.readers import BrokenFile, read_json, require, require_file
from heritageseg.core.trained import TrainedConfig, model_hint, read_trained_config
from heritageseg.nn.models import build_model

_STATE_TENSORS = "state.safetensors"
_STATE_JSON = "state.json"


def save_weights(model: torch.nn.Module, folder: Path, config: dict) -> None:
    """The model's weights and the config needed to rebuild it (atomic per file)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    temp = folder / f".{WEIGHTS}.tmp"
    save_file(tensors, str(temp))
    share(temp)  # safetensors writes 0600: teammates must read the model
    temp.replace(folder / WEIGHTS)
    write_json(folder / CONFIG, config)


@dataclass(frozen=True)
class Trained(TrainedConfig):
    """A trained model as saved by `train`: its typed settings and the network (eval mode)."""

    network: torch.nn.Module


def load_trained(folder: Path) -> Trained:
    """The one loader of a trained `models/ARCH` folder (evaluate, export, bench, loco)."""
    return load_checkpoint(folder / CONFIG, folder / WEIGHTS)


def read_tensors(path: Path, rebuild: str) -> dict[str, torch.Tensor]:
    """A safetensors file; one cut short or overwritten is a BrokenFile naming it."""
    require_file(path, rebuild)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise BrokenFile(path, f"is not a whole safetensors file: truncated or corrupt ({error})",
                         rebuild) from None  # fmt: skip


def load_checkpoint(config_file: Path, weights_file: Path) -> Trained:
    """Rebuild the network from config.json and fill it from the safetensors file.

    The encoder is built without pretrained weights whatever `encoder_weights` says: the
    file holds every weight, so nothing is fetched (an offline cluster node evaluates).
    """
    config_file, weights_file = Path(config_file), Path(weights_file)
    settings = read_trained_config(config_file)
    tensors = read_tensors(weights_file, model_hint(weights_file))
    network = build_model(dataclasses.replace(settings.model, encoder_weights=None))
    try:
        network.load_state_dict(tensors)
    except RuntimeError as error:
        problem = f"does not hold the weights of the model in {config_file.name}"
        detail = str(error).splitlines()[0]
        raise BrokenFile(weights_file, f"{problem} ({detail})", model_hint(weights_file)) from None
    return Trained(**vars(settings), network=network.eval())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


# ---------------------------------------------------------------- resume state


def save_resume(folder: Path, objects: dict[str, Any], extra: dict) -> None:
    """Save state_dicts (model, optimizer, scheduler, scaler) and RNG states without pickle.

    Tensors go to safetensors under flattened keys; every other leaf (ints, floats, strings,
    lists of them) goes to JSON, so the state round-trips bit for bit.
    """
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"extra": extra, "rng": _rng_state(tensors)}
    for name, obj in objects.items():
        if obj is not None:
            plain[name] = _split(unwrap(obj).state_dict(), f"{name}", tensors)
    with atomic_dir(folder / RESUME) as staging:
        save_file(tensors, str(staging / _STATE_TENSORS))
        share(staging / _STATE_TENSORS)
        write_json(staging / _STATE_JSON, plain)


class BrokenResume(BrokenFile):
    """The resume state cannot be read back: training can set it aside and start over."""


def resume_extra(folder: Path) -> dict | None:
    """The `extra` saved with the resume state (without loading its tensors); None if none."""
    path = folder / RESUME / _STATE_JSON
    if not path.exists():
        return None
    return _resume_json(folder)["extra"]


def load_resume(folder: Path, objects: dict[str, Any]) -> dict | None:
    """Restore what save_resume wrote into `objects` and the RNGs; None if nothing saved.

    Everything is read and decoded before anything is restored, so a broken state
    (BrokenResume) leaves `objects` untouched.
    """
    state = folder / RESUME
    if not (state / _STATE_JSON).exists():
        return None
    plain = _resume_json(folder)
    tensors = _resume_tensors(folder)
    try:
        restored = {name: _join(plain[name], tensors) for name, obj in objects.items()
                    if obj is not None and name in plain}  # fmt: skip
        rng = _decode_rng_state(plain["rng"], tensors)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise BrokenResume(state, f"does not hold a whole training state (no {error})",
                           _resume_hint(folder)) from None  # fmt: skip
    for name, value in restored.items():
        unwrap(objects[name]).load_state_dict(value)
    _set_rng_state(rng)
    return plain["extra"]


def set_aside_resume(folder: Path) -> Path:
    """Move a broken resume state out of the way, kept for a look: `resume.corrupt-<time>`."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = folder / f"{RESUME}.corrupt-{stamp}"
    suffix = 1
    while target.exists():
        target, suffix = folder / f"{RESUME}.corrupt-{stamp}-{suffix}", suffix + 1
    os.replace(folder / RESUME, target)
    return target


def _resume_json(folder: Path) -> dict:
    path = folder / RESUME / _STATE_JSON

    def read(hint: str) -> dict:
        plain = read_json(path, hint, ("extra", "rng"))
        sections = all(isinstance(plain[key], dict) for key in ("extra", "rng"))
        require(sections, path, "its extra and rng are not objects", hint)
        return plain

    return _as_resume(read, folder)


def _resume_tensors(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / RESUME / _STATE_TENSORS
    return _as_resume(lambda hint: read_tensors(path, hint), folder)


def _as_resume(read: Callable[[str], Any], folder: Path) -> Any:
    """`read(hint)`, its BrokenFile turned into a BrokenResume (which training sets aside)."""
    try:
        return read(_resume_hint(folder))
    except BrokenFile as error:
        raise BrokenResume(error.path, error.problem, error.rebuild) from None


def _resume_hint(folder: Path) -> str:
    return f"start over with `heritageseg train --arch {Path(folder).name} --fresh`"


def _split(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested state by a reference to a safetensors key."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {
            "__dict__": [
                [_encode_key(k), _split(v, f"{key}.{k}", tensors)] for k, v in value.items()
            ]
        }
    if isinstance(value, list | tuple):
        items = [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise HeritagesegError(f"cannot store {type(value).__name__} at {key} in a resume state")


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(_join(v, tensors) for v in value["__tuple__"])
        if "__float__" in value:
            return float(value["__float__"])
        return {_decode_key(k): _join(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value


def _encode_key(key: Any) -> list:
    """JSON keys must be strings; optimizer states are keyed by int."""
    return ["int", key] if isinstance(key, int) else ["str", str(key)]


def _decode_key(key: list) -> Any:
    kind, value = key
    return int(value) if kind == "int" else value


def _rng_state(tensors: dict[str, torch.Tensor]) -> dict:
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    python_version, python_state, python_gauss = random.getstate()
    return {
        "numpy": [kind, int(position), int(has_gauss), float(cached)],
        "python": [python_version, list(python_state), python_gauss],
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }


def _decode_rng_state(plain: dict, tensors: dict[str, torch.Tensor]) -> tuple:
    """The saved RNG states (torch, CUDA, numpy, python), ready to set; KeyError, TypeError
    or ValueError when they are not whole."""
    devices = min(plain["cuda_devices"], torch.cuda.device_count())
    cuda = [tensors[f"rng.cuda.{index}"] for index in range(devices)]
    kind, position, has_gauss, cached = plain["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    version, state, gauss = plain["python"]
    python = (version, tuple(state), gauss)
    return tensors["rng.torch"], cuda, (kind, keys, position, has_gauss, cached), python


def _set_rng_state(decoded: tuple) -> None:
    torch_state, cuda, numpy_state, python_state = decoded
    torch.set_rng_state(torch_state)
    for index, state in enumerate(cuda):
        torch.cuda.set_rng_state(state, index)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
