"""scripts/test's run_scenario, run as the test command runs it (xargs starts a new bash for each scenario):
a scenario whose `molecule test` fails must be reported FAIL, although its output goes through awk (the
timestamps in its log). Without pipefail in that new bash, awk's status won and a failure read `ok`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_scenario_with_molecule_exiting(status: int, tmp_path: Path) -> str:
    script = (REPO / "scripts" / "test").read_text()
    function = script[script.index("run_scenario() {"):script.index("export -f run_scenario")]
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "molecule").write_text(f"#!/bin/sh\necho 'molecule {status}'\nexit {status}\n")
    (stubs / "molecule").chmod(0o755)
    project = tmp_path / "project"
    (project / "molecule" / "x").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    command = function + (
        "\nexport -f run_scenario\nexport root logs\n"
        "echo molecule/x | xargs -I{} bash -c 'run_scenario \"$@\"' _ {}\n")
    res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, cwd=project,
                         env={**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "root": str(project),
                              "logs": str(tmp_path / "logs")})
    assert f"molecule {status}" in (tmp_path / "logs" / "molecule_x.log").read_text()
    return res.stdout.split()[0]


@pytest.mark.parametrize("status, reported", [(0, "ok"), (3, "FAIL")])
def test_the_status_is_molecules(tmp_path, status, reported):
    assert run_scenario_with_molecule_exiting(status, tmp_path) == reported
