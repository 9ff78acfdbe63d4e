"""plugins/strategy/mitogen_linear.py on real hosts of two OS releases: each host keeps its own Python.

Under Mitogen every task's result carries the discovered interpreter of its host, and Ansible gives the
facts of a run_once result to every host of the play; without the strategy's fix, the host after a
run_once task on Ubuntu 22.04 was told to run /usr/bin/python3.10 on Ubuntu 24.04 and was unreachable
(roles/app's migration tasks run once on the web hosts, so a mixed web group could not deploy). The
project's ansible.cfg names /usr/bin/python3 instead; the discovery runs for a user who sets
interpreter_python (or ansible_python_interpreter) to auto, as this test does.

Needs root and the ubuntu2204+stack and ubuntu2404 images (the test command builds them before this runs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTHOST = REPO / "scripts" / "testhost"
PREFIX = os.environ.get("TESTHOST_PREFIX", "") + "strategy-"

PLAYBOOK = """
- name: A run_once task, then a task on every host
  hosts: all
  gather_facts: false
  tasks:
    - name: Run once
      ansible.builtin.command: "true"
      run_once: true
      changed_when: false
    - name: Run a module on every host
      ansible.builtin.command: "true"
      changed_when: false
    - name: Say which Python each host's modules ran with
      ansible.builtin.debug:
        msg: "PYTHON {{ inventory_hostname }} {{ ansible_facts.discovered_interpreter_python }}"
"""


def test_a_run_once_task_leaves_each_host_its_own_python(tmp_path):
    names = {f"{PREFIX}jammy": "ubuntu2204+stack", f"{PREFIX}noble": "ubuntu2404"}
    up = subprocess.run(["python3", str(TESTHOST), "up", "--replace", *(f"{n}={os}" for n, os in names.items())],
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        hosts = {h["name"]: h for h in json.loads(up.stdout)}
        inventory = {"all": {"hosts": {name: {
            "ansible_host": h["address"], "ansible_user": h["user"],
            "ansible_ssh_private_key_file": h["identity_file"], "ansible_host_key_checking": False,
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}
            for name, h in hosts.items()}}}
        (tmp_path / "hosts.json").write_text(json.dumps(inventory))
        (tmp_path / "play.yml").write_text(PLAYBOOK)
        res = subprocess.run(["ansible-playbook", "-i", str(tmp_path / "hosts.json"), str(tmp_path / "play.yml")],
                             capture_output=True, text=True, timeout=300, cwd=REPO,
                             env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                                  "ANSIBLE_PYTHON_INTERPRETER": "auto_silent"})
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        assert "mitogen" in (REPO / "ansible.cfg").read_text()
        ran = dict(re.findall(r"PYTHON (\S+) (\S+)", res.stdout))
        assert ran.get(f"{PREFIX}jammy", "").startswith("/usr/bin/python3.10"), res.stdout[-2000:]
        assert ran.get(f"{PREFIX}noble", "").startswith("/usr/bin/python3.12"), res.stdout[-2000:]
    finally:
        subprocess.run(["python3", str(TESTHOST), "down", *names], capture_output=True, timeout=180)
