"""Work outside requests: a background job the API enqueues and the worker runs, and a scheduled job.

- `POST /api/jobs` {"text": ..., "seconds": 0} enqueues `count_words` on the RQ queue "notesapp";
  `GET /api/jobs/ID` tells its status and result. The result names the release and process that ran it,
  so a deploy's tests can tell which release a job ran under.
- `flask --app wsgi:app worker` runs an RQ worker on that queue (the deploy runs it as app_processes.worker,
  with systemd's SIGTERM letting the job in hand finish first).
- `flask --app wsgi:app stats` counts the notes and keeps the figure in Redis (the deploy runs it from a
  systemd timer, app_jobs.stats).
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone

import click
import redis
from flask import Blueprint, current_app, jsonify, request
from flask.cli import with_appcontext
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job

from .extensions import db
from .models import Note

QUEUE = "notesapp"
STATS_KEY = "notesapp:stats"
bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")


def connection() -> redis.Redis:
    """A connection of its own: the cache's gives up after half a second, a worker blocks for minutes."""
    ext = current_app.extensions
    if "rq_redis" not in ext:
        ext["rq_redis"] = redis.Redis.from_url(current_app.config["REDIS_URL"])
    return ext["rq_redis"]


def count_words(text: str, seconds: float = 0) -> dict:
    """The background job: count the words of `text`, taking `seconds` first (a long job, for tests)."""
    started = time.time()
    time.sleep(seconds)
    return {"words": len(text.split()), "release": os.environ.get("APP_RELEASE", "unknown"),
            "host": socket.gethostname(), "pid": os.getpid(), "started": started, "finished": time.time()}


@bp.post("")
def enqueue():
    payload = request.get_json(silent=True) or {}
    text, seconds = payload.get("text"), payload.get("seconds", 0)
    if not isinstance(text, str) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 60:
        return jsonify(error="validation failed",
                       fields={"text": "a string", "seconds": "a number from 0 to 60"}), 422
    job = Queue(QUEUE, connection=connection()).enqueue(count_words, text, seconds, job_timeout=120,
                                                        result_ttl=86400)
    return jsonify(id=job.id, status=job.get_status()), 202


@bp.get("/<job_id>")
def status(job_id: str):
    try:
        job = Job.fetch(job_id, connection=connection())
    except NoSuchJobError:
        return jsonify(error="not found", message=f"no job {job_id}"), 404
    return jsonify(id=job.id, status=job.get_status(), result=job.return_value())


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop once the queue is empty.")
@with_appcontext
def worker_command(burst: bool) -> None:
    """Run an RQ worker on the app's queue until SIGTERM (which lets the job in hand finish)."""
    Worker([QUEUE], connection=connection()).work(burst=burst, logging_level="INFO")


@click.command("stats")
@with_appcontext
def stats_command() -> None:
    """Count the notes and keep the figure in Redis (a scheduled job)."""
    figures = {"notes": db.session.query(Note).count(), "release": os.environ.get("APP_RELEASE", "unknown"),
               "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    connection().set(STATS_KEY, json.dumps(figures))
    click.echo(json.dumps(figures))
