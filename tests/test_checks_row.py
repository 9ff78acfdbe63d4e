"""scripts/test's row for the checks, run as the test command runs it: it must say FAIL when one of the
checks (lint, app tests, tests/) failed, not ok as it did whatever they said (each check's own row and the
exit code were right, the summary's first row was not)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def checks_row(results: dict[str, str | None], tmp_path: Path) -> str:
    """What the checks' row says when each named stage left this result ("ok 3", "FAIL 9", None: no file)."""
    script = (REPO / "scripts" / "test").read_text()
    finish = script[script.index("finish() {"):script.index("\n}\n", script.index("finish() {")) + 3]
    start = script.index('wait "${checks[@]}"\n') + len('wait "${checks[@]}"\n')
    block = script[start:script.index('if [ "$images_ok" != yes ]', start)]
    logs = tmp_path / "logs"
    logs.mkdir()
    stages = []
    for name, result in results.items():
        stages.append(name)
        file = logs / ("stage-" + "".join(c if c.isalnum() else "_" for c in name) + ".result")
        if result is not None:
            file.write_text(result + "\n")
    names = " ".join(f"'{name}'" for name in stages)
    command = (f"declare -a summary=()\nfailed=0\nstage_start=0\nlogs={logs}\nstages=({names})\n"
               + finish + block)
    res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert res.stderr == "", res.stderr
    return next((line for line in res.stdout.splitlines() if line.startswith("=== checks:")), res.stdout)


@pytest.mark.parametrize("results, said", [
    ({"yamllint": "ok 3", "app tests": "ok 40"}, "=== checks: ok"),
    ({"yamllint": "ok 3", "app tests": "FAIL 40"}, "=== checks: FAIL"),
    ({"yamllint": "ok 3", "tests/: scripts/testhost": None}, "=== checks: FAIL"),   # never ran
])
def test_the_checks_row_says_what_the_checks_said(tmp_path, results, said):
    assert checks_row(results, tmp_path).startswith(said)
