"""`heritageseg bench predict`: seconds, Mpx/s and peak memory of `heritageseg predict` on
synthetic scans of given sizes, each mapped by a fresh process (its own peak RSS, as a user's
run would have it)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from heritageseg.core.errors import HeritagesegError


@dataclass(frozen=True)
class PredictFigures:
    megapixels: float
    width: int
    height: int
    seconds: float
    peak_rss_mb: float

    @property
    def mpx_s(self) -> float:
        return self.megapixels / self.seconds


def synthetic_scan(path: Path, megapixels: float) -> tuple[int, int]:
    """A 4:3 JPEG of `megapixels` (smooth colour fields, fine grain, a grid of dark lines),
    written by libvips in strips: a 500 Mpx one never exists in memory."""
    import pyvips

    width = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    height = round(megapixels * 1e6 / width)
    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz[0], xyz[1]
    colour = (x * (200 / width) + 30).bandjoin([y * (180 / height) + 40, (x + y) % 211 + 20])
    grain = pyvips.Image.gaussnoise(width, height, sigma=10)
    lines = ((x % 997) < 3) | ((y % 1231) < 3)  # crack-like lines every ~1000 px
    picture = lines.ifthenelse(25, colour + grain).cast("uchar")
    picture.copy(interpretation="srgb").jpegsave(str(path), Q=90)
    return width, height


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one command in its own process; its stderr on failure."""
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not all children's
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise HeritagesegError(f"{' '.join(command)} failed:\n{err.read()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def bench_predict(
    megapixels: list[float], model: str, params: Path, backend: str | None, work: Path
) -> list[PredictFigures]:
    """Map a synthetic scan of each size with `heritageseg predict` in a fresh process."""
    figures = []
    for size in megapixels:
        scan = work / f"scan_{size:g}mpx.jpg"
        width, height = synthetic_scan(scan, size)
        command = [sys.executable, "-m", "heritageseg.cli", "--params", str(params), "predict",
                   str(scan), "--model", model, "--out", str(work / "maps")]  # fmt: skip
        command += ["--backend", backend] if backend else []
        seconds, peak = run_measured(command)
        figures.append(PredictFigures(width * height / 1e6, width, height, seconds, peak))
        scan.unlink()
    return figures
