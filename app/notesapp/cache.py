"""Redis for the list cache. Every call tolerates Redis being down: the app serves, degraded, and logs."""

from __future__ import annotations

import json
import logging

import redis
from flask import current_app

log = logging.getLogger("notesapp.cache")
LIST_VERSION_KEY = "notes:list:version"


def client() -> redis.Redis:
    ext = current_app.extensions
    if "redis" not in ext:
        ext["redis"] = redis.Redis.from_url(current_app.config["REDIS_URL"], socket_timeout=0.5,
                                            socket_connect_timeout=0.5, health_check_interval=30)
    return ext["redis"]


def _key(page: int, per_page: int) -> str:
    version = client().get(LIST_VERSION_KEY) or b"0"
    return f"notes:list:{version.decode()}:{page}:{per_page}"


def get_list(page: int, per_page: int) -> dict | None:
    try:
        raw = client().get(_key(page, per_page))
    except redis.RedisError as exc:
        log.warning("cache unavailable, serving from the database", extra={"error": str(exc)})
        return None
    return json.loads(raw) if raw else None


def put_list(page: int, per_page: int, data: dict) -> None:
    try:
        client().set(_key(page, per_page), json.dumps(data), ex=current_app.config["LIST_CACHE_SECONDS"])
    except redis.RedisError as exc:
        log.warning("cache unavailable, not caching", extra={"error": str(exc)})


def invalidate_lists() -> None:
    """Bump the version in every list key: old pages expire on their own."""
    try:
        client().incr(LIST_VERSION_KEY)
    except redis.RedisError as exc:
        log.warning("cache unavailable, lists may be stale until they expire", extra={"error": str(exc)})


def ping() -> None:
    client().ping()
