"""One reader per kind of file: a file that is missing, empty, truncated or garbage is an
error naming it, what is wrong, and the command that rebuilds it (never a traceback).

`rebuild` is the way out to print, usually `core.rebuild.rebuild_hint(kind, arch)`. The
kind-specific readers (weights and resume state in nn.checkpoint, cache arrays in
data.cache, metrics and per-image results in stages.results) build on these.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from heritageseg.core.errors import DataError


class BrokenFile(DataError):
    """A file the pipeline wrote is missing, unreadable or not what its writer writes."""

    def __init__(self, path: str | Path, problem: str, rebuild: str):
        self.path, self.problem, self.rebuild = Path(path), problem, rebuild
        super().__init__(f"{path}: {problem}; {rebuild}")


def require_file(path: str | Path, rebuild: str) -> None:
    """A missing or empty file is a BrokenFile (for readers that open the file themselves)."""
    path = Path(path)
    if not path.is_file():
        raise BrokenFile(path, "not found", rebuild)
    if path.stat().st_size == 0:
        raise BrokenFile(path, "is empty", rebuild)


def read_bytes(path: str | Path, rebuild: str) -> bytes:
    """The file's bytes; a missing or empty file is a BrokenFile."""
    require_file(path, rebuild)
    return Path(path).read_bytes()


def read_text(path: str | Path, rebuild: str) -> str:
    """The file as UTF-8 text; binary garbage is a BrokenFile, not a UnicodeDecodeError."""
    try:
        return read_bytes(path, rebuild).decode("utf-8")
    except UnicodeDecodeError:
        raise BrokenFile(path, "is not UTF-8 text (corrupt)", rebuild) from None


def read_json(path: str | Path, rebuild: str, keys: Iterable[str] = ()) -> dict[str, Any]:
    """A JSON object holding at least `keys`."""
    text = read_text(path, rebuild)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"is not valid JSON ({error.msg}, line {error.lineno}): truncated or corrupt"
        raise BrokenFile(path, problem, rebuild) from None
    if not isinstance(document, dict):
        raise BrokenFile(path, f"holds a JSON {type(document).__name__}, not an object", rebuild)
    require_keys(document, keys, path, rebuild)
    return document


def require_keys(document: dict, keys: Iterable[str], path: str | Path, rebuild: str) -> None:
    missing = [key for key in keys if key not in document]
    if missing:
        raise BrokenFile(path, f"lacks {', '.join(map(repr, missing))}", rebuild)


def read_csv_table(
    path: str | Path, columns: Iterable[str], rebuild: str, dtype: Any = str
) -> pd.DataFrame:
    """A CSV table with at least `columns`, each filled in every row (a file cut short
    mid-row leaves the last row's fields empty)."""
    columns = list(columns)
    text = read_text(path, rebuild)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=dtype, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        problem = f"is not a readable CSV table ({str(error).strip().splitlines()[0]})"
        raise BrokenFile(path, problem, rebuild) from None
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise BrokenFile(path, f"lacks the column(s) {', '.join(missing)}", rebuild)
    values = frame[columns]
    incomplete = (values.isna() | (values.astype(str) == "")).any(axis=1).to_numpy().nonzero()[0]
    if len(incomplete):
        row = int(incomplete[0]) + 2  # 1-based, after the header line
        raise BrokenFile(path, f"line {row} is incomplete (truncated?)", rebuild)
    return frame


def require(condition: bool, path: str | Path, problem: str, rebuild: str) -> None:
    """A structural check of a file that parsed: raise BrokenFile(problem) unless it holds."""
    if not condition:
        raise BrokenFile(path, problem, rebuild)
