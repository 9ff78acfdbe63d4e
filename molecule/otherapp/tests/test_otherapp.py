"""A Flask app that is not ours (molecule/otherapp/bookshelf), deployed by the settings in
inventory/group_vars/all/ alone: what site.yml made of it, a deploy with a migration, a rollback with its
downgrade, the gate's release check by header (and off), a build step that fails, a missing Gunicorn
config file, and bad settings refused before any host changes.

The tests run in order and build on each other (one host, one history). Every test takes the `host`
fixture: pytest groups tests by that module-scoped fixture, and a test without it would run out of order."""

import base64
import json
import shlex
import subprocess
from pathlib import Path

import pytest

import testhelpers

REPO = testhelpers.REPO
DOMAIN = "solo.test"
FIXTURE = "molecule/otherapp/bookshelf"
HOME = "/opt/bookshelf"  # app_home in the inventory, not the default /srv/bookshelf
HISTORY = {}   # tag -> commit of the test repository
RELEASES = {}  # tag -> release id

MIGRATION_0002 = '''"""Add the loans table.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("loans", sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("book_id", sa.Integer(), sa.ForeignKey("books.id"), nullable=False))


def downgrade():
    op.drop_table("loans")
'''


@pytest.fixture(scope="module")
def app_repo(tmp_path_factory):
    """bookshelf's history: v1 (as committed here), v2 (a migration), bad-po (a translation whose
    placeholder does not match, which `pybabel compile` refuses)."""
    repo = tmp_path_factory.mktemp("bookshelf-history")
    subprocess.run(f"git -C {shlex.quote(str(REPO))} archive HEAD {FIXTURE} | tar -x -C {shlex.quote(str(repo))}",
                   shell=True, check=True)
    testhelpers.git(repo, "init", "-q", "-b", "main")
    testhelpers.git(repo, "config", "user.email", "tests@flask-deploy.test")
    testhelpers.git(repo, "config", "user.name", "tests")

    def commit(tag):
        testhelpers.git(repo, "add", "-A")
        testhelpers.git(repo, "commit", "-q", "-m", tag)
        testhelpers.git(repo, "tag", tag)
        HISTORY[tag] = testhelpers.git(repo, "rev-parse", "HEAD")

    commit("v1")
    (repo / FIXTURE / "migrations/versions/0002_add_loans.py").write_text(MIGRATION_0002)
    commit("v2")
    po = repo / FIXTURE / "bookshelf/translations/fr/LC_MESSAGES/messages.po"
    po.write_text(po.read_text() + '\n#, python-format\nmsgid "%(count)d books"\nmsgstr "%(nombre)d livres"\n')
    commit("bad-po")
    testhelpers.git(repo, "checkout", "-q", "v2")
    requirements = repo / FIXTURE / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("flask==3.1.3", "flask==0.0.1"))
    commit("bad-pin")
    return repo


def deploy(app_repo, tag, options=(), env=None, **extra):
    return testhelpers.run_playbook("playbooks/deploy.yml", {
        "app_git_repo": str(app_repo), "app_git_version": tag,
        "app_controller_cache_dir": str(app_repo.parent / "controller-cache"), **extra}, options=options, env=env)


# The runs whose traces the secret search reads (test_no_secret_...): as a user without Mitogen runs them,
# where every module goes through sudo's command line (so `environment:` would land in sudo's log), and with
# -vvv, whose output the search reads too.
PLAIN_ANSIBLE = {"ANSIBLE_STRATEGY": "linear"}
TRACED = ("-vvv",)
CONTROLLER_OUTPUT = []
SAMPLER = "/var/tmp/process-list-samples"


def secrets():
    """Every vault value, as written and as it appears percent-encoded in a URL."""
    import yaml
    from urllib.parse import quote

    vault = yaml.safe_load((Path(__file__).parents[1] / "inventory/group_vars/all/vault.yml").read_text())
    return {f"{name}{form}": text for name, value in vault.items()
            for form, text in (("", value), (" (in a URL)", quote(value, safe="")))}


