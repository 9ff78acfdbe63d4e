"""roles/app's fetch on the controller (tasks/fetch.yml, preflight's and every deploy's first step).

- Another run at work in the same checkout: two environments deployed at once from one controller, or
  two test scenarios. The checkout is keyed by the repository only, so the second run found the first
  one's git lock (index.lock) and failed (seen in the full suite: molecule/site and molecule/cluster
  converging at once). It waits for the lock now and tries again.
- app_git_version HEAD, the default: the commit the repository has checked out now. The git module given
  HEAD followed the branch the controller's clone was first made from, so a repository switched to
  another branch deployed the old branch's code, and a repository on a detached HEAD with no branch (the
  shape of a CI checkout of a tag or a pull request) failed every deploy with "Failed to checkout branch
  None".

No test host: one local host, a temporary cache directory; this repository, or a small one made here."""

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
    app_git_version: {version}
    app_controller_cache_dir: {cache}
  tasks:
    - name: Fetch
      ansible.builtin.include_role:
        name: app
        tasks_from: fetch
"""


def fetch(tmp_path: Path, repo: Path, version: str = "HEAD", lock: Path | None = None) -> tuple[int, str]:
    """Run the fetch; (exit status, output). With a lock: it is removed once the fetch says it met it
    and will try again (or after 120 s, so that the test fails on what it says), not after a fixed time:
    on a busy machine Ansible took longer to start than any fixed time."""
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(repo=repo, version=version, cache=tmp_path / "cache"))
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


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
                          ).stdout.strip()


def test_a_fetch_waits_for_another_runs_git_in_the_same_checkout(tmp_path):
    commit = git(REPO, "rev-parse", "HEAD")
    rc, out = fetch(tmp_path, REPO, commit)
    assert rc == 0, out[-3000:]
    checkout = tmp_path / "cache" / f"checkout-{hashlib.sha1(str(REPO).encode()).hexdigest()[:12]}"
    lock = checkout / ".git" / "index.lock"
    lock.touch()   # another run's git, at work in the checkout until the fetch has met it
    rc, out = fetch(tmp_path, REPO, commit, lock)
    assert rc == 0, out[-3000:]
    assert "FAILED - RETRYING" in out   # it met the lock, waited and tried again
    assert not lock.exists()


def commit(repo: Path, text: str) -> str:
    """A commit that changes app/requirements.txt (the file the fetch wants); its id."""
    (repo / "app").mkdir(parents=True, exist_ok=True)
    (repo / "app" / "requirements.txt").write_text(f"# {text}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", text)
    return git(repo, "rev-parse", "HEAD")


def fetched_head(tmp_path: Path, repo: Path) -> str:
    """Run the fetch with app_git_version left at HEAD; the commit the controller's checkout is at."""
    rc, out = fetch(tmp_path, repo)
    assert rc == 0, out[-3000:]
    [checkout] = (tmp_path / "cache").glob("checkout-*")
    return git(checkout, "rev-parse", "HEAD")


def test_head_follows_the_branch_the_repository_has_checked_out(tmp_path):
    repo = tmp_path / "app-repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    first = commit(repo, "one")
    assert fetched_head(tmp_path, repo) == first
    git(repo, "checkout", "-q", "-b", "feature")
    feature = commit(repo, "on a feature branch")
    assert fetched_head(tmp_path, repo) == feature   # the old fetch stayed at main's commit
    git(repo, "checkout", "-q", "main")
    assert fetched_head(tmp_path, repo) == first


def test_head_of_a_detached_checkout_with_no_branch_is_fetched(tmp_path):
    repo = tmp_path / "app-repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    commit(repo, "one")
    git(repo, "checkout", "-q", "--detach")
    git(repo, "branch", "-q", "-D", "main")   # as a CI checkout of a tag or a pull request leaves it
    tag = commit(repo, "a release")
    assert fetched_head(tmp_path, repo) == tag       # the old fetch: "Failed to checkout branch None"
    later = commit(repo, "the next one, on no branch either")
    assert fetched_head(tmp_path, repo) == later     # fetched by name into the clone made before
