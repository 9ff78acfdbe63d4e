"""Which CPUs the suite's processes may run on.

Mitogen pins Ansible's processes to CPUs; on a machine with fewer than four it put the top-level process,
every worker and everything they started (ssh, local commands, and so the test hosts that create.yml
boots) on CPU 1 alone, and the 2-core test machine ran the whole suite on one CPU while the other idled.
plugins/strategy/mitogen_linear.py turns the pinning off below four CPUs, and scripts/testhost starts each
host on every CPU whatever its caller was pinned to.

Needs root and the ubuntu2204+stack image (the test command builds it before this runs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTHOST = REPO / "scripts" / "testhost"
PREFIX = os.environ.get("TESTHOST_PREFIX", "") + "affinity-"
EVERY_CPU = (1 << (os.cpu_count() or 1)) - 1

PLAYBOOK = """
- name: A local command, as create.yml's testhost runs
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Say which CPUs it may run on
      ansible.builtin.shell: taskset -p $$
      register: mask
      changed_when: false
    - name: Show it
      ansible.builtin.debug:
        msg: "MASK {{ mask.stdout.split()[-1] }}"
"""


def cpu_mask(pid: int) -> int:
    out = subprocess.run(["taskset", "-p", str(pid)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1], 16)


@pytest.mark.skipif((os.cpu_count() or 1) >= 4 or (os.cpu_count() or 1) < 2,
                    reason="Mitogen's pinning stays on machines with four CPUs or more")
def test_ansible_commands_may_run_on_every_cpu(tmp_path):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    res = subprocess.run(["ansible-playbook", "-i", "localhost,", str(tmp_path / "play.yml")],
                         capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    masks = re.findall(r"MASK ([0-9a-f]+)", res.stdout)
    assert masks and int(masks[0], 16) == EVERY_CPU, res.stdout[-2000:]


def test_a_host_started_by_a_pinned_process_runs_on_every_cpu():
    name = f"{PREFIX}host"
    up = subprocess.run(["taskset", "-c", "0", "python3", str(TESTHOST), "up", "--replace", f"{name}=ubuntu2204+stack"],
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        info = json.loads(up.stdout)
        info = info[0] if isinstance(info, list) else info
        state = Path(os.environ.get("TESTHOST_STATE", "/var/lib/flask-deploy-testhost"))
        pid = int((state / "hosts" / info["name"] / "pid").read_text())
        assert cpu_mask(pid) == EVERY_CPU
    finally:
        subprocess.run(["python3", str(TESTHOST), "down", name], capture_output=True, timeout=180)
