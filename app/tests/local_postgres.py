"""A throwaway PostgreSQL server from the machine's packages (postgresql), on a free loopback port.

Standard library only, so that tests outside the app use it too: app/tests/conftest.py starts one for the
app's tests, tests/test_barman_switch.py one for roles/barman's WAL switch query.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class Missing(RuntimeError):
    """The server binaries are not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    if shutil.which("pg_ctl"):
        return Path(shutil.which("pg_ctl")).resolve().parent
    raise Missing("PostgreSQL server binaries not found: install the postgresql package (make setup does)")


def as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def running(prefix: str = "local-pg-"):
    """Start a server in a new temporary directory; yield host, port, socket directory (base) and psql().

    psql(query) runs one query as the postgres superuser and returns its unaligned output.
    """
    binaries = bindir()
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data, port = base / "data", free_port()
    subprocess.run(as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                   "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"),
                                   "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                                   "start"]), check=True, capture_output=True)

    def psql(query: str) -> str:
        return subprocess.run(as_server_user(["psql", "-h", str(base), "-p", str(port), "-U", "postgres", "-XAt",
                                              "-v", "ON_ERROR_STOP=1", "-c", query]),
                              check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield {"host": "127.0.0.1", "port": port, "base": base, "psql": psql}
    finally:
        subprocess.run(as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
