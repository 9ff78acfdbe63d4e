"""roles/monitoring's alert rules, rendered by Ansible from the role's template with its defaults, checked by
promtool and tested with `promtool test rules` (tests/alert_rules/rules_test.yml: each alert fires when it
should and not before, and a case that must not fire). promtool comes from scripts/setup (Debian's
prometheus package, unpacked into the cache)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROMTOOL = REPO / ".cache/promtool"
ROLE = REPO / "roles/monitoring"


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rules")
    dest = out / "flask-deploy.rules.yml"
    res = subprocess.run(
        [str(REPO / ".venv/bin/ansible"), "localhost", "-c", "local", "-i", "localhost,", "-m", "ansible.builtin.template",
         "-a", f"src={ROLE}/templates/etc/prometheus/rules/flask-deploy.rules.yml.j2 dest={dest}",
         "-e", f"@{ROLE}/defaults/main.yml", "-e", f"ansible_python_interpreter={sys.executable}"], capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "ANSIBLE_STRATEGY": "linear"})   # Mitogen's strategy is for SSH hosts
    assert res.returncode == 0, res.stdout + res.stderr
    shutil.copy(REPO / "tests/alert_rules/rules_test.yml", out / "rules_test.yml")
    return dest


def test_the_rules_are_valid(rules):
    res = subprocess.run([str(PROMTOOL), "check", "rules", str(rules)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 15 rules found" in res.stdout, res.stdout


def test_each_alert_fires_when_it_should_and_not_before(rules):
    res = subprocess.run([str(PROMTOOL), "test", "rules", "rules_test.yml"], capture_output=True, text=True,
                         cwd=rules.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout, res.stdout
