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
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from heritageseg.core.config import ModelConfig, from_mapping
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import atomic_dir, share, write_json
from heritageseg.core.paths import CONFIG, RESUME, WEIGHTS
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
class Trained:
    """A trained model as saved by `train`: the network (eval mode) and the typed settings
    it was trained with; `config` is the whole config.json, for logging as it is."""

    network: torch.nn.Module
    model: ModelConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    config: dict


def load_trained(folder: Path) -> Trained:
    """The one loader of a trained `models/ARCH` folder (evaluate, export, bench, loco)."""
    return load_checkpoint(folder / CONFIG, folder / WEIGHTS)


def read_model_config(config_file: Path) -> ModelConfig:
    """The typed `model` section of a config.json, without building anything."""
    config = json.loads(Path(config_file).read_text())
    return from_mapping(ModelConfig, config["model"], where=f"{config_file}: model")


def load_checkpoint(config_file: Path, weights_file: Path) -> Trained:
    """Rebuild the network from config.json and fill it from the safetensors file.

    The encoder is built without pretrained weights whatever `encoder_weights` says: the
    file holds every weight, so nothing is fetched (an offline cluster node evaluates).
    """
    config_file, weights_file = Path(config_file), Path(weights_file)
    for path in (config_file, weights_file):
        if not path.is_file():
            raise HeritagesegError(f"{path} not found: train the model first (heritageseg train)")
    config = json.loads(config_file.read_text())
    model = read_model_config(config_file)
    network = build_model(dataclasses.replace(model, encoder_weights=None))
    network.load_state_dict(load_file(str(weights_file)))
    norm = config["normalization"]
    return Trained(
        network=network.eval(), model=model, mean=tuple(norm["mean"]), std=tuple(norm["std"]),
        classes=tuple(config["classes"]), config=config,
    )  # fmt: skip


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


def resume_extra(folder: Path) -> dict | None:
    """The `extra` saved with the resume state (without loading its tensors); None if none."""
    path = folder / RESUME / _STATE_JSON
    return json.loads(path.read_text())["extra"] if path.is_file() else None


def load_resume(folder: Path, objects: dict[str, Any]) -> dict | None:
    """Restore what save_resume wrote into `objects` and the RNGs; None if nothing saved."""
    state = folder / RESUME
    if not (state / _STATE_JSON).is_file():
        return None
    tensors = load_file(str(state / _STATE_TENSORS))
    plain = json.loads((state / _STATE_JSON).read_text())
    for name, obj in objects.items():
        if obj is not None and name in plain:
            unwrap(obj).load_state_dict(_join(plain[name], tensors))
    _set_rng_state(plain["rng"], tensors)
    return plain["extra"]


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


def _set_rng_state(plain: dict, tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    for index in range(min(plain["cuda_devices"], torch.cuda.device_count())):
        torch.cuda.set_rng_state(tensors[f"rng.cuda.{index}"], index)
    kind, position, has_gauss, cached = plain["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, position, has_gauss, cached))
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
