"""Gunicorn's entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

import sys

from notesapp import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:
    # Say it plainly, then let it propagate: Gunicorn treats a worker that fails to boot as fatal
    # and stops, instead of respawning it forever.
    print(f"configuration error: {exc}", file=sys.stderr)
    raise
