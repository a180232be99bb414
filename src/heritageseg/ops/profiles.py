"""Named parameter profiles: small overlays on params.yaml, applied in place.

A profile (`profiles/NAME.yaml`) lists only the keys it changes, so it documents exactly how
it differs from the laptop default. Applying one rewrites those values in params.yaml line by
line and keeps every comment, then validates the result before it replaces the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from heritageseg.core.config import Params, flatten_keys, from_mapping
from heritageseg.core.errors import ConfigError
from heritageseg.core.fileio import atomic_write_text

PROFILES = Path(__file__).resolve().parents[3] / "profiles"
_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")


def available(folder: Path = PROFILES) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _scalar(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")


def set_values(text: str, values: dict[str, object]) -> str:
    """Replace the values of dotted keys in YAML text, keeping layout and comments."""
    lines, path, pending = text.splitlines(keepends=True), [], dict(values)
    for number, line in enumerate(lines):
        match = _LINE.match(line)
        if not match:
            continue
        depth = len(match["indent"]) // 2
        path = [*path[:depth], match["key"]]
        dotted = ".".join(path)
        if dotted in pending:
            lines[number] = _replaced(match, _scalar(pending.pop(dotted)), line)
    if pending:
        raise ConfigError(f"profile key(s) not in params.yaml: {', '.join(sorted(pending))}")
    return "".join(lines)


def _replaced(match: re.Match, value: str, line: str) -> str:
    """The line with a new value, its comment kept in the same column where it fits."""
    head = f"{match['indent']}{match['key']}: {value}"
    if "#" not in match["rest"]:
        return head + "\n"
    column = line.index("#", len(match["indent"]) + len(match["key"]))
    padded = f"{head:<{column}}" if len(head) < column else f"{head} "
    return padded + line[column:]


def _profile_file(name: str, folder: Path) -> Path:
    source = folder / f"{name}.yaml"
    if not source.is_file():
        raise ConfigError(f"no profile {name!r}; available: {', '.join(available(folder))}")
    return source


def profile_params(name: str, base: Params, folder: Path = PROFILES) -> Params:
    """`base` with profile `name` laid over it, without touching any file."""
    source = _profile_file(name, folder)
    return from_mapping(Params, yaml.safe_load(source.read_text()) or {}, str(source), base)


def apply_profile(name: str, params_path: Path, folder: Path = PROFILES) -> dict[str, object]:
    """Write profile `name` into params_path; return the values it set."""
    source = _profile_file(name, folder)
    values = flatten_keys(yaml.safe_load(source.read_text()) or {})
    text = set_values(params_path.read_text(), values)
    from_mapping(Params, yaml.safe_load(text), where=f"{params_path} with profile {name}")
    atomic_write_text(params_path, text)
    return values
