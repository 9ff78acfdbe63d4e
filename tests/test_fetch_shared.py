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


def fetch(tmp_path: Path, lock: Path | None = None) -> tuple[int, str]:
    """Run the fetch; (exit status, output). With a lock: it is removed once the fetch says it met it
    and will try again (or after 120 s, so that the test fails on what it says), not after a fixed time:
    on a busy machine Ansible took longer to start than any fixed time."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(repo=REPO, commit=commit, cache=tmp_path / "cache"))
    python = sys.executable
    (tmp_path / "hosts").write_text(f"h1 ansible_connection=local ansible_python_interpreter={python}\n")
    env = {**os.environ, "ANSIBLE_STRATEGY": "linear", "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(Path(python).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts"),
                             str(tmp_path / "play.yml")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    if lock is not None:
        timer = threading.Timer(120, lambda: lock.unlink(missing_ok=True))
        timer.start()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if lock is not None and "FAILED - RETRYING" in line:
            lock.unlink(missing_ok=True)
    if lock is not None:
        timer.cancel()
    return proc.wait(timeout=300), "".join(lines)


def test_a_fetch_waits_for_another_runs_git_in_the_same_checkout(tmp_path):
    rc, out = fetch(tmp_path)
    assert rc == 0, out[-3000:]
    checkout = tmp_path / "cache" / f"checkout-{hashlib.sha1(str(REPO).encode()).hexdigest()[:12]}"
    lock = checkout / ".git" / "index.lock"
    lock.touch()   # another run's git, at work in the checkout until the fetch has met it
    rc, out = fetch(tmp_path, lock)
    assert rc == 0, out[-3000:]
    assert "FAILED - RETRYING" in out   # it met the lock, waited and tried again
    assert not lock.exists()
