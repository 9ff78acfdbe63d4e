"""roles/barman's first base backup closes the database host's current WAL segment and waits until Barman's
stream has it. The stream begins with the segment the server writes when it connects, so the segment the
switch names must be that one or a later one, never one closed before: the query of the task "Close the
database host's current WAL segment" is run here on a real PostgreSQL (the machine's, as app/tests starts
it), right after a switch with nothing written since, which is how a new cluster sat after a restore when
the first backup's wait ran out (molecule/cluster, test_point_in_time_restore_after_losing_the_database_host)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

TASKS = Path(__file__).resolve().parents[1] / "roles/barman/tasks/first_backup.yml"
SEGMENT_SIZE = 16 * 1024 * 1024


def switch_query() -> str:
    """The query of the role's task, as the role runs it."""
    tasks = [task for top in yaml.safe_load(TASKS.read_text()) for task in top.get("block", [top])]
    found = [task for task in tasks if task.get("name") == "Close the database host's current WAL segment"]
    assert len(found) == 1, f"no task 'Close the database host's current WAL segment' in {TASKS}"
    return found[0]["community.postgresql.postgresql_query"]["query"]


def as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def psql():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL server binaries not found: install the postgresql package (make setup does)")
    bindir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="barman-switch-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = base / "data"
    subprocess.run(as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]),
                   check=True, capture_output=True)
    subprocess.run(as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                                f"-p {port} -k {base} -c listen_addresses='' -c fsync=off", "start"]),
                   check=True, capture_output=True)

    def run(query: str) -> str:
        return subprocess.run(as_postgres(["psql", "-h", str(base), "-p", str(port), "-U", "postgres", "-XAt",
                                           "-v", "ON_ERROR_STOP=1", "-c", query]),
                              check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield run
    finally:
        subprocess.run(as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


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
