"""Health endpoints, readiness when a dependency is down, version, metrics, request ids and logs."""

import json
import logging
import socket


def test_liveness_needs_nothing(make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql://nobody@127.0.0.1:1/none", REDIS_URL="redis://127.0.0.1:1/0")
    assert app.test_client().get("/health").get_json() == {"status": "ok"}


def test_ready_when_everything_is_up(client):
    res = client.get("/health/ready")
    assert res.status_code == 200
    assert res.get_json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}


def test_not_ready_before_migrations(make_app):
    res = make_app().test_client().get("/health/ready")
    assert res.status_code == 503
    body = res.get_json()
    assert body["failing"] == ["migrations"]
    assert body["checks"]["migrations"] == "database at none, code at 0002"


def test_ready_on_a_database_ahead_of_the_code_and_not_behind_it(client, app):
    """A newer release migrated the database (expand-only, the deploy's contract): the old code stays
    ready, so a deploy whose new code fails its gate can go back to it. Behind the code it is not ready."""
    from notesapp.extensions import db

    with app.app_context():
        db.session.execute(db.text("UPDATE alembic_version SET version_num = '0099_from_a_newer_release'"))
        db.session.commit()
    res = client.get("/health/ready")
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["checks"]["migrations"] == "ok, ahead: database at 0099_from_a_newer_release, code at 0002"
    with app.app_context():
        db.session.execute(db.text("UPDATE alembic_version SET version_num = '0001'"))
        db.session.commit()
    res = client.get("/health/ready")
    assert res.status_code == 503
    assert res.get_json()["checks"]["migrations"] == "database at 0001, code at 0002"


def test_readiness_reads_the_migration_scripts_once(client, monkeypatch):
    from alembic.script import ScriptDirectory

    assert client.get("/health/ready").status_code == 200
    calls = []
    original = ScriptDirectory.from_config
    monkeypatch.setattr(ScriptDirectory, "from_config", lambda config: calls.append(config) or original(config))
    for _ in range(3):
        assert client.get("/health/ready").get_json()["checks"]["migrations"] == "ok"
    assert calls == []


def test_not_ready_without_database(make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql://nobody@127.0.0.1:1/none")
    body = app.test_client().get("/health/ready")
    assert body.status_code == 503
    assert body.get_json()["failing"] == ["database", "migrations"]


def test_redis_down_degrades_but_serves(app, redis_server, caplog):
    client = app.test_client()
    redis_server["proc"].send_signal(19)  # SIGSTOP: Redis hangs, like a dead host
    try:
        with caplog.at_level(logging.WARNING):
            assert client.post("/api/notes", json={"title": "still works"}).status_code == 201
            listing = client.get("/api/notes")
            ready = client.get("/health/ready")
        assert listing.status_code == 200 and listing.get_json()["total"] == 1
        assert listing.headers["X-Cache"] == "miss"
        assert ready.status_code == 503 and ready.get_json()["failing"] == ["redis"]
        assert any("cache unavailable" in r.getMessage() for r in caplog.records)
    finally:
        redis_server["proc"].send_signal(18)  # SIGCONT


def test_version_from_environment(make_app):
    app = make_app(RELEASE_ID="20261123T120000-abc1234", RELEASE_COMMIT="abc1234")
    assert app.test_client().get("/version").get_json() == {"release": "20261123T120000-abc1234",
                                                           "commit": "abc1234", "host": socket.gethostname()}


def test_request_id_echoed_and_logged(client, capsys):
    res = client.get("/health", headers={"X-Request-ID": "req-42"})
    assert res.headers["X-Request-ID"] == "req-42"
    made = client.get("/health").headers["X-Request-ID"]
    assert len(made) == 32
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    entry = next(line for line in lines if line.get("request_id") == "req-42")
    assert entry["method"] == "GET" and entry["path"] == "/health" and entry["status"] == 200
    assert isinstance(entry["duration_ms"], float) and entry["message"] == "request"


def test_proxy_fix_trusts_exactly_one_proxy(client):
    from flask import request

    app = client.application

    @app.get("/_whoami")
    def whoami():
        return {"remote": request.remote_addr, "scheme": request.scheme}

    res = client.get("/_whoami", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9",
                                          "X-Forwarded-Proto": "https"})
    assert res.get_json() == {"remote": "203.0.113.9", "scheme": "https"}


def test_metrics_count_requests(client):
    client.get("/health")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'http_requests_total{endpoint="/health",method="GET",status="200"}' in text
