"""The background job (enqueued by the API, run by an RQ worker) and the scheduled stats job, against the
real Redis and PostgreSQL of conftest.py."""

from __future__ import annotations

import json

import redis as redis_lib
from rq import Worker

from notesapp import jobs


def run_worker(app):
    """What the worker process does, until the queue is empty."""
    with app.app_context():
        Worker([jobs.QUEUE], connection=jobs.connection()).work(burst=True)


def test_an_enqueued_job_is_run_by_the_worker_and_names_its_release(app, client, monkeypatch):
    monkeypatch.setenv("APP_RELEASE", "20261130T000000Z-abcdef12")
    res = client.post("/api/jobs", json={"text": "three little words"})
    assert res.status_code == 202
    job_id = res.get_json()["id"]
    assert client.get(f"/api/jobs/{job_id}").get_json()["status"] == "queued"

    run_worker(app)

    body = client.get(f"/api/jobs/{job_id}").get_json()
    assert body["status"] == "finished"
    assert body["result"]["words"] == 3
    assert body["result"]["release"] == "20261130T000000Z-abcdef12"


def test_bad_job_input_is_refused(client):
    assert client.post("/api/jobs", json={"text": 3}).status_code == 422
    assert client.post("/api/jobs", json={"text": "x", "seconds": 3600}).status_code == 422
    assert client.get("/api/jobs/no-such-job").status_code == 404


def test_the_stats_job_keeps_the_count_in_redis(app, client, redis_server):
    client.post("/api/notes", json={"title": "one", "body": "b"})
    result = app.test_cli_runner().invoke(args=["stats"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["notes"] == 1
    stored = redis_lib.Redis(port=redis_server["port"]).get(jobs.STATS_KEY)
    assert json.loads(stored)["notes"] == 1
