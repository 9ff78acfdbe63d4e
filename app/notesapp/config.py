"""Configuration classes. Production reads everything from the environment and refuses weak secrets."""

from __future__ import annotations

import json
import os

WEAK_SECRETS = {"changeme", "change-me", "secret", "dev", "development", "password", "flask", "default",
                "your-secret-key", "replace-me", "notasecret"}
MIN_SECRET_LENGTH = 32


class ConfigError(RuntimeError):
    """A setting is missing or unsafe; the message names the variable and the fix."""


class Config:
    SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-not-secret")
    # Keys that signed sessions and share links before the last rotation: still accepted, never used to
    # sign. $SECRET_KEY_FALLBACKS is a JSON list of strings (any characters), as the deploy writes it.
    SECRET_KEY_FALLBACKS: list[str] = []
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL", "postgresql:///notes")
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    RELEASE_ID = os.environ.get("APP_RELEASE", "unknown")
    RELEASE_COMMIT = os.environ.get("APP_COMMIT", "unknown")
    SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
    NOTES_PER_PAGE = 20
    NOTES_MAX_PER_PAGE = 100
    LIST_CACHE_SECONDS = int(os.environ.get("LIST_CACHE_SECONDS", "30"))
    RATELIMIT_WRITE = os.environ.get("RATELIMIT_WRITE", "30 per minute")
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    # Answer only these Host names (400 for others, so no link or redirect the app makes names another
    # host): production reads them from $TRUSTED_HOSTS (comma-separated). None: any.
    TRUSTED_HOSTS = None
    # Sent with every HTML answer: scripts, styles and forms from this site only, never framed.
    CONTENT_SECURITY_POLICY = ("default-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
                               "frame-ancestors 'none'")
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    DEBUG = False
    TESTING = False

    @classmethod
    def validate(cls) -> None:
        """Checks run when the app is created with this configuration."""


class DevelopmentConfig(Config):
    DEBUG = True


class TestingConfig(Config):
    TESTING = True
    LIST_CACHE_SECONDS = 30


class ProductionConfig(Config):
    DEBUG = False
    # Served over HTTPS only (nginx redirects plain HTTP): cookies never travel in the clear.
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True

    @classmethod
    def validate(cls) -> None:
        secret = os.environ.get("SECRET_KEY", "")
        if not secret:
            raise ConfigError("SECRET_KEY is not set: set it to a random value, e.g. "
                              "`python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`")
        if secret.lower() in WEAK_SECRETS or len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"SECRET_KEY is weak (a known default or shorter than {MIN_SECRET_LENGTH} "
                              "characters): set a random value, e.g. "
                              "`python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`")
        if not os.environ.get("DATABASE_URL"):
            raise ConfigError("DATABASE_URL is not set: set it to postgresql://USER:PASSWORD@HOST/DBNAME")
        cls.SECRET_KEY = secret
        cls.SECRET_KEY_FALLBACKS = secret_key_fallbacks(os.environ.get("SECRET_KEY_FALLBACKS", ""))
        cls.SQLALCHEMY_DATABASE_URI = os.environ["DATABASE_URL"]
        cls.TRUSTED_HOSTS = trusted_hosts(os.environ.get("TRUSTED_HOSTS", ""))


def trusted_hosts(value: str) -> list[str] | None:
    """TRUSTED_HOSTS=app.example.com,www.example.com as Flask wants it; empty: any host."""
    return [host.strip() for host in value.split(",") if host.strip()] or None


def database_uri(url: str) -> str:
    """Pin the driver to psycopg2 (SQLAlchemy 2.1 defaults postgresql:// to psycopg 3) and accept the
    postgres:// spelling some providers hand out."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


CONFIGS = {"development": DevelopmentConfig, "testing": TestingConfig, "production": ProductionConfig}


def get_config(name: str | None) -> type[Config]:
    name = name or os.environ.get("APP_ENV", "production")
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigError(f"APP_ENV={name!r} is unknown: use one of {', '.join(CONFIGS)}") from None


def secret_key_fallbacks(value: str) -> list[str]:
    """SECRET_KEY_FALLBACKS='["old key"]' as Flask wants it (a list); empty: none."""
    if not value.strip():
        return []
    try:
        keys = json.loads(value)
    except ValueError:
        keys = None
    if not isinstance(keys, list) or not all(isinstance(key, str) and key for key in keys):
        raise ConfigError('SECRET_KEY_FALLBACKS must be a JSON list of the previous keys, e.g. ["the old key"] '
                          "(leave it unset for none)")
    return keys
