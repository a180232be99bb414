"""Atomic writes: a reader sees the old output or the new one, never half of either.

Outputs are written into a hidden sibling (`.NAME.tmp-PID-HOST-XXXX`) and renamed into place.
They keep the permissions the umask gives any other file (tempfile makes 0600/0700, which
would hide models and metrics from teammates on a shared cluster). The staging name carries
the writer's pid and host, so the next process writing into the same folder removes what a
killed writer left behind, and only that: a live writer's staging is never touched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from heritageseg.core.errors import HeritagesegError

_STAGING_KINDS = ("tmp", "old")


@functools.cache
def process_umask() -> int:
    """The process's umask, read once: from /proc where it is shown (no window in which the
    umask is changed), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share(path: str | Path) -> None:
    """Give `path` the permissions a plain open()/mkdir() would have given it (for writers
    that, like tempfile and safetensors, make files only their owner can read)."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~process_umask())


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _staging_prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}-{_host()}-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


_STAGING = re.compile(
    rf"\.(?P<name>.+)\.(?:{'|'.join(_STAGING_KINDS)})-(?P<pid>\d+)-(?P<host>[A-Za-z0-9._]+)-[^-]*"
)
_TIDIED: set[Path] = set()  # folders this process has already tidied


def remove_stale_staging(folder: str | Path) -> list[Path]:
    """Remove the staging entries in `folder` left by writers on this host that are gone
    (killed mid-write); the removed paths."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in Path(folder).iterdir():
            match = _STAGING.fullmatch(entry.name)
            if not match or match["host"] != _host() or _process_alive(int(match["pid"])):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _tidy_once(folder: Path) -> None:
    """remove_stale_staging, once per folder and process: a stage writing many files into one
    folder lists it once, not once per file."""
    key = folder.resolve()
    if key not in _TIDIED:
        remove_stale_staging(folder)
        _TIDIED.add(key)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty sibling folder; on success it replaces `target`, on error it is removed
    and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _tidy_once(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target, "tmp"), dir=target.parent))
    try:
        share(staging)
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = None
    if target.exists():
        retired = target.with_name(_staging_prefix(target, "old") + secrets.token_hex(4))
        os.replace(target, retired)
    os.replace(staging, target)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a staging path beside `path` for a writer that needs a file name (libvips, a
    streaming encoder); on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _tidy_once(path.parent)
    handle, temp = tempfile.mkstemp(
        prefix=_staging_prefix(path, "tmp"), suffix=path.suffix, dir=path.parent
    )
    os.close(handle)
    try:
        yield Path(temp)
        share(temp)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as temp:
        temp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | Path, data: Any) -> None:
    """Pretty, key-sorted JSON so that identical results give identical bytes."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- one writer per output


class BusyError(HeritagesegError):
    """Another process is writing the same output."""


def lock_file(target: Path) -> Path:
    """The lock beside `target` (outside it, so a DVC output never contains it)."""
    return target.with_name(f".{target.name}.lock")


def _holder_file(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock.json")


@contextlib.contextmanager
def exclusive(target: str | Path, what: str) -> Iterator[None]:
    """Hold `target`'s lock for the block; if another process holds it, fail at once with a
    BusyError naming that process (pid, host, command, start), as written in a side file."""
    from filelock import FileLock, Timeout

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file(target), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise BusyError(
            f"{target} is being written by another {what}: {_describe_holder(target)}; "
            f"wait for it to finish or stop it (its lock is {lock_file(target)})"
        ) from None
    try:
        write_json(_holder_file(target), _holder())
        yield
    finally:
        lock.release()


def _holder() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _describe_holder(target: Path) -> str:
    try:
        holder = json.loads(_holder_file(target).read_text())
        return (
            f"pid {holder['pid']} on {holder['host']}, started {holder['started']} "
            f"({holder['command']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"
