"""roles/app's one reading of a migration tool's output (filter_plugins/migration.py): deploys, rollbacks
and the check-mode preview all decide on it, so it is tested on the output apps really print."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "migration", Path(__file__).resolve().parents[1] / "roles/app/filter_plugins/migration.py")
migration = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(migration)


def test_the_revision_line_among_log_lines():
    lines = ["INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.",
             "INFO  [alembic.runtime.migration] Will assume transactional DDL.",
             "0003 (head)"]
    assert migration.migration_revision(lines) == "0003"


def test_the_last_revision_wins_and_hex_revisions_work():
    assert migration.migration_revision(["ae1027a6acf", "4f2b1c9d8e7a (head)"]) == "4f2b1c9d8e7a"


def test_no_revision_gives_the_default():
    assert migration.migration_revision([]) == "none"
    assert migration.migration_revision(None) == "none"
    assert migration.migration_revision(["WARNING: something happened here"], "no revision") == "no revision"
