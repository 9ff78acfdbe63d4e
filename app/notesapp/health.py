"""Liveness, readiness and version endpoints for load balancers and the deploy's health gate."""

from __future__ import annotations

import logging
import socket

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, current_app, jsonify

from . import cache
from .extensions import db

bp = Blueprint("health", __name__)
log = logging.getLogger("notesapp.health")


@bp.get("/health")
def live():
    """The process answers: no dependency is checked."""
    return jsonify(status="ok")


def _code_heads() -> set[str]:
    """The migration heads of the code this process runs. They change only with a new release (a new
    process), so they are read from the migration scripts once, not on every readiness check: parsing
    the scripts cost more than the checks themselves."""
    heads = current_app.extensions.get("notesapp_migration_heads")
    if heads is None:
        config = current_app.extensions["migrate"].migrate.get_config()
        heads = current_app.extensions["notesapp_migration_heads"] = frozenset(
            ScriptDirectory.from_config(config).get_heads())
    return set(heads)


def _migrations_at_head() -> tuple[bool, str]:
    heads = _code_heads()
    with db.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == heads, f"database at {','.join(sorted(current)) or 'none'}, code at {','.join(sorted(heads))}"


@bp.get("/health/ready")
def ready():
    """Ready to serve: database reachable, schema at the code's migration head, Redis reachable."""
    checks, failing = {}, []
    try:
        with db.engine.connect() as conn:
            conn.execute(db.text("SELECT 1"))
        checks["database"] = "ok"
        at_head, detail = _migrations_at_head()
        checks["migrations"] = "ok" if at_head else detail
        if not at_head:
            failing.append("migrations")
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"error: {exc.__class__.__name__}"
        checks["migrations"] = "unknown"
        failing += ["database", "migrations"]
    try:
        cache.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {exc.__class__.__name__}"
        failing.append("redis")
    if failing:
        log.warning("not ready", extra={"failing": failing, "checks": checks})
        return jsonify(status="unavailable", failing=failing, checks=checks), 503
    return jsonify(status="ready", checks=checks)


@bp.get("/version")
def version():
    """Which release answers, and on which host (behind a load balancer, which web host served it)."""
    return jsonify(release=current_app.config["RELEASE_ID"], commit=current_app.config["RELEASE_COMMIT"],
                   host=socket.gethostname())
