"""The reference Flask app the playbooks deploy: notes in PostgreSQL, Redis cache and rate limits."""

from __future__ import annotations

import logging

from flask import Flask, current_app
from werkzeug.middleware.proxy_fix import ProxyFix

from . import api, health, jobs, observability, views
from .config import ConfigError, database_uri, get_config
from .extensions import db, limiter, migrate

__all__ = ["create_app", "ConfigError"]


def create_app(config_name: str | None = None, overrides: dict | None = None) -> Flask:
    config = get_config(config_name)
    config.validate()
    app = Flask(__name__)
    app.config.from_object(config)
    app.config.update(overrides or {})
    app.config["SQLALCHEMY_DATABASE_URI"] = database_uri(app.config["SQLALCHEMY_DATABASE_URI"])
    if config_name == "production" or config.__name__ == "ProductionConfig":
        app.debug = False
    observability.configure_logging(app.config["LOG_LEVEL"])
    # Exactly one proxy (nginx) sits in front: trust one hop of X-Forwarded-* and no more.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)

    if app.config["SENTRY_DSN"]:
        import sentry_sdk

        sentry_sdk.init(dsn=app.config["SENTRY_DSN"], release=app.config["RELEASE_ID"],
                        traces_sample_rate=0.0)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(_migrations_dir()))
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    limiter.init_app(app)
    observability.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(jobs.bp)
    app.after_request(_content_security_policy)
    app.cli.add_command(jobs.worker_command)
    app.cli.add_command(jobs.stats_command)
    logging.getLogger("notesapp").info("app created", extra={"release": app.config["RELEASE_ID"]})
    return app


def _content_security_policy(response):
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", current_app.config["CONTENT_SECURITY_POLICY"])
    return response


def _migrations_dir():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "migrations"
