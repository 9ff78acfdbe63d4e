"""roles/app's fetch on the controller (tasks/fetch.yml) with app_git_version HEAD, the default: the commit
the repository has checked out now. The git module given HEAD followed the branch the controller's clone
was first made from, so a repository switched to another branch deployed the old branch's code, and a
repository on a detached HEAD with no branch (the shape of a CI checkout of a tag or a pull request)
failed every deploy with "Failed to checkout branch None".

No test host: one local host, a small repository made here (not ours), a temporary cache directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAYBOOK = """
- name: Fetch the app's code on the controller
  hosts: h1
  gather_facts: false
  vars:
    app_git_repo: {repo}
    app_controller_cache_dir: {cache}
  tasks:
    - name: Fetch
      ansible.builtin.include_role:
        name: app
        tasks_from: fetch
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
                          ).stdout.strip()


def commit(repo: Path, text: str) -> str:
    """A commit that changes app/requirements.txt (the file the fetch wants); its id."""
    (repo / "app").mkdir(parents=True, exist_ok=True)
    (repo / "app" / "requirements.txt").write_text(f"# {text}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", text)
    return git(repo, "rev-parse", "HEAD")


def fetch(tmp_path: Path, repo: Path) -> str:
    """Run the fetch with app_git_version left at HEAD; the commit the controller's checkout is at."""
    cache = tmp_path / "cache"
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(repo=repo, cache=cache))
    (tmp_path / "hosts").write_text(f"h1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = {**os.environ, "ANSIBLE_STRATEGY": "linear", "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts"),
                           str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    [checkout] = cache.glob("checkout-*")
    return git(checkout, "rev-parse", "HEAD")


def test_head_follows_the_branch_the_repository_has_checked_out(tmp_path):
    repo = tmp_path / "app-repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    first = commit(repo, "one")
    assert fetch(tmp_path, repo) == first
    git(repo, "checkout", "-q", "-b", "feature")
    feature = commit(repo, "on a feature branch")
    assert fetch(tmp_path, repo) == feature   # the old fetch stayed at main's commit
    git(repo, "checkout", "-q", "main")
    assert fetch(tmp_path, repo) == first


def test_head_of_a_detached_checkout_with_no_branch_is_fetched(tmp_path):
    repo = tmp_path / "app-repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    commit(repo, "one")
    git(repo, "checkout", "-q", "--detach")
    git(repo, "branch", "-q", "-D", "main")   # as a CI checkout of a tag or a pull request leaves it
    tag = commit(repo, "a release")
    assert fetch(tmp_path, repo) == tag       # the old fetch: "Failed to checkout branch None"
    later = commit(repo, "the next one, on no branch either")
    assert fetch(tmp_path, repo) == later     # fetched by name into the clone made before