def get(host, path, headers=False):
    flags = "-sS --fail" + (" -i" if headers else "")
    return host.check_output(f"curl {flags} --resolve {DOMAIN}:443:127.0.0.1 -k https://{DOMAIN}{path}")


def live_release(host):
    return host.check_output(f"readlink {HOME}/current").removeprefix("releases/")


def served_release(host):
    """The release the app itself says it runs (the header it sets from APP_RELEASE)."""
    for line in get(host, "/healthz", headers=True).splitlines():
        if line.lower().startswith("x-bookshelf-release:"):
            return line.split(":", 1)[1].strip()
    return ""


def worker_release(host):
    """The release the worker runs: its process's working directory, resolved when it started."""
    pid = host.check_output("systemctl show --property=MainPID --value bookshelf-worker@1.service")
    return host.check_output(f"readlink /proc/{pid}/cwd").rsplit("/", 1)[-1]


def database_revision(host):
    return host.check_output("runuser -u postgres -- psql -tAc 'SELECT version_num FROM alembic_version' bookshelf")


def test_site_yml_deployed_the_app_by_settings_alone(host):
    """The converge (site.yml with the inventory's group_vars) ended with bookshelf answering over HTTPS,
    its translation compiled by the build step, its psycopg2 built from source, under its own entry point."""
    assert get(host, "/").strip() == "Bienvenue dans la bibliothèque"
    assert get(host, "/healthz").strip() == "ok"
    RELEASES["head"] = live_release(host)
    assert served_release(host) == RELEASES["head"] == worker_release(host)
    assert database_revision(host) == "0001"
    unit = host.check_output("systemctl cat bookshelf.service")
    assert "'bookshelf.web:make_app()'" in unit or "bookshelf.web:make_app()" in unit
    assert "--config" not in unit
    # app_home set in the inventory: the units run from it, and nothing was made at the default
    assert f"WorkingDirectory={HOME}/current" in unit
    assert f"EnvironmentFile=-{HOME}/current/.release.env" in unit
    assert not host.file("/srv/bookshelf").exists
    # psycopg2 from its sdist: no wheel of psycopg2-binary, a C extension compiled on the host
    assert host.run(f"{HOME}/current/venv/bin/python -c 'import psycopg2._psycopg'").rc == 0
    assert host.run(f"{HOME}/current/venv/bin/pip show psycopg2-binary").rc != 0


def test_the_app_and_its_worker_run_sandboxed(host):
    """Debian 12's systemd: bookshelf's units verify and each scores at most 2 in its security analysis."""
    testhelpers.assert_sandboxed(host, ["bookshelf.service", "bookshelf-worker@1.service"])


def test_the_built_release_belongs_to_root(host):
    """The build user wrote the compiled catalog; afterwards nothing in the release is anyone's but root's."""
    release = f"{HOME}/releases/{RELEASES['head']}"
    assert host.file(f"{release}/bookshelf/translations/fr/LC_MESSAGES/messages.mo").exists
    assert host.check_output(f"find {release} ! -user root -print | head -5") == ""
    assert host.user("bookshelf-build").shell == "/usr/sbin/nologin"


def test_deploy_with_a_migration_and_the_release_check_off(host, app_repo):
    """v2 migrates the database once; with app_gate_release_check=none the gate checks readiness only.
    From here to the secret search a sampler records every command line on the host, as any local user
    sees them (`ps` as nobody, every 50 ms)."""
    sampler = f"while :; do ps -eww -o args=; sleep 0.05; done | awk '!seen[$0]++ {{ print; fflush() }}' > {SAMPLER}"
    host.check_output(f"systemd-run --quiet --unit=process-list-sampler --uid=nobody --gid=nogroup "
                      f"/bin/sh -c {shlex.quote(sampler)}")
    # with the secrets given to a build step too (app_build_with_secrets): the step sees them, the search
    # below finds them nowhere
    build = ["pybabel compile --directory bookshelf/translations",
             'test -n "$DATABASE_URL" && test -n "$SECRET_KEY" && touch .built-with-secrets']
    rc, out = deploy(app_repo, "v2", TRACED, PLAIN_ANSIBLE, app_gate_release_check="none",
                     app_build_with_secrets=True, app_build_commands=build)
    CONTROLLER_OUTPUT.append(out)
    assert rc == 0, out[-3000:]
    RELEASES["v2"] = live_release(host)
    assert RELEASES["v2"].endswith("-" + HISTORY["v2"][:8])
    assert served_release(host) == RELEASES["v2"] == worker_release(host)
    assert database_revision(host) == "0002"
    assert host.file(f"{HOME}/shared/backups/pre-migrate-{RELEASES['v2']}.dump").exists
    assert host.file(f"{HOME}/releases/{RELEASES['v2']}/.built-with-secrets").exists


