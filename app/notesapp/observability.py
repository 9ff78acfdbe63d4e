"""JSON logs with a request id, and Prometheus metrics that add up across Gunicorn workers."""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess
from pythonjsonlogger.json import JsonFormatter

REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "endpoint", "status"])
LATENCY = Histogram("http_request_duration_seconds", "Request duration", ["method", "endpoint"])

log = logging.getLogger("notesapp.request")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a record is emitted."""

    def __init__(self):
        super().__init__()
        self.set_name("notesapp-json")

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(level: str) -> None:
    """One JSON line per record of the app's loggers on stdout (journald collects it). The handler sits
    on the "notesapp" logger, so tools that reconfigure the root logger (Alembic does) leave it be."""
    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                       rename_fields={"levelname": "level", "asctime": "time"}))
    logger = logging.getLogger("notesapp")
    logger.handlers[:] = [h for h in logger.handlers if h.get_name() != "notesapp-json"] + [handler]
    logger.setLevel(level)


def init_app(app: Flask) -> None:
    @app.before_request
    def start_request():
        incoming = request.headers.get("X-Request-ID", "")
        # accept a sane id from the proxy, otherwise make one
        g.request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def finish_request(response):
        duration = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if endpoint != "/metrics":
            REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
            LATENCY.labels(request.method, endpoint).observe(duration)
        log.info("request", extra={"request_id": g.get("request_id"), "method": request.method,
                                   "path": request.path, "status": response.status_code,
                                   "duration_ms": round(duration * 1000, 2),
                                   "remote_addr": request.remote_addr})
        return response

    @app.get("/metrics")
    def metrics():
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            from prometheus_client import REGISTRY as registry
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
