"""scripts/test's row for the checks, run as the test command runs it: it must say FAIL when one of the
checks (lint, app tests, tests/) failed, not ok as it did whatever they said (each check's own row and the
exit code were right, the summary's first row was not)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def part(script: str, start: str, end: str) -> str:
    begin = script.index(start)
    return script[begin:script.index(end, begin) + len(end)]


def checks_row(results: dict[str, str | None], tmp_path: Path, run: dict[str, str] | None = None) -> str:
    """What the checks' row says when each named stage left this result ("ok 3", "FAIL 9", None: no file),
    and each stage of `run` ran that command through the script's own `stage`."""
    script = (REPO / "scripts" / "test").read_text()
    functions = (part(script, "finish() {", "\n}\n") + part(script, "stage_file() {", "\n}\n")
                 + part(script, "stage() {", "\n}\n"))
    start = script.index('wait "${checks[@]}"\n') + len('wait "${checks[@]}"\n')
    block = script[start:script.index('if [ "$images_ok" != yes ]', start)]
    logs = tmp_path / "logs"
    logs.mkdir()
    stages = list(results) + list(run or {})
    names = " ".join(f"'{name}'" for name in stages)
    made = "".join(f"echo '{result}' > \"$(stage_file '{name}').result\"\n"
                   for name, result in results.items() if result is not None)
    ran = "".join(f"stage '{name}' {command}\n" for name, command in (run or {}).items())
    command = (f"declare -a summary=()\nfailed=0\nstage_start=0\nlogs={logs}\nstages=({names})\n"
               + functions + made + ran + block)
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


def test_a_stage_with_a_long_name_reports_its_own_result(tmp_path):
    """The tests/ stage's name lists what it covers and grew past the 255 characters a file name may have:
    its files could not be written, and the stage said "not run" (seen in a full run)."""
    name = "tests/: " + ", ".join(f"the {n}th thing it covers" for n in range(20))
    assert checks_row({"yamllint": "ok 3"}, tmp_path, run={name: "true"}).startswith("=== checks: ok")
