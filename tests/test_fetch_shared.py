"""roles/app's fetch on the controller (tasks/fetch.yml, preflight's and every deploy's first step) when
another run works in the same checkout: two environments deployed at once from one controller, or two
test scenarios. The checkout is keyed by the repository only, so the second run found the first one's
git lock (index.lock) and failed (seen in the full suite: molecule/site and molecule/cluster converging
at once). It waits for the lock now and tries again.

No test host: one local host, this repository as the app's, a temporary cache directory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAYBOOK = """
- name: Fetch the app's code on the controller
  hosts: h1
  gather_facts: false
  vars:
    app_git_repo: {repo}
    app_git_version: {commit}
    app_controller_cache_dir: {cache}
  tasks:
    - name: Fetch
      ansible.builtin.include_role:
        name: app
        tasks_from: fetch
"""


def fetch(tmp_path: Path) -> subprocess.CompletedProcess:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(repo=REPO, commit=commit, cache=tmp_path / "cache"))
    python = sys.executable
    (tmp_path / "hosts").write_text(f"h1 ansible_connection=local ansible_python_interpreter={python}\n")
    env = {**os.environ, "ANSIBLE_STRATEGY": "linear", "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    return subprocess.run([str(Path(python).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts"),
                           str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, timeout=300)


def test_a_fetch_waits_for_another_runs_git_in_the_same_checkout(tmp_path):
    first = fetch(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    checkout = tmp_path / "cache" / f"checkout-{hashlib.sha1(str(REPO).encode()).hexdigest()[:12]}"
    lock = checkout / ".git" / "index.lock"
    lock.touch()   # another run's git, at work in the checkout for four seconds
    threading.Thread(target=lambda: (time.sleep(4), lock.unlink()), daemon=True).start()
    second = fetch(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "FAILED - RETRYING" in second.stdout   # it met the lock, waited and tried again
    assert not lock.exists()
