"""Debian's OpenSSH server on loopback, for the shared DVC remote: a throw-away host key and
client key in a folder of the test's, a free port, key logins only, stopped at the end."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .debian import require
from .test_tracking import _free_port

SBIN = os.pathsep.join(("/usr/sbin", "/usr/bin", os.environ.get("PATH", "")))


@dataclass(frozen=True)
class SshServer:
    url: str  # ssh://USER@127.0.0.1:PORT, a remote's URL without its path
    keyfile: Path  # the client's private key


def _config(folder: Path, port: int) -> str:
    return "\n".join((
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
        "UsePAM no", "StrictModes no",  # a test's folders, not a home's ~/.ssh
        "Subsystem sftp internal-sftp", "",
    ))  # fmt: skip


@contextmanager
def ssh_server(folder: Path) -> Iterator[SshServer]:
    """sshd -D on a free loopback port, logging to FOLDER/sshd.log."""
    sshd = require("openssh-server", lambda: shutil.which("sshd", path=SBIN))
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
                       check=True, capture_output=True)  # fmt: skip
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = _free_port()
    (folder / "sshd_config").write_text(_config(folder, port))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation folder
    with (folder / "sshd.log").open("w") as log:
        process = subprocess.Popen([sshd, "-D", "-e", "-f", str(folder / "sshd_config")],
                                   stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_for(port, process, folder / "sshd.log")
        yield SshServer(f"ssh://{getpass.getuser()}@127.0.0.1:{port}", folder / "client_key")
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_for(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on port {port} within {timeout_s} s")
