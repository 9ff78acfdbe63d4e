"""Fixtures: a real PostgreSQL and a real Redis, started for the test session from the machine's
packages (postgresql, redis-server), on free loopback ports, and removed afterwards."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time

import psycopg2
import pytest
from psycopg2 import sql

import local_postgres
from notesapp import create_app


@pytest.fixture(scope="session")
def postgres_server():
    try:
        with local_postgres.running(prefix="notesapp-pg-") as server:
            yield server
    except local_postgres.Missing as missing:
        pytest.exit(str(missing), 2)


@pytest.fixture(scope="session")
def redis_server():
    if not shutil.which("redis-server"):
        pytest.exit("redis-server not found: install the redis-server package (make setup does)", 2)
    port = local_postgres.free_port()
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