def test_rollback_with_its_downgrade(host):
    """Back to the release site.yml made, the database downgraded to its revision; the header gate passes."""
    rc, out = testhelpers.run_playbook("playbooks/rollback.yml", {"rollback_db": "downgrade"}, options=TRACED,
                                       env=PLAIN_ANSIBLE)
    CONTROLLER_OUTPUT.append(out)
    assert rc == 0, out[-3000:]
    assert live_release(host) == RELEASES["head"]
    assert served_release(host) == RELEASES["head"] == worker_release(host)
    assert database_revision(host) == "0001"


def test_a_backup_run_by_hand(host):
    """playbooks/backup.yml, as the README's day-two section runs it: a new dump in the backup directory."""
    before = host.check_output("find /var/backups/postgresql -name '*.dump' | wc -l")
    rc, out = testhelpers.run_playbook("playbooks/backup.yml", options=TRACED, env=PLAIN_ANSIBLE)
    CONTROLLER_OUTPUT.append(out)
    assert rc == 0, out[-3000:]
    assert int(host.check_output("find /var/backups/postgresql -name '*.dump' | wc -l")) > int(before)


def test_no_secret_on_any_command_line_or_in_any_log(host):
    """After site.yml, a deploy with a migration (and its dump), a rollback with its downgrade (and its dump)
    and a backup, run through a user with sudo, without Mitogen and with -vvv: no vault value (as written
    or percent-encoded) is in the host's journal, under /var/log, in any command line the sampler saw, or
    in the controller's output."""
    host.run("systemctl stop process-list-sampler.service")
    samples = host.check_output(f"wc -l < {SAMPLER}")
    assert int(samples) > 100, f"the sampler saw only {samples} command lines"
    # the values go to the host base64-encoded, into a file only root reads: no command line holds them
    patterns = base64.b64encode("\n".join(secrets().values()).encode()).decode()
    host.check_output(f"umask 077; echo {patterns} | base64 -d > /run/secret-patterns")
    places = {
        "the journal": "journalctl --no-pager -o export | grep -aoF -f /run/secret-patterns",
        "/var/log": "grep -raohF -f /run/secret-patterns /var/log --exclude-dir=journal",
        "the process list": f"grep -aoF -f /run/secret-patterns {SAMPLER}",
    }
    found = []
    for where, command in places.items():
        hits = set(host.run(command).stdout.splitlines())
        found += [f"{name} in {where}" for name, value in secrets().items() if value in hits]
    found += [f"{name} in the controller's -vvv output" for name, value in secrets().items()
              if any(value in out for out in CONTROLLER_OUTPUT)]
    assert len(CONTROLLER_OUTPUT) == 3
    assert found == [], "found:\n" + "\n".join(found)


def test_a_header_that_does_not_name_the_release_fails_the_gate(host, app_repo):
    """The header check can fail: the app does not send X-Missing, so v2 is switched back at once."""
    rc, out = deploy(app_repo, "v2", app_release_header="X-Missing", app_deploy_force=True)
    assert rc != 0
    flat = " ".join(out.split())
    assert "answered with X-Missing: (none), not" in flat, out[-3000:]
    assert live_release(host) == RELEASES["head"]
    assert served_release(host) == RELEASES["head"]


