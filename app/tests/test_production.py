"""The production configuration, and the app served by Gunicorn with it."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from notesapp import ConfigError, create_app

APP_DIR = Path(__file__).resolve().parent.parent
STRONG = "Zq3v9R2xN8wL5tK1pJ7mH4cF6bD0sA2eY8uI3oP5"


def prod_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL", "APP_ENV")}
    return {**env, "APP_ENV": "production", **extra}


@pytest.mark.parametrize("secret", ["changeme", "secret", "short-but-random-9f2", ""])
def test_production_refuses_weak_or_missing_secret(secret, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", secret)
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@localhost/x")
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app("production")


def test_production_needs_database_url(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_app("production")


def test_production_reads_the_previous_keys_as_a_json_list(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@localhost/x")
    monkeypatch.setenv("SECRET_KEY_FALLBACKS", '["k3/Zx+9q=Lw@:#?%, \\"old\\""]')
    assert create_app("production").config["SECRET_KEY_FALLBACKS"] == ['k3/Zx+9q=Lw@:#?%, "old"']
    monkeypatch.setenv("SECRET_KEY_FALLBACKS", "an-old-key")
    with pytest.raises(ConfigError, match="SECRET_KEY_FALLBACKS must be a JSON list"):
        create_app("production")


def test_production_never_debug(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@localhost/x")
    monkeypatch.setenv("FLASK_DEBUG", "1")
    assert create_app("production").debug is False


def test_wsgi_with_changeme_exits_naming_secret_key():
    res = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=APP_DIR, capture_output=True, text=True,
                         env=prod_env(SECRET_KEY="changeme", DATABASE_URL="postgresql://x@localhost/x"))
    assert res.returncode != 0
    assert "SECRET_KEY" in res.stderr


def wait_http(url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status
        except OSError:  # refused, reset or timed out while the workers boot
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def request(url, data=None):
    # A bound for a hung server, not a speed check: the test command runs these tests beside the
    # scenarios' test hosts, and a request on a busy 2-core machine once took more than 5 s.
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def gunicorn(app, database_url, redis_server):
    """Gunicorn with gunicorn.conf.py and the environment the deployed service has (no
    PROMETHEUS_MULTIPROC_DIR: the config makes it), three workers, each recycled after 10 requests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = prod_env(SECRET_KEY=STRONG, DATABASE_URL=database_url, REDIS_URL=redis_server["url"],
                   WEB_CONCURRENCY="3", GUNICORN_BIND=f"127.0.0.1:{port}", APP_RELEASE="r1", APP_COMMIT="c1",
                   GUNICORN_MAX_REQUESTS="10", GUNICORN_MAX_REQUESTS_JITTER="0")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=APP_DIR,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_gunicorn_serves_the_app_in_production(gunicorn):
    base, proc = gunicorn
    assert request(f"{base}/api/notes", b'{"title": "from gunicorn"}')[0] == 201
    status, body = request(f"{base}/api/notes")
    assert status == 200 and '"from gunicorn"' in body
    assert request(f"{base}/health/ready")[0] == 200
    assert request(f"{base}/version") == (200, json.dumps({"commit": "c1", "host": socket.gethostname(),
                                                           "release": "r1"}, separators=(",", ":")) + "\n")
    assert request(f"{base}/api/notes", b'{"title": ""}')[0] == 422
    before = health_count(request(f"{base}/metrics")[1])
    assert before >= 1  # the readiness wait's answer
    for _ in range(30):
        assert request(f"{base}/health")[0] == 200
    # every request counted once, whichever of the three workers served it, also by workers that have
    # been recycled since; /metrics itself is not counted, so every worker answers with the same sum
    for _ in range(6):
        assert health_count(request(f"{base}/metrics")[1]) == before + 30


def health_count(metrics: str) -> float:
    counted = re.search(r'http_requests_total\{endpoint="/health",method="GET",status="200"\} (\S+)', metrics)
    return float(counted.group(1)) if counted else 0.0


def test_gunicorn_refuses_weak_secret(database_url):
    res = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=APP_DIR,
                         env=prod_env(SECRET_KEY="changeme", DATABASE_URL=database_url, WEB_CONCURRENCY="1",
                                      GUNICORN_BIND="127.0.0.1:0"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "SECRET_KEY" in res.stdout + res.stderr


@pytest.mark.parametrize("url", ["postgresql://u:p@db/notes", "postgres://u:p@db/notes",
                                 "postgresql+psycopg2://u:p@db/notes"])
def test_database_url_uses_psycopg2(url):
    from notesapp.config import database_uri

    assert database_uri(url) == "postgresql+psycopg2://u:p@db/notes"


def test_production_answers_its_trusted_hosts_only(monkeypatch, database_url):
    """TRUSTED_HOSTS (the stack sets it from app_domains): another Host gets 400, so no link the app makes
    can name it; the session cookie is Secure."""
    monkeypatch.setenv("SECRET_KEY", STRONG)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("TRUSTED_HOSTS", "notes.example.com, www.notes.example.com")
    app = create_app("production")
    client = app.test_client()
    assert client.get("/health", headers={"Host": "evil.example.net"}).status_code == 400
    assert client.get("/health", headers={"Host": "notes.example.com"}).status_code == 200
    assert client.get("/health", headers={"Host": "www.notes.example.com:443"}).status_code == 200
    assert app.config["SESSION_COOKIE_SECURE"] is True and app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_html_answers_carry_a_content_security_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert "Content-Security-Policy" not in client.get("/health").headers
