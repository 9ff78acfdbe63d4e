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


def _scripts() -> ScriptDirectory:
    """The migration scripts of the code this process runs. They change only with a new release (a new
    process), so they are read once, not on every readiness check: parsing them cost more than the
    checks themselves."""
    scripts = current_app.extensions.get("notesapp_migration_scripts")
    if scripts is None:
        config = current_app.extensions["migrate"].migrate.get_config()
        scripts = current_app.extensions["notesapp_migration_scripts"] = ScriptDirectory.from_config(config)
    return scripts


def _code_heads() -> set[str]:
    heads = current_app.extensions.get("notesapp_migration_heads")
    if heads is None:
        heads = current_app.extensions["notesapp_migration_heads"] = frozenset(_scripts().get_heads())
    return set(heads)


def _migrations_state() -> tuple[bool, str]:
    """Whether the schema fits this code: at the code's migration heads, or ahead of them.

    Ahead means the database is at revisions this code does not know: a newer release migrated it. Under
    the deploy's contract that migrations only expand the schema (add tables, nullable columns, indexes;
    drop or rename in a later release), the code before it still works there, so it stays ready: a deploy
    whose new code fails its gate after migrating can go back to the old code. Behind (the database at an
    older revision, or none) is not ready."""
    heads = _code_heads()
    with db.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    detail = f"database at {','.join(sorted(current)) or 'none'}, code at {','.join(sorted(heads))}"
    if current == heads:
        return True, "ok"
    unknown = set()
    for revision in current:
        try:
            _scripts().get_revision(revision)
        except Exception:  # alembic raises for a revision the scripts do not have
            unknown.add(revision)
    if current and unknown == current:
        return True, f"ok, ahead: {detail}"
    return False, detail


@bp.get("/health/ready")
def ready():
    """Ready to serve: database reachable, schema at the code's migration heads or ahead, Redis reachable."""
    checks, failing = {}, []
    try:
        with db.engine.connect() as conn:
            conn.execute(db.text("SELECT 1"))
        checks["database"] = "ok"
        fits, detail = _migrations_state()
        checks["migrations"] = detail
        if not fits:
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