def stopped_before_the_switch(host, out, tag, *messages):
    """The deploy of `tag` stopped before any switch, saying `messages`: its release is marked failed and
    the live release has not changed. Returns the failed release's directory."""
    flat = " ".join(out.split())
    for message in messages + ("Nothing was switched",):
        assert message in flat, out[-3000:]
    failed = host.check_output(f"ls -d {HOME}/releases/*-{HISTORY[tag][:8]}").split()
    assert len(failed) == 1 and host.file(f"{failed[0]}/.FAILED").exists
    assert live_release(host) == RELEASES["head"]
    return failed[0]


def test_a_failing_build_step_marks_the_release_and_switches_nothing(host, app_repo):
    rc, out = deploy(app_repo, "bad-po")
    assert rc != 0
    stopped_before_the_switch(host, out, "bad-po", "build step 1 failed in release",
                              "(pybabel compile --directory bookshelf/translations), exit status 1")
    assert get(host, "/").strip() == "Bienvenue dans la bibliothèque"


def test_a_requirement_that_cannot_be_built_marks_the_release_and_logs_it(host, app_repo):
    """Not only the steps with their own checks: any failure while a release is prepared (here pip, for a
    version that does not exist) marks it and writes the deploy log, so no rollback picks it later."""
    rc, out = deploy(app_repo, "bad-pin")
    assert rc != 0
    failed = stopped_before_the_switch(host, out, "bad-pin", "build the wheelhouse failed in release")
    last = json.loads(host.file("/var/log/bookshelf/deploy.log").content_string.splitlines()[-1])
    assert last["release"] == failed.rsplit("/", 1)[-1]
    assert last["result"].startswith("failed before the switch: build the wheelhouse failed"), last


def test_a_missing_gunicorn_config_file_is_named_before_the_switch(host, app_repo):
    rc, out = deploy(app_repo, "v1", app_gunicorn_config_file="gunicorn.conf.py", app_deploy_force=True)
    assert rc != 0
    stopped_before_the_switch(host, out, "v1", "app_gunicorn_config_file=gunicorn.conf.py is not in release")


# Several problems per run, named together: the argument spec's and every one of roles/app's own checks
# (tasks/validate.yml; it stopped at its first until it became one task), or every process in app_processes.
@pytest.mark.parametrize("extra, messages", [
    ({"app_gate_release_check": "sometimes", "app_wsgi_app": "bookshelf web", "app_keep_releases": 1},
     ["app_gate_release_check must be one of: json, header, none",
      "app_keep_releases=1: keep at least 2",
      "app_wsgi_app=bookshelf web is not MODULE:VARIABLE"]),
    ({"app_build_commands": ["pybabel compile", " "]}, ["app_build_commands holds an empty command"]),
    # a name that cannot name a unit, a worker placement with no worker hosts, a group processes never run on
    ({"app_processes": {"Worker 1": {"command": "rq worker"},
                        "reports": {"command": "rq worker", "group": "worker"},
                        "mail": {"command": "rq worker", "group": "mailers"}}},
     ["app_processes: Worker 1 cannot name a systemd unit",
      "app_processes.reports.group=worker, but the inventory has no worker hosts: add them to the group worker,"
      " or leave out group to run it on the web hosts",
      "app_processes.mail.group=mailers: a process runs on the web hosts (web, the default) or on the worker"
      " hosts (worker)"]),
    ({"app_jobs": {"nightly": {"command": "true", "on_calendar": "every night"}}},
     ["app_jobs: nightly: on_calendar=every night; see systemd.time(7)"]),
])
def test_bad_settings_are_refused_before_any_change(host, extra, messages):
    testhelpers.assert_refused_before_any_change(extra, *messages)


