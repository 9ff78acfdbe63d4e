"""Fixtures: a real PostgreSQL and a real Redis, started for the test session from the machine's
packages (postgresql, redis-server), on free loopback ports, and removed afterwards."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from notesapp import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    if shutil.which("pg_ctl"):
        return Path(shutil.which("pg_ctl")).resolve().parent
    pytest.exit("PostgreSQL server binaries not found: install the postgresql package (make setup does)", 2)


def as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="session")
def postgres_server():
    bindir = pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="notesapp-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data, port = base / "data", free_port()
    subprocess.run(as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                   "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"),
                                   "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                                   "start"]), check=True, capture_output=True)
    try:
        yield {"host": "127.0.0.1", "port": port, "bindir": bindir, "data": data, "base": base}
    finally:
        subprocess.run(as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    if not shutil.which("redis-server"):
        pytest.exit("redis-server not found: install the redis-server package (make setup does)", 2)
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        time.sleep(0.05)
    yield {"port": port, "url": f"redis://127.0.0.1:{port}/0", "proc": proc}
    proc.terminate()
    proc.wait(10)


def admin_sql(postgres_server, statement):
    conn = psycopg2.connect(host=postgres_server["host"], port=postgres_server["port"], user="postgres",
                            dbname="postgres")
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def database_url(postgres_server, request):
    """A fresh, empty database for each test."""
    name = f"test_{request.node.name}"[:50].lower().replace("[", "_").replace("]", "").replace("-", "_")
    admin_sql(postgres_server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin_sql(postgres_server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield f"postgresql://postgres@127.0.0.1:{postgres_server['port']}/{name}"
    admin_sql(postgres_server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def make_app(database_url, redis_server):
    def make(**overrides):
        config = {"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis_server["url"],
                  "RATELIMIT_STORAGE_URI": redis_server["url"], **overrides}
        return create_app("testing", config)
    return make


@pytest.fixture
def app(make_app, redis_server):
    import redis as redis_lib
    redis_lib.Redis(port=redis_server["port"]).flushall()
    application = make_app()
    from flask_migrate import upgrade
    with application.app_context():
        upgrade()
    yield application
    from notesapp.extensions import db
    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()
