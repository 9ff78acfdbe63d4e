"""roles/barman's first base backup closes the database host's current WAL segment and waits until Barman's
stream has it. The stream begins with the segment the server writes when it connects, so the segment the
switch names must be that one or a later one, never one closed before: the query of the task "Close the
database host's current WAL segment" is run here on a real PostgreSQL (the machine's, started as app/tests
starts it), right after a switch with nothing written since, which is how a new cluster sat after a restore when
the first backup's wait ran out (molecule/cluster, test_point_in_time_restore_after_losing_the_database_host)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "roles/barman/tasks/first_backup.yml"
LOCAL_POSTGRES = REPO / "app/tests/local_postgres.py"
SEGMENT_SIZE = 16 * 1024 * 1024


def switch_query() -> str:
    """The query of the role's task, as the role runs it."""
    tasks = [task for top in yaml.safe_load(TASKS.read_text()) for task in top.get("block", [top])]
    found = [task for task in tasks if task.get("name") == "Close the database host's current WAL segment"]
    assert len(found) == 1, f"no task 'Close the database host's current WAL segment' in {TASKS}"
    return found[0]["community.postgresql.postgresql_query"]["query"]


def load_local_postgres():
    """The app tests' throwaway server (app/tests/local_postgres.py): one way to start PostgreSQL here."""
    spec = importlib.util.spec_from_file_location("local_postgres", LOCAL_POSTGRES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def psql():
    local_postgres = load_local_postgres()
    try:
        with local_postgres.running(prefix="barman-switch-") as server:
            yield server["psql"]
    except local_postgres.Missing as missing:
        pytest.fail(str(missing))


def first_streamed(psql) -> str:
    """The segment a stream that connects now begins with: the one holding the flush position."""
    high, low = (int(part, 16) for part in psql("SELECT pg_current_wal_flush_lsn()").split("/"))
    segment = ((high << 32) + low) // SEGMENT_SIZE
    timeline = int(psql("SELECT timeline_id FROM pg_control_checkpoint()"))
    return f"{timeline:08X}{segment // 256:08X}{segment % 256:08X}"


@pytest.mark.parametrize("before", ["nothing written since the last switch", "a table written"])
def test_the_switch_names_a_segment_the_stream_has(psql, before):
    psql("SELECT pg_switch_wal()")
    if before == "a table written":
        psql("CREATE TABLE IF NOT EXISTS t (n int); INSERT INTO t VALUES (1)")
    streamed_from = first_streamed(psql)
    named = psql(switch_query())
    assert named >= streamed_from, (
        f"the switch named {named}, closed before a stream connected now would begin ({streamed_from}): "
        "the first backup would wait for a segment Barman never receives")
