"""`heritageseg server`: a team's MLflow tracking server, started by the project.

PostgreSQL (Debian's server binaries) keeps the runs and the registry in FOLDER/postgres,
listening on 127.0.0.1 only; `mlflow server` runs over it with artifacts proxied into
FOLDER/artifacts (`--artifacts-destination`), so clients need no access to the storage, and
with MLflow's authentication (`--app-name basic-auth`): anonymous requests are refused,
everyone signed in may read, only a resource's creator or a user granted EDIT / MANAGE may
log or promote. The admin's password comes from the environment, never from a file in git.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from heritageseg.core.errors import HeritagesegError

ADMIN_PASSWORD_ENV = "HERITAGESEG_ADMIN_PASSWORD"  # the server's admin (user `admin`)
DATABASE_USER = "mlflow"
DATABASES = ("mlflow", "mlflow_auth")  # runs + registry; users + permissions
DB_SYSTEM_USER = "postgres"  # PostgreSQL refuses to run as root: it runs as this user
# how long a worker trusts a checked login; a changed password or a deleted user may still
# be accepted this long by the other worker
AUTH_CACHE_S = 60


class ServerError(HeritagesegError):
    """The team server cannot be set up or started."""


def _postgres_bin(name: str) -> str:
    """Debian's PostgreSQL server program `name` (the newest version installed)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise ServerError(f"PostgreSQL's {name} not found: `apt-get install postgresql`")
    return path


def _as_db_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", DB_SYSTEM_USER, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(_as_db_user(command), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ServerError(f"{what} failed: {(done.stderr or done.stdout).strip()[-2000:]}")


def start_database(folder: Path, port: int) -> str:
    """PostgreSQL in `folder`/postgres on 127.0.0.1:`port` (initialised on first use, trust
    on loopback only: the MLflow server is the door); the store's SQLAlchemy URI base."""
    data = folder / "postgres"
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, DB_SYSTEM_USER)
    fresh = not (data / "PG_VERSION").is_file()
    if fresh:
        hint = f" (it runs as user {DB_SYSTEM_USER}: every folder above {folder} must let it in)"
        _run([_postgres_bin("initdb"), "-D", str(data), "-U", DATABASE_USER, "--auth=trust"],
             f"initdb {data}" + (hint if os.geteuid() == 0 else ""))  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    log = str(folder / "postgres.log")
    _run([_postgres_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start"],
         f"starting PostgreSQL on {port}")  # fmt: skip
    if fresh:
        for name in DATABASES:
            _run([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                  DATABASE_USER, name], f"createdb {name}")  # fmt: skip
    return f"postgresql+psycopg2://{DATABASE_USER}@127.0.0.1:{port}"


def stop_database(folder: Path) -> None:
    _run([_postgres_bin("pg_ctl"), "-D", str(folder / "postgres"), "-m", "fast", "-w", "stop"],
         "stopping PostgreSQL")  # fmt: skip


def auth_config(folder: Path, database: str, password: str) -> Path:
    """basic_auth.ini: users and permissions in their own database; READ for every user
    signed in, more only where granted (a resource's creator manages it). A checked login
    is kept AUTH_CACHE_S per worker: each check hashes the password (tens of ms of CPU), and
    a training logs every epoch, an evaluation every file, each request signed in."""
    path = folder / "basic_auth.ini"
    path.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {database}/{DATABASES[1]}\nadmin_username = admin\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n"
    )
    path.chmod(0o600)  # it holds the admin's password
    return path


def server_command(database: str, folder: Path, port: int) -> list[str]:
    import sys

    return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"{database}/{DATABASES[0]}", "--artifacts-destination",
            str(folder / "artifacts"), "--app-name", "basic-auth", "--workers", "2"]  # fmt: skip


def run_server(folder: Path, port: int, db_port: int) -> int:
    """Start the database and the MLflow server; serve until the server ends (Ctrl-C or
    SIGTERM), then stop the database. Returns the server's exit status."""
    import secrets
    import signal

    password = os.environ.get(ADMIN_PASSWORD_ENV)
    if not password:
        raise ServerError(f"set {ADMIN_PASSWORD_ENV} to the admin's password (user `admin`)")
    folder = folder.absolute()
    database = start_database(folder, db_port)
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(folder, database, password)),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
           or secrets.token_hex(16), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # fmt: skip
    server = subprocess.Popen(server_command(database, folder, port), env=env)
    stop = lambda *_: server.terminate()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return server.wait()
    finally:
        stop_database(folder)