def ci_inventory(host, tmp_path, vault_password):
    """An inventory directory as a user keeps it in their copy of this project: hosts.yml naming the host
    by address, this scenario's group_vars and host_vars, and the vault encrypted with `vault_password`."""
    import yaml

    address = host.ansible.get_variables()["ansible_host"]
    inventory = tmp_path / "inventory"
    (inventory / "group_vars/all").mkdir(parents=True)
    groups = {group: {"hosts": {"solo": {"ansible_host": address}}} for group in ("db", "redis", "web", "lb")}
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": groups}}))
    ours = Path(__file__).parents[1] / "inventory"
    (inventory / "host_vars").symlink_to(ours / "host_vars")
    (inventory / "group_vars/all/main.yml").symlink_to(ours / "group_vars/all/main.yml")
    vault = inventory / "group_vars/all/vault.yml"
    vault.write_text((ours / "group_vars/all/vault.yml").read_text())
    subprocess.run(["ansible-vault", "encrypt", "--vault-password-file", "/dev/stdin", str(vault)],
                   input=vault_password, text=True, check=True, capture_output=True)
    assert vault.read_text().startswith("$ANSIBLE_VAULT")
    return inventory, address


def ci_deploy(inventory, version, app_repo, **env):
    """scripts/ci-deploy as a CI job runs it: its secrets in the environment only."""
    extra = ["-e", f"app_git_repo={app_repo}", "-e", f"app_controller_cache_dir={app_repo.parent / 'controller-cache'}"]
    res = subprocess.run([str(REPO / "scripts/ci-deploy"), str(inventory), version, *extra], capture_output=True,
                         text=True, timeout=900, env={**testhelpers._ansible_env(), **env})
    return res.returncode, res.stdout + res.stderr


def test_a_deploy_from_ci_pins_host_keys_and_names_its_run(host, app_repo, tmp_path):
    """scripts/ci-deploy, the script the example workflows run: with a host key that is not the pinned one
    it stops before any change; with the pinned key (ssh-keyscan output, as a user checks once) it deploys
    the tag through the user's inventory and vault, and the deploy log names the CI run."""
    password = "ci vault password / with + odd = characters"
    inventory, address = ci_inventory(host, tmp_path, password)
    key = Path(host.ansible.get_variables()["ansible_private_key_file"]).read_text()
    pinned = subprocess.run(["ssh-keyscan", "-t", "ed25519", address], capture_output=True, text=True,
                            timeout=30).stdout
    assert address in pinned and "ssh-ed25519" in pinned
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    kind, other = (tmp_path / "other.pub").read_text().split()[:2]
    wrong = f"{address} {kind} {other}\n"  # a key of the right type, not the host's
    secrets_env = {"SSH_PRIVATE_KEY": key, "ANSIBLE_VAULT_PASSWORD": password,
                   "DEPLOY_ORIGIN": "https://ci.bookshelf.test/runs/42"}
    log_before = host.file("/var/log/bookshelf/deploy.log").content_string
    # ufw's `limit` on SSH refuses an address that opened 6 connections within 30 s, and this controller
    # has just opened many (the tests before, ssh-keyscan). A CI runner starts with none: so does this.
    host.check_output("for recent in /proc/net/xt_recent/*; do echo / > $recent; done")

    rc, out = ci_deploy(inventory, "v2", app_repo, SSH_KNOWN_HOSTS=wrong, **secrets_env)
    assert rc == 1
    said = " ".join(out.split())
    assert f"solo ({address}) cannot be reached with its pinned host key, nothing was changed" in said, out[-3000:]
    assert "Host key verification failed" in said, out[-3000:]
    assert host.file("/var/log/bookshelf/deploy.log").content_string == log_before
    assert live_release(host) == RELEASES["head"]

    rc, out = ci_deploy(inventory, "v2", app_repo, SSH_KNOWN_HOSTS=pinned, **secrets_env)
    assert rc == 0, out[-3000:]
    last = json.loads(host.file("/var/log/bookshelf/deploy.log").content_string.splitlines()[-1])
    assert last["commit"] == HISTORY["v2"] and last["result"] == "ok", last
    assert last["origin"] == "https://ci.bookshelf.test/runs/42"
    assert served_release(host) == live_release(host) != RELEASES["head"]
    assert password not in out and key.strip().splitlines()[1] not in out


def test_ci_deploy_names_each_missing_secret_before_anything_runs(tmp_path):
    rc, out = ci_deploy(tmp_path, "v2", tmp_path)
    assert rc == 2
    assert "SSH_PRIVATE_KEY is not set" in out and "SSH_KNOWN_HOSTS is not set" in out, out
