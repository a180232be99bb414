"""Headless Chromium for tests that look at a page the way a person would.

Debian's `chromium` is installed on first use when missing and we are root (CI's machine is a
fresh one); elsewhere a test without a browser is skipped with the reason, unless `CI` is set,
where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
)


def _install() -> None:
    run = {"check": True, "capture_output": True, "timeout": 900}
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, **run)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, **run)


def chromium() -> str:
    """The chromium binary, installing Debian's package when missing and possible."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _install()
        found = shutil.which("chromium")
    if found:
        return found
    reason = "chromium is missing and cannot be installed here (not root or no apt-get)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def screenshot(
    url: str, out: Path, width: int = 1400, height: int = 1000, wait_ms: int = 5000
) -> Path:
    """Render `url` headless and save a PNG; `wait_ms` of virtual time lets scripts run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = out.parent / f".{out.stem}-profile"
    args = [
        chromium(),
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        f"--virtual-time-budget={wait_ms}",
        f"--screenshot={out}",
        url,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    shutil.rmtree(profile, ignore_errors=True)
    assert out.is_file(), f"chromium wrote no screenshot of {url}:\n{done.stderr[-3000:]}"
    return out


def _colours(path: Path) -> np.ndarray:
    """One 0xRRGGBB integer per pixel: np.unique over these is 20x faster than over rows."""
    rgb = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(np.uint32)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def ink(path: Path) -> float:
    """Share of pixels that differ from the page's most common colour (0 = blank page)."""
    pixels = _colours(path)
    colours, counts = np.unique(pixels, return_counts=True)
    return float((pixels != colours[counts.argmax()]).mean())


def distinct_colours(path: Path) -> int:
    """How many colours the screenshot uses (a page of pictures uses many)."""
    return len(np.unique(_colours(path)))
