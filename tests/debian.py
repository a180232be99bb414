"""Debian packages a test needs (a browser, a database server, sshd).

Installed on first use when missing and we are root (CI's machine is a fresh one); elsewhere
the test is skipped with the reason, unless `CI` is set, where a missing package is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest


def require(package: str, find: Callable[[], str | None]) -> str:
    """What `find` locates (a binary, a folder), installing `package` first if need be."""
    found = find()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _install(package)
        found = find()
        if found:
            return found
    reason = f"{package} is missing and cannot be installed here (not root or no apt-get)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _install(package: str) -> None:
    """apt-get install, updating the package lists only when the first try needs it."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run = {"env": env, "capture_output": True, "timeout": 900}
    install = ["apt-get", "install", "-y", "-qq", package]
    if subprocess.run(install, **run, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], **run, check=True)
        subprocess.run(install, **run, check=True)
