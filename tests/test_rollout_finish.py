"""roles/app's end of a roll-out (tasks/finish.yml), run on the controller itself for six hosts.

The first deploy of a cluster, where one host drops out after another passed its gate: the host that
switched has no release before it. Switching it "back" pointed `current` at releases/ (an empty id) and
took down a host that served fine (seen when a worker host failed during provisioning). It stays on the
new release now, and the message says so.

No test host: the hosts are local (the facts a roll-out passes between its plays are set by hand), and
nothing outside a temporary directory is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAYBOOK = """
- name: The end of a roll-out in which h2 failed after h1 switched, and h3 to h6 were never reached
  hosts: h1,h2,h3,h4,h5,h6
  gather_facts: false
  vars:
    app_name: testapp
    app_home: {home}
    app_deploy_log: {home}/deploy.log
  tasks:
    - name: Say what the roll-out did
      ansible.builtin.set_fact:
        __app_rollout_to: R2
        __app_rollout_from: "{from_release}"
        __app_rollout_action: deploy
    - name: h1 passed its gate
      ansible.builtin.set_fact:
        __app_rolled_out: true
      when: inventory_hostname == 'h1'
    - name: h2 failed its gate
      ansible.builtin.set_fact:
        __app_rollout_failure: failed its gate on purpose
      when: inventory_hostname == 'h2'
    - name: Finish
      ansible.builtin.include_role:
        name: app
        tasks_from: finish
"""


def run(tmp_path: Path, from_release: str) -> subprocess.CompletedProcess:
    home = tmp_path / "srv"
    (home / "releases" / "R2").mkdir(parents=True)
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(home=home, from_release=from_release))
    python = sys.executable
    (tmp_path / "hosts").write_text("".join(
        f"h{n} ansible_connection=local ansible_python_interpreter={python}\n" for n in range(1, 7)))
    env = {**os.environ, "ANSIBLE_STRATEGY": "linear", "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    return subprocess.run([str(Path(python).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts"),
                           str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, timeout=300)


def test_a_first_deploy_that_fails_leaves_the_switched_host_on_the_new_release(tmp_path):
    res = run(tmp_path, from_release="")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode != 0, out[-3000:]
    assert "h2: failed its gate on purpose" in out, out[-3000:]
    assert "Switched back: none." in out, out[-3000:]
    # in the play's order, every time (a set difference once listed them in hash order, which changes per run)
    assert "Never switched: h3, h4, h5, h6." in out, out[-3000:]
    assert "Left on R2, which passed its gate there (no release before it to go back to): h1." in out, out[-3000:]
    assert "Point current at the release" not in out, "switched to an empty release id"
    assert not (tmp_path / "srv" / "current").exists()
    assert (tmp_path / "srv" / "releases" / "R2" / ".FAILED").exists()
