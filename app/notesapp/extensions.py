"""Extension objects, created unbound and initialised in the application factory."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()
# Redis-backed, so limits hold across Gunicorn workers and web hosts. If Redis is down the limiter
# falls back to per-process memory instead of failing requests.
limiter = Limiter(key_func=get_remote_address, default_limits=[], swallow_errors=True,
                  in_memory_fallback_enabled=True)
