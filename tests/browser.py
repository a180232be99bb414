"""Headless Chromium for tests that look at a page the way a person would (Debian's
`chromium`, installed on first use as tests/debian.py says)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .debian import require

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


def chromium() -> str:
    """The chromium binary, installing Debian's package when missing and possible."""
    return require("chromium", lambda: shutil.which("chromium") or shutil.which("chromium-browser"))


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


class Tab:
    """One headless Chromium tab driven over the DevTools protocol on a pipe
    (`--remote-debugging-pipe`: the browser reads commands on fd 3 and answers on fd 4, each
    message JSON ended by NUL), so a test clicks where a person clicks, with no extra
    package. Use as a context manager; the browser is stopped on exit."""

    def __init__(self, out_dir: Path, width: int = 1400, height: int = 1000):
        self.profile = out_dir / ".tab-profile"
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def pipes_on_3_and_4() -> None:
            os.dup2(commands_read, 3)
            os.dup2(answers_write, 4)

        args = [chromium(), *FLAGS, f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "--remote-debugging-pipe",
                "about:blank"]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=pipes_on_3_and_4, pass_fds=(3, 4),
        )  # fmt: skip
        os.close(commands_read)
        os.close(answers_write)
        self._buffer, self._next_id, self.session = b"", 0, None
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t["targetId"] for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def __enter__(self) -> Tab:
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self._commands)
        os.close(self._answers)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, **params) -> dict:
        """Run one protocol command and return its result (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = json.loads(self._read())
            if answer.get("id") == self._next_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer["result"]

    def _read(self) -> bytes:
        while b"\0" not in self._buffer:
            chunk = os.read(self._answers, 1 << 16)
            assert chunk, "chromium closed its DevTools pipe"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return message

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def open(self, url: str, ready: str, timeout_s: float = 60) -> None:
        """Navigate and wait until the JavaScript expression `ready` is true."""
        self.send("Page.navigate", url=url)
        self.wait_for(ready, timeout_s)

    def wait_for(self, expression: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(f"(() => {{ try {{ return !!({expression}); }} "
                                "catch (e) { return false; } })()"):  # fmt: skip
            assert time.monotonic() < deadline, f"page never got to: {expression}"
            time.sleep(0.2)

    def click(self, selector: str) -> None:
        """A left click at the middle of the element, as the mouse gives it."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                      button="left", clickCount=1)  # fmt: skip

    def screenshot(self, out: Path) -> Path:
        out.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return out
