"""Day-to-day runs against the converged stack: deploys of a small history of the reference app, a
release that does not import, one that fails its health gate, rollbacks across a migration, steady load
during the switches, the cron backup, the restore drill, log rotation and preflight's refusals.

The tests run in order and build on each other (one host, one history). Every test takes the `host`
fixture, even where it does not use it: pytest groups tests by that module-scoped fixture, and a test
without it would run out of order."""

import concurrent.futures
import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

import testhelpers

REPO = testhelpers.REPO
DOMAIN = "allinone.test"
HISTORY = {}   # tag -> commit of the test repository
RELEASES = {}  # tag -> release id the deploy made
SICK_GATE_RETRIES = testhelpers.SICK_GATE_RETRIES

@pytest.fixture(scope="module")
def app_repo(tmp_path_factory):
    """The reference app's history as a user's would grow (testhelpers.make_app_history)."""
    repo = tmp_path_factory.mktemp("app-history")
    HISTORY.update(testhelpers.make_app_history(repo))
    return repo


@pytest.fixture(scope="module")
def address(host):
    return host.ansible.get_variables()["ansible_host"]


def deploy(app_repo, tag, options=(), **extra):
    return testhelpers.run_playbook("playbooks/deploy.yml", {
        "app_git_repo": str(app_repo), "app_git_version": tag,
        "app_controller_cache_dir": str(app_repo.parent / "controller-cache"), **extra}, options=options)


def version(host):
    out = host.check_output(f"curl -sS --fail --resolve {DOMAIN}:443:127.0.0.1 -k https://{DOMAIN}/version")
    return json.loads(out)


def api(host, method, path, body=None):
    data = f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}" if body else ""
    out = host.check_output(f"curl -sS --fail -X {method} {data} --resolve {DOMAIN}:443:127.0.0.1 -k "
                            f"https://{DOMAIN}{path}")
    return json.loads(out)


def enqueue(host, text, seconds=0):
    return api(host, "POST", "/api/jobs", {"text": text, "seconds": seconds})["id"]


def job(host, job_id, until=("finished", "failed"), within=60):
    """The job's state once it is in one of `until` (polling every half second)."""
    start = time.monotonic()
    while True:
        state = api(host, "GET", f"/api/jobs/{job_id}")
        if state["status"] in until or time.monotonic() - start > within:
            return state
        time.sleep(0.5)


def releases(host):
    return sorted(host.check_output("ls /srv/notesapp/releases").split())


def test_site_yml_deployed_this_repository(host):
    """The converge (site.yml) ended with the first deploy: this repository's HEAD answers over HTTPS."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert version(host)["commit"] == head
    RELEASES["head"] = version(host)["release"]
    assert host.file("/srv/notesapp/current").is_symlink


def test_deploy_v1_and_write_data(host, app_repo):
    rc, out = deploy(app_repo, "v1")
    assert rc == 0, out[-3000:]
    v = version(host)
    assert v["commit"] == HISTORY["v1"]
    RELEASES["v1"] = v["release"]
    note = api(host, "POST", "/api/notes", {"title": "Written under v1", "body": "must survive every deploy"})
    RELEASES["note_id"] = note["id"]


def test_check_mode_deploy_of_a_new_commit_says_what_it_would_do_and_changes_nothing(host, app_repo):
    """--check --diff of a deploy of v2 (a new commit with a migration): it runs to the end, names the
    release, the migration it would run and the virtualenv it would reuse, and the host's releases,
    current release and database are as they were."""
    before = testhelpers.deploy_state(host)
    rc, out = deploy(app_repo, "v2", options=("--check", "--diff"))
    said = " ".join(out.split())  # the message as one line, however the output callback wrapped it
    assert rc == 0, out[-3000:]
    assert f"A deploy of v2 ({HISTORY['v2'][:12]}) would make release" in said, out[-3000:]
    assert "the database is at 0002, the new code at 0003: it would be dumped, then migrated" in said
    assert f"allinone: from {RELEASES['v1']}, reusing its virtualenv, removing no release" in said
    assert testhelpers.deploy_state(host) == before
    rc, out = deploy(app_repo, "v1", options=("--check", "--diff"))
    assert rc == 0, out[-3000:]
    assert f"Every web host serves {HISTORY['v1'][:12]} already" in " ".join(out.split()), out[-3000:]
    assert testhelpers.deploy_state(host) == before


OVERLAP = "notesapp-overlap.service"



def overlap_stopped(host, timeout=30):
    """Is the second Gunicorn inactive, or does it become so within the timeout? The deploy tells it to stop
    and goes on: it finishes its last requests on its own."""
    deadline = time.monotonic() + timeout
    while True:
        state = host.run(f"systemctl is-active {OVERLAP}").stdout.strip()
        if state == "inactive" or time.monotonic() > deadline:
            return state == "inactive"
        time.sleep(0.5)


def task_changed(out, name):
    """Did the run's one task of that name report a change?"""
    task = out.split(f"TASK [app : {name}]")
    return len(task) == 2 and re.search(r"^changed: ", task[1].split("TASK [")[0], re.MULTILINE) is not None


def started_early(out):
    """Did the deploy or rollback start the second Gunicorn before the switch (tasks/overlap.yml)?"""
    return task_changed(out, "Start a second Gunicorn of the running release, not waiting for it")


def overlap_answered(host, since):
    """How many requests the second Gunicorn (roles/gunicorn's NAME-overlap.service) answered since then."""
    return host.check_output(f"journalctl -q -o cat -u {OVERLAP} --since '{since}'").count('"type": "access"')


def test_deploy_v2_with_a_migration_under_load(host, app_repo, address):
    """...and the worker: a job it holds when the deploy starts finishes under v1 (the worker stops
    gracefully), and the next job runs under v2. While the service restarts, a second Gunicorn of v1
    answers on the app's socket, so no request waits for the new one to boot; it is gone after."""
    long_job = enqueue(host, "started before the deploy", seconds=6)
    assert job(host, long_job, until=("started",))["status"] == "started"
    since = testhelpers.host_now(host)
    with testhelpers.Load(address, DOMAIN) as load:
        time.sleep(2)
        rc, out = deploy(app_repo, "v2")
        time.sleep(2)
    print(f"\ndeploy of v2 under load: {load.summary()}; the second Gunicorn answered "
          f"{overlap_answered(host, since)} of them")
    assert rc == 0, out[-3000:]
    assert overlap_answered(host, since) > 0, "no request reached a second Gunicorn during the restart"
    # ...started while the release was prepared, so that the switch did not wait for it to boot
    assert started_early(out), out[-3000:]
    assert overlap_stopped(host)
    # ...which ran the release that served before (Gunicorn logs it as it loads the app)
    loaded = set(re.findall(r'"message": "app created", "release": "([^"]+)"', host.check_output(
        f"journalctl -q -o cat -u {OVERLAP} --since '{since}'")))
    assert loaded == {RELEASES["v1"]}, loaded
    held = job(host, long_job)
    assert held["status"] == "finished", held
    assert held["result"]["release"] == RELEASES["v1"]
    after = job(host, enqueue(host, "enqueued after the deploy"))
    assert after["status"] == "finished" and after["result"]["release"] == version(host)["release"], after
    assert load.ok > 50, "the load did not run"
    assert load.failed == 0, load.summary()
    v = version(host)
    assert v["commit"] == HISTORY["v2"]
    RELEASES["v2"] = v["release"]
    assert api(host, "GET", f"/api/notes/{RELEASES['note_id']}")["title"] == "Written under v1"
    release = f"/srv/notesapp/releases/{v['release']}"
    assert host.file(f"{release}/.migration-revision").content_string.strip() == "0003"
    assert host.file(f"/srv/notesapp/shared/backups/pre-migrate-{v['release']}.dump").exists
    assert host.check_output("runuser -u postgres -- psql -tAc \"SELECT to_regclass('note_tags')\" notesapp") \
        == "note_tags"


LOCK = "/srv/notesapp/.deploy-lock"


def test_code_only_deploy_installs_nothing(host, app_repo):
    """...and while it runs, a second deploy (of another commit) refuses at once, says who holds the lock
    and changes nothing; the first one ends normally and releases the lock. A build step holds the first
    one until the test lets it go (a file), after the second was refused, on a machine of any speed.
    Before it, the service has hit systemd's start limit (as requests reaching its socket before the first
    release do, which failed a first deploy): the deploy's restart must still start it."""
    venvs_before = host.check_output("ls /srv/notesapp/shared/venvs")
    drop_in = "/run/systemd/system/notesapp.service.d"
    # a start limit that lasts through the deploy (the default one forgets after 10 s), hit by failed starts
    host.check_output(f"mkdir -p {drop_in} && printf '[Unit]\\nStartLimitIntervalSec=600\\nStartLimitBurst=3\\n' "
                      f"> {drop_in}/limit.conf && printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' "
                      f"> {drop_in}/fail.conf && systemctl daemon-reload && systemctl stop notesapp.service "
                      f"&& for i in 1 2 3 4; do systemctl start notesapp.service; sleep 0.3; done; "
                      f"rm {drop_in}/fail.conf && systemctl daemon-reload")
    try:
        code_only_deploy_while_a_second_is_refused(host, app_repo, venvs_before)
    finally:
        host.check_output(f"rm -rf {drop_in} && systemctl daemon-reload && systemctl reset-failed notesapp.service "
                          "&& systemctl start notesapp.service")


def code_only_deploy_while_a_second_is_refused(host, app_repo, venvs_before):
    go = "/run/flask-deploy-test-go"
    host.check_output(f"rm -f {go}")
    hold = f"timeout 300 sh -c 'until [ -e {go} ]; do sleep 0.5; done'"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(deploy, app_repo, "v2b", app_build_commands=[hold])
        for _ in range(240):
            if host.file(LOCK).exists or first.done():
                break
            time.sleep(0.5)
        assert host.file(LOCK).exists, first.result()[1][-3000:] if first.done() else "no lock after 120 s"
        start = time.monotonic()
        # from another controller (its own clone of the repository), as a second person or CI would run it
        try:
            rc2, out2 = deploy(app_repo, "broken", app_controller_cache_dir=str(app_repo.parent / "other-controller"))
            refused_in = time.monotonic() - start
        finally:
            host.check_output(f"touch {go}")
        rc, out = first.result()
    host.check_output(f"rm -f {go}")
    flat = " ".join(out2.split())
    assert rc2 != 0 and "Another deploy or rollback holds the lock" in flat, out2[-3000:]
    assert re.search(rf"\(deploy of \S+-{HISTORY['v2b'][:8]} by \S+, since \S+\)", flat), out2[-3000:]
    assert "Nothing was changed" in flat and f"-a 'path={LOCK} state=absent'" in flat
    assert not any(r.endswith(HISTORY["broken"][:8]) for r in releases(host)), "the refused deploy unpacked"
    print(f"\nsecond deploy refused in {refused_in:.1f} s")
    assert rc == 0, out[-3000:]
    assert not host.file(LOCK).exists
    assert re.search(r"TASK \[app : Install the wheels into the virtualenv\][^\n]*\n(skipping|ok)", out), out[-3000:]
    assert re.search(r"TASK \[app : Build the wheelhouse\][^\n]*\n(skipping|ok)", out)
    assert host.check_output("ls /srv/notesapp/shared/venvs") == venvs_before
    RELEASES["v2b"] = version(host)["release"]
    assert version(host)["commit"] == HISTORY["v2b"]


def test_a_worker_restart_lets_the_job_in_hand_finish(host):
    """What each deploy does to the workers: a restart is a graceful stop first (SIGTERM to the worker
    alone, KillMode=mixed); the job it holds finishes, and the restart waits for it."""
    held = enqueue(host, "held across a restart", seconds=8)
    assert job(host, held, until=("started",))["status"] == "started"
    start = time.monotonic()
    host.check_output("systemctl restart notesapp-worker@1.service notesapp-worker@2.service")
    waited = time.monotonic() - start
    state = job(host, held)
    assert state["status"] == "finished", state
    assert state["result"]["finished"] - state["result"]["started"] >= 8
    assert waited > 2, f"the restart did not wait for the job ({waited:.1f} s)"
    print(f"\nworker restart with a job in hand: waited {waited:.1f} s for it")


def test_the_scheduled_job_runs_on_its_timer_and_writes_its_status(host):
    """app_jobs.stats: a timer on the host, a run writes the stats and a status file; a failed run (the
    database down) says so in the file and keeps the time of the last success."""
    assert host.service("notesapp-job-stats.timer").is_enabled
    assert host.service("notesapp-job-stats.timer").is_running
    # scheduled: a next run time (empty for a moment while the timer is being restarted or elapses, which a
    # busy machine made long enough to read once: r17, load 20)
    testhelpers.wait_for("a next run of notesapp-job-stats.timer", lambda: host.check_output(
        "systemctl show --property=NextElapseUSecRealtime --value notesapp-job-stats.timer"), 60)
    status_file = "/var/lib/notesapp/jobs/stats.json"
    host.check_output("systemctl start notesapp-job-stats.service")   # a oneshot: returns when it ended
    status = json.loads(host.file(status_file).content_string)
    assert status["result"] == "success" and status["exit_status"] == "0", status
    journal = host.check_output("journalctl -u notesapp-job-stats.service -o cat -n 20").splitlines()
    stats = json.loads([line for line in journal if '"notes"' in line][-1])
    assert stats["notes"] >= 1 and stats["release"] == version(host)["release"]

    host.check_output("systemctl stop postgresql")
    try:
        assert host.run("systemctl start notesapp-job-stats.service").rc != 0
        failed = json.loads(host.file(status_file).content_string)
    finally:
        host.check_output("systemctl start postgresql")
    assert failed["result"] == "exit-code" and failed["exit_status"] != "0", failed
    assert failed["last_success_at"] == status["last_success_at"]


def changed_tasks(out):
    return re.findall(r"TASK \[([^\]]+)\][^\n]*\n(?:[^\n]*\n)*?changed: ", out)


def test_same_commit_again_changes_nothing(host, app_repo):
    rc, out = deploy(app_repo, "v2b")
    assert rc == 0
    assert re.search(r"^\S+\s+: ok=\d+\s+changed=0 ", out, re.MULTILINE), (
        re.findall(r"^\S+\s+: ok=.*$", out, re.MULTILINE), re.findall(r"TASK \[.*\n(?:.*\n)??changed: .*", out))


def test_release_that_does_not_import_never_goes_live(host, app_repo):
    """...and the second Gunicorn, started while the release was prepared for the switch that then did not
    come, is stopped again."""
    rc, out = deploy(app_repo, "broken")
    assert rc != 0
    assert "the import check failed" in out and "Nothing was switched" in out, out[-3000:]
    assert "this_module_does_not_exist" in out
    assert started_early(out), out[-3000:]
    assert task_changed(out, "Stop the second Gunicorn if it runs"), out[-3000:]
    assert overlap_stopped(host)
    assert version(host)["release"] == RELEASES["v2b"]
    failed = [r for r in releases(host) if r.endswith(HISTORY["broken"][:8])]
    assert failed and host.file(f"/srv/notesapp/releases/{failed[0]}/.FAILED").exists
    assert not host.file(LOCK).exists, "a deploy that stopped before the switch kept the lock"


def test_release_that_fails_the_gate_is_switched_back(host, app_repo, address):
    with testhelpers.Load(address, DOMAIN) as load:
        rc, out = deploy(app_repo, "sick", app_gate_retries=SICK_GATE_RETRIES)
    print(f"\nfailed deploy under load: {load.summary()}")
    assert rc != 0
    assert "The health gate failed for release" in out, out[-3000:]
    assert "Wait until the app is ready" in out and "forced by the test" in out
    assert f"Switched back to {RELEASES['v2b']}" in out
    assert version(host)["release"] == RELEASES["v2b"]
    assert overlap_stopped(host)
    log = host.file("/var/log/notesapp/deploy.log").content_string.splitlines()
    last = json.loads(log[-1])
    assert last["commit"] == HISTORY["sick"] and last["result"].startswith("gate failed")
    assert not host.file(LOCK).exists, "a deploy that failed its gate kept the lock"


def test_a_failed_gate_after_a_migration_goes_back_to_the_old_code_on_the_new_schema(host, app_repo, address):
    """The new release migrates (0004, expand-only) and then fails its gate: v2b comes back and is ready on
    the migrated database (the contract: migrations expand, the old code works on them), the load sees no
    failure, the database keeps the new column, and the deploy log says why."""
    with testhelpers.Load(address, DOMAIN) as load:
        rc, out = deploy(app_repo, "sick-after-migrating", app_gate_retries=SICK_GATE_RETRIES)
    print(f"\nfailed deploy after a migration, under load: {load.summary()}")
    assert rc != 0
    flat = " ".join(out.split())
    assert "The health gate failed for release" in flat, out[-3000:]
    assert f"Switched back to {RELEASES['v2b']}, which passed the gate." in flat, out[-3000:]
    assert load.failed == 0, load.summary()
    assert version(host)["release"] == RELEASES["v2b"]
    assert host.check_output("runuser -u postgres -- psql -tAc 'SELECT version_num FROM alembic_version' notesapp") \
        == "0004"
    assert host.check_output("runuser -u postgres -- psql -tAc \"SELECT column_name FROM information_schema.columns "
                             "WHERE table_name = 'notes' AND column_name = 'summary'\" notesapp") == "summary"
    last = json.loads(host.file("/var/log/notesapp/deploy.log").content_string.splitlines()[-1])
    assert last["commit"] == HISTORY["sick-after-migrating"] and last["result"].startswith("gate failed"), last
    # back to 0003 for the tests that follow, with the failed release's own code (it knows 0004)
    failed = [r for r in releases(host) if r.endswith(HISTORY["sick-after-migrating"][:8])][0]
    host.check_output(
        f"systemd-run --quiet --wait --pipe --collect --uid=notesapp --gid=notesapp "
        f"--property=EnvironmentFile=/etc/notesapp/env --property=EnvironmentFile=/etc/notesapp/migration.env "
        f"--working-directory=/srv/notesapp/releases/{failed} "
        f"/srv/notesapp/releases/{failed}/venv/bin/flask --app wsgi:app db downgrade 0003")


def test_rollback_across_the_migration_is_refused(host):
    rc, out = testhelpers.run_playbook("playbooks/rollback.yml", {"release": RELEASES["v1"]})
    assert rc != 0
    assert f"Refusing to roll back to {RELEASES['v1']}" in out, out[-3000:]
    assert "expects migration revision 0002, the database is at 0003" in out
    flat = " ".join(out.split())
    # v2b changed code only: no dump from before its migration, so the way back names a backup
    assert "-e rollback_db=downgrade" in flat
    assert (f"ansible-playbook playbooks/restore.yml -e backup_restore_confirm=notesapp -e backup_restore_from=STAMP "
            f"-e release={RELEASES['v1']}") in flat, out[-3000:]
    assert version(host)["release"] == RELEASES["v2b"]
    assert not host.file(LOCK).exists, "a refused rollback kept the lock"


def test_check_mode_rollback_says_what_it_would_do_and_changes_nothing(host):
    before = testhelpers.deploy_state(host)
    rc, out = testhelpers.run_playbook("playbooks/rollback.yml",
                                       {"release": RELEASES["v1"], "rollback_db": "downgrade"},
                                       options=("--check", "--diff"))
    assert rc == 0, out[-3000:]
    assert (f"A rollback would switch allinone from {RELEASES['v2b']} to {RELEASES['v1']}, after downgrading "
            "the database from 0003 to 0002") in " ".join(out.split()), out[-3000:]
    assert testhelpers.deploy_state(host) == before


def test_rollback_with_downgrade_under_load(host, address):
    since = testhelpers.host_now(host)
    with testhelpers.Load(address, DOMAIN) as load:
        time.sleep(2)
        rc, out = testhelpers.run_playbook("playbooks/rollback.yml",
                                           {"release": RELEASES["v1"], "rollback_db": "downgrade"})
        time.sleep(2)
    print(f"\nrollback with downgrade under load: {load.summary()}; the second Gunicorn answered "
          f"{overlap_answered(host, since)} of them")
    assert rc == 0, out[-3000:]
    assert overlap_answered(host, since) > 0, "no request reached a second Gunicorn during the restart"
    assert started_early(out), out[-3000:]
    assert overlap_stopped(host)
    assert load.ok > 50 and load.failed == 0, (load.summary(), testhelpers.what_held_requests(host, load))
    assert version(host)["release"] == RELEASES["v1"]
    assert host.check_output("runuser -u postgres -- psql -tAc \"SELECT to_regclass('note_tags')\" notesapp") == ""
    # the data the downgrade dropped is in a dump, and the run said where
    dump = f"/srv/notesapp/shared/backups/pre-rollback-{RELEASES['v1']}-from-{RELEASES['v2b']}.dump"
    assert host.file(dump).exists and host.file(dump).size > 0
    assert dump in " ".join(out.split())
    # the worker went back with the web service
    assert job(host, enqueue(host, "after the rollback"))["result"]["release"] == RELEASES["v1"]
    assert api(host, "GET", f"/api/notes/{RELEASES['note_id']}")["title"] == "Written under v1"


def test_rollback_without_target_goes_to_the_release_before_current(host, app_repo):
    """Deploy v2 again (over v1), then a plain rollback: it goes to v2b, the newest release before current
    by id that did not fail; not to v1 (what served last), not to the failed ones, whatever the mtimes.
    The second Gunicorn that serves during the restart cannot start this time: the rollback goes on with a
    plain restart, and leaves no failed unit behind. And the host still has the restart helper of an older
    version of this project (a rollback right after an upgrade, before any deploy installed the new one):
    it knows no early start, and the rollback goes on without one."""
    rc, out = deploy(app_repo, "v2")
    assert rc == 0, out[-3000:]
    host.check_output(f"touch /srv/notesapp/releases/{RELEASES['v1']}")  # newest by mtime now
    # ...and when the second Gunicorn cannot start, the rollback restarts the service plainly
    drop_in = f"/run/systemd/system/{OVERLAP}.d"
    host.check_output(f"mkdir -p {drop_in} && printf '[Service]\\nExecStartPre=/bin/false\\n' > {drop_in}/fail.conf"
                      " && systemctl daemon-reload")
    # the helper of before --no-wait: argparse's exit 2 for an option it does not know, the rest as it was
    helper = "/usr/local/lib/flask-deploy/gunicorn-overlap"
    older = ("#!/bin/sh\nfor a; do [ \"$a\" = --no-wait ] && { echo 'unrecognized arguments: --no-wait' >&2; exit 2; }; done\n"
             f"exec {helper}.current \"$@\"\n")
    host.check_output(f"mv {helper} {helper}.current && printf %s {shlex.quote(older)} > {helper} && chmod 755 {helper}")
    since = testhelpers.host_now(host)
    try:
        rc, out = testhelpers.run_playbook("playbooks/rollback.yml")
    finally:
        host.check_output(f"rm -rf {drop_in} && systemctl daemon-reload && mv {helper}.current {helper}")
    assert rc == 0, out[-3000:]
    assert not started_early(out), out[-3000:]   # the older helper refused --no-wait (exit 2): no early start
    assert version(host)["release"] == RELEASES["v2b"]
    tried = host.check_output(f"journalctl -q -o cat -u {OVERLAP} --since '{since}'")
    assert "status=1/FAILURE" in tried, tried
    assert overlap_stopped(host)


def test_old_releases_are_pruned_but_current_and_previous_stay(host):
    """Eight releases so far: at the last deploy the newest five stayed, and v1 too (it was the previous
    release then); the first one (site.yml's) and v2 went."""
    kept = releases(host)
    assert len(kept) == 6, kept
    assert version(host)["release"] in kept and RELEASES["v1"] in kept
    assert RELEASES["head"] not in kept and RELEASES["v2"] not in kept
    # a removed release's pre-migration dump goes with it; a kept one's stays
    assert not host.file(f"/srv/notesapp/shared/backups/pre-migrate-{RELEASES['v2']}.dump").exists


def test_when_the_previous_release_fails_its_gate_too_the_deploy_says_so(host, app_repo):
    """Redis down during a deploy: the new release fails its gate, and so does the previous one once
    switched back. The deploy says both gates' answers plainly, the deploy log has its line, and with Redis
    back the previous release serves again."""
    current = version(host)["release"]
    host.check_output("systemctl stop redis-server")
    try:
        rc, out = deploy(app_repo, "v2b", app_deploy_force=True, app_gate_retries=SICK_GATE_RETRIES)
    finally:
        host.check_output("systemctl start redis-server")
    assert rc != 0
    flat = " ".join(out.split())
    assert f"Switched back to {current}, which FAILED its gate too" in flat, out[-3000:]
    assert "Neither release is ready on this host" in flat
    last = json.loads(host.file("/var/log/notesapp/deploy.log").content_string.splitlines()[-1])
    assert last["result"].startswith("gate failed") and "which failed its gate too" in last["result"], last
    assert host.check_output("readlink /srv/notesapp/current") == f"releases/{current}"
    for _ in range(30):
        if host.run(f"curl -sS --fail -k --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/health/ready").rc == 0:
            break
        time.sleep(1)
    assert version(host)["release"] == current


def backup_now(host):
    """Run the backup job exactly as cron would: its command, as its user, with cron's PATH."""
    line = [entry for entry in host.file("/etc/cron.d/pg-backup").content_string.splitlines()
            if entry and not entry.startswith(("#", "SHELL", "PATH"))][0]
    fields = line.split(None, 6)
    assert fields[5] == "postgres"
    host.check_output(f"runuser -u postgres -- env PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c {shlex.quote(fields[6])}")


def databases(host):
    return host.check_output("runuser -u postgres -- psql -XAtc 'SELECT datname FROM pg_database'").split()


def test_cron_backup_job_runs_and_the_restore_drill_passes(host):
    backup_now(host)
    status = json.loads(host.file("/var/backups/postgresql/status.json").content_string)
    backup = status["path"]
    assert host.run(f"cd {backup} && sha256sum --check SHA256SUMS").rc == 0
    assert host.file(f"{backup}/notesapp.dump").size > 0 and host.file(f"{backup}/globals.sql").size > 0
    assert "done" in host.file("/var/log/postgresql/pg-backup.log").content_string
    rc, out = testhelpers.run_playbook("playbooks/restore.yml")
    assert rc == 0, out[-3000:]
    match = re.search(r"Restore drill of notesapp from \S+\s+passed: (\d+) tables, (\d+) rows", out)
    assert match, out[-3000:]
    print(f"\nrestore drill: {match.group(0)}")
    assert int(match.group(1)) >= 3 and int(match.group(2)) >= 2
    assert "notesapp_restore_drill" not in host.check_output("runuser -u postgres -- psql -tAc 'SELECT datname FROM pg_database'")


def test_a_second_run_while_one_holds_the_lock_stops(host):
    res = host.run("runuser -u postgres -- flock /var/backups/postgresql/.lock /usr/local/sbin/pg-backup")
    assert res.rc == 75 and "another backup holds" in res.stderr


def outside_status(address, path="/"):
    """Status and Retry-After of a GET from the controller, a client that is not loopback."""
    conn = testhelpers.https_connection(address, DOMAIN, timeout=10)
    conn.request("GET", path, headers={"Host": DOMAIN})
    response = conn.getresponse()
    response.read()
    return response.status, response.getheader("Retry-After")


def test_the_maintenance_playbook_turns_the_page_on_and_off(host, address):
    rc, out = testhelpers.run_playbook("playbooks/maintenance.yml", {"maintenance": "sometimes"})
    assert rc != 0 and "maintenance=sometimes: give -e maintenance=on or -e maintenance=off" in out, out[-2000:]
    assert outside_status(address)[0] == 200
    rc, out = testhelpers.run_playbook("playbooks/maintenance.yml", {"maintenance": "on"})
    assert rc == 0, out[-2000:]
    try:
        assert outside_status(address) == (503, "300")
        assert outside_status(address, "/api/notes") == (503, "300")
        # the app runs on, and loopback (the deploy's gate, your checks on the host) still reaches it
        assert host.service("notesapp.service").is_running
        assert version(host)["release"]
    finally:
        rc, out = testhelpers.run_playbook("playbooks/maintenance.yml", {"maintenance": "off"})
    assert rc == 0, out[-2000:]
    assert outside_status(address)[0] == 200


def test_a_restore_the_live_release_does_not_fit_changes_nothing(host):
    """The live release expects another migration revision than the backup holds: the restored copy is
    dropped, the site never leaves, and the message names the release to roll back to first."""
    revision_file = "/srv/notesapp/current/.migration-revision"
    expected = host.file(revision_file).content_string
    host.check_output(f"echo 9999 > {revision_file}")
    try:
        rc, out = testhelpers.run_playbook("playbooks/restore.yml", {"backup_restore_confirm": "notesapp"})
    finally:
        host.check_output(f"printf %s {shlex.quote(expected)} > {revision_file}")
    assert rc != 0
    flat = " ".join(out.split())
    assert "Not restored: the database in the backup is at migration revision 0003" in flat, out[-3000:]
    assert "expects 9999" in flat and "playbooks/rollback.yml -e release=" in flat
    assert "Nothing was changed" in flat
    assert "notesapp_restoring" not in databases(host)
    assert not [name for name in databases(host) if name.startswith("notesapp_before_restore_")]
    assert not host.file("/var/www/maintenance/notesapp/on").exists
    assert host.service("notesapp.service").is_running


class Probe:
    """GET / from the controller (not loopback, which the maintenance page spares) every 0.2 s: the
    status, Retry-After and whether the maintenance page's title was in the body, per answer."""

    def __init__(self, address):
        import threading

        self.address, self.answers, self._stop = address, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                conn = testhelpers.https_connection(self.address, DOMAIN, timeout=10)
                conn.request("GET", "/", headers={"Host": DOMAIN})
                response = conn.getresponse()
                body = response.read().decode(errors="replace")
                self.answers.append((response.status, response.getheader("Retry-After"), "Back in a moment" in body))
                conn.close()
            except OSError as exc:
                self.answers.append((0, None, str(exc)))
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


def test_a_real_restore_shows_the_maintenance_page_and_swaps_in_the_backup(host, address):
    """Rows written before the backup are back, rows written after it are not (they stay in the replaced
    database, kept until the next restore succeeds); meanwhile the site answered 503 with Retry-After and
    the maintenance page, never an error of its own; afterwards the app is ready and writes again."""
    kept = api(host, "POST", "/api/notes", {"title": "Before the backup", "body": "kept"})["id"]
    backup_now(host)
    lost = api(host, "POST", "/api/notes", {"title": "After the backup", "body": "lost"})["id"]
    with Probe(address) as probe:
        rc, out = testhelpers.run_playbook("playbooks/restore.yml", {"backup_restore_confirm": "notesapp"})
    assert rc == 0, out[-3000:]
    statuses = {status for status, _, _ in probe.answers}
    print(f"\nreal restore: {len(probe.answers)} probes, statuses {sorted(statuses)}")
    assert (503, "300", True) in probe.answers, probe.answers
    assert statuses <= {200, 503}, probe.answers
    assert probe.answers[-1][0] == 200
    assert api(host, "GET", f"/api/notes/{kept}")["title"] == "Before the backup"
    code = f"curl -sS -k -o /dev/null -w '%{{http_code}}' --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}"
    assert host.check_output(f"{code}/api/notes/{lost}") == "404"
    assert host.check_output(f"{code}/health/ready") == "200"
    replaced = [name for name in databases(host) if name.startswith("notesapp_before_restore_")]
    assert len(replaced) == 1 and replaced[0] in " ".join(out.split()), (replaced, out[-2000:])
    assert host.check_output(f"runuser -u postgres -- psql -XAtc 'SELECT title FROM notes WHERE id = {lost}' "
                             f"{replaced[0]}") == "After the backup"
    # restored as the owner role, as the migrations made it: the app's user still reads and writes
    assert host.check_output("runuser -u postgres -- psql -XAtc \"SELECT DISTINCT tableowner FROM pg_tables "
                             "WHERE schemaname = 'public'\" notesapp") == "notesapp"
    assert api(host, "POST", "/api/notes", {"title": "After the restore", "body": ""})["id"]
    assert not host.file("/var/www/maintenance/notesapp/on").exists
    # the worker and the timer came back with the web service
    assert host.service("notesapp-worker@1.service").is_running
    assert host.run("systemctl is-active notesapp-job-stats.timer").stdout.strip() == "active"
    # a second restore succeeds too, and only then goes the database the first one replaced
    rc, out = testhelpers.run_playbook("playbooks/restore.yml", {"backup_restore_confirm": "notesapp"})
    assert rc == 0, out[-3000:]
    now_replaced = [name for name in databases(host) if name.startswith("notesapp_before_restore_")]
    assert len(now_replaced) == 1 and now_replaced != replaced, (replaced, now_replaced)


def test_a_pre_migration_dump_restores_with_the_release_that_fits_it(host):
    """The dump a deploy took before migrating 0002 -> 0003, restored with v1's code (which expects 0002):
    the command a refused rollback names. v1 serves on the database as it was before that migration."""
    pre_migrate = None
    for name in host.check_output("ls /srv/notesapp/shared/backups").split():
        release = name.removeprefix("pre-migrate-").removesuffix(".dump")
        revision = host.file(f"/srv/notesapp/releases/{release}/.migration-revision")
        if name.startswith("pre-migrate-") and revision.exists and revision.content_string.strip() == "0003":
            pre_migrate = f"/srv/notesapp/shared/backups/{name}"
    assert pre_migrate, host.check_output("ls -l /srv/notesapp/shared/backups")
    assert version(host)["release"] != RELEASES["v1"]
    rc, out = testhelpers.run_playbook("playbooks/restore.yml", {
        "backup_restore_confirm": "notesapp", "backup_restore_dump": f"allinone:{pre_migrate}",
        "release": RELEASES["v1"]})
    assert rc == 0, out[-3000:]
    assert version(host)["release"] == RELEASES["v1"]
    assert host.check_output("runuser -u postgres -- psql -XAtc 'SELECT version_num FROM alembic_version' notesapp") \
        == "0002"
    assert host.check_output("runuser -u postgres -- psql -XAtc \"SELECT to_regclass('note_tags')\" notesapp") == ""
    assert host.check_output(f"curl -sS -k -o /dev/null -w '%{{http_code}}' --resolve {DOMAIN}:443:127.0.0.1 "
                             f"https://{DOMAIN}/health/ready") == "200"
    # the imported copy went after the restore; the original dump stays where it was
    assert host.run("ls /var/backups/postgresql/imported/*/notesapp.dump").rc != 0
    assert host.file(pre_migrate).exists


def test_a_corrupted_dump_fails_the_drill(host):
    backup = json.loads(host.file("/var/backups/postgresql/status.json").content_string)["path"]
    host.check_output(f"printf 'garbage' | dd of={backup}/notesapp.dump bs=1 seek=100 conv=notrunc status=none")
    rc, out = testhelpers.run_playbook("playbooks/restore.yml")
    assert rc != 0
    assert "fails its checksums" in out and "notesapp.dump: FAILED" in out, out[-3000:]
    # the same damage with matching checksums: pg_restore itself refuses it
    host.check_output(f"truncate -s 200 {backup}/notesapp.dump && cd {backup} && sha256sum notesapp.dump globals.sql > SHA256SUMS")
    rc, out = testhelpers.run_playbook("playbooks/restore.yml")
    assert rc != 0 and "pg_restore" in out, out[-3000:]
    assert "notesapp_restore_drill" not in host.check_output("runuser -u postgres -- psql -tAc 'SELECT datname FROM pg_database'")


def test_logrotate_covers_every_log_the_stack_writes(host):
    res = host.run("logrotate --debug /etc/logrotate.conf")
    assert res.rc == 0, res.stderr
    considered = set(re.findall(r"considering log (\S+)", res.stdout + res.stderr))
    logs = host.check_output("find /var/log/nginx /var/log/postgresql /var/log/redis /var/log/notesapp "
                             "-type f -name '*.log'").split()
    assert "/var/log/notesapp/deploy.log" in logs and "/var/log/postgresql/pg-backup.log" in logs
    missing = [log for log in logs if log not in considered]
    assert not missing, f"no logrotate rule for {missing}"


# Preflight names every problem in one message: each run gives several bad settings at once and wants each
# named (one run per setting cost 20 s each; two settings that exclude each other go in separate runs).
@pytest.mark.parametrize("extra, messages", [
    ({"vault_app_secret_key": "", "vault_redis_password": "changeme", "vault_postgresql_app_password": "short",
      "app_domains": ["*.example.com", "notes_app.example.com", "https://notes.example.com/"],
      "app_acme_email": "ops", "app_port": 5432, "preflight_supported_os": ["Debian 12"]},
     ["vault_app_secret_key is not set", "vault_redis_password is weak (a known default)",
      "vault_postgresql_app_password is weak (5 characters)",
      "app_domains entry 'notes_app.example.com' is not a DNS name",
      "app_domains entry 'https://notes.example.com/' is not a DNS name",
      "app_domains has the wildcard name(s) *.example.com, which only the DNS-01 challenge can certify",
      "app_domains' first entry *.example.com names the certificate",
      "app_acme_email 'ops' is not an e-mail address", "app_port=5432 clashes with PostgreSQL's port",
      "runs Ubuntu 24.04, which this project does not support"]),
    ({"vault_redis_app_password": "test-Redis-admin-password-0123456789",
      "vault_postgresql_app_password": "test-secret-key-0123456789abcdef0123456789abcdef", "app_port": "80a",
      "app_git_version": "v9.9.9-no-such-tag", "app_acme_challenge": "dns-01", "app_acme_dns_plugin": "cloudflare"},
     ["vault_redis_password and vault_redis_app_password are the same",
      "vault_app_secret_key and vault_postgresql_app_password are the same",
      "app_port=80a is not a port number from 1024 to 65535",
      "app_git_version=v9.9.9-no-such-tag cannot be fetched from app_git_repo=",
      "vault_acme_dns_credentials lacks dns_cloudflare_api_token: app_acme_challenge dns-01"]),
])
def test_preflight_refuses_bad_settings_before_any_change(host, extra, messages):
    testhelpers.assert_refused_before_any_change(extra, *messages)


def test_preflight_refuses_an_inventory_without_a_group(host, tmp_path):
    """And a setting in the inventory's group_vars/all that group_vars/all/stack.yml sets too: Ansible
    ranks stack.yml above it, so it would be ignored without a word (the app's own settings are fine)."""
    import yaml

    inventory, path = testhelpers.inventory_copy(tmp_path)
    inventory.pop("lb")
    path.write_text(yaml.safe_dump(inventory))
    (path.parent / "group_vars/all/roles.yml").write_text("nginx_server_names: [elsewhere.test]\napp_keep_releases: 6\n")
    rc, out = testhelpers.run_playbook("molecule/site/converge.yml", inventory=str(path))
    assert rc != 0
    assert "inventory group 'lb' is missing or has no hosts" in out, out[-3000:]
    flat = " ".join(out.split())
    assert (f"nginx_server_names is set in {path.parent}/group_vars/all, where group_vars/all/stack.yml "
            "(which Ansible ranks above it) overrides it") in flat, out[-3000:]
    assert "app_keep_releases is set" not in flat
    assert re.search(r"^\S+\s+: ok=\d+\s+changed=0 ", out, re.MULTILINE)


ROTATED = ["vault_postgresql_app_password", "vault_redis_app_password", "vault_app_secret_key"]


def vault_values():
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "inventory/group_vars/all/vault.yml").read_text())


def as_app(host, password: str, sql: str):
    """psql as the app's runtime role over TCP with PASSWORD (libpq's variable, not the command line)."""
    return host.run(f"PGPASSWORD={shlex.quote(password)} psql -h 127.0.0.1 -U notesapp_app -d notesapp -XAt "
                    f"-c {shlex.quote(sql)}")


def redis_ping(host, password: str) -> str:
    res = host.run(f"REDISCLI_AUTH={shlex.quote(password)} redis-cli --user notesapp PING")
    return (res.stdout + res.stderr).strip()


def test_secrets_rotate_under_load_without_a_failed_request(host, address):
    """playbooks/rotate-secrets.yml with new values (of every character) and the old ones as *_previous:
    under load no request fails; afterwards only the new passwords open PostgreSQL and Redis, the second
    login is gone, a share link signed with the old SECRET_KEY still opens (the old key is a fallback), and
    the run says which vault values can go and until when to keep the old key. A rotation whose new value
    is its old one is refused before any change. Then the same playbook rotates back to the inventory's
    values (the old key not kept), leaving the host as the later tests expect it."""
    old = vault_values()
    new = {name: f"rot/{name[6:12]}+=@:#?%-" + "k3Zx9qLw" * 5 for name in ROTATED}
    note = api(host, "POST", "/api/notes", {"title": "shared before the rotation"})
    link = api(host, "POST", f"/api/notes/{note['id']}/share")["url"]
    try:
        rotate_and_check(host, address, old, new, link)
    finally:
        # back to the inventory's values; the key without a fallback, as before
        rc, out = testhelpers.run_playbook("playbooks/rotate-secrets.yml", {
            f"{name}_previous": new[name] for name in ROTATED[:2]})
        assert rc == 0, out[-3000:]
    assert as_app(host, old["vault_postgresql_app_password"], "SELECT 1").stdout.strip() == "1"
    assert redis_ping(host, old["vault_redis_app_password"]) == "PONG"
    assert "SECRET_KEY_FALLBACKS" not in host.check_output("cat /etc/notesapp/env")
    assert api(host, "GET", "/health/ready")["status"] == "ready"


def rotate_and_check(host, address, old, new, link):
    with testhelpers.Load(address, DOMAIN) as load:
        time.sleep(1)
        rc, out = testhelpers.run_playbook(
            "playbooks/rotate-secrets.yml", {**new, **{f"{name}_previous": old[name] for name in ROTATED}})
        time.sleep(1)
    print(f"\nrotation of the app's secrets under load: {load.summary()}")
    assert rc == 0, out[-3000:]
    assert load.ok > 50, "the load did not run"
    assert load.failed == 0, load.summary()
    flat = " ".join(out.split())
    assert ("Delete vault_postgresql_app_password_previous and vault_redis_app_password_previous from the vault "
            "now") in flat, out[-2000:]
    assert re.search(r"Keep vault_app_secret_key_previous until \d{4}-\d\d-\d\d \(rotate_secret_key_fallback_days"
                     r"=30\)", flat), out[-2000:]
    assert api(host, "GET", link)["title"] == "shared before the rotation"
    assert as_app(host, new["vault_postgresql_app_password"], "SELECT 1").stdout.strip() == "1"
    refused = as_app(host, old["vault_postgresql_app_password"], "SELECT 1")
    assert refused.rc != 0 and "password authentication failed" in refused.stderr, refused.stderr
    assert redis_ping(host, new["vault_redis_app_password"]) == "PONG"
    assert "WRONGPASS" in redis_ping(host, old["vault_redis_app_password"])
    assert host.check_output("runuser -u postgres -- psql -XAtc "
                             "\"SELECT count(*) FROM pg_roles WHERE rolname = 'notesapp_app_rotate'\"") == "0"
    assert "notesapp_app_rotate" not in host.check_output("cat /etc/postgresql/*/main/pg_hba.conf")
    env = host.check_output("cat /etc/notesapp/env")
    assert "DATABASE_URL=\"postgresql://notesapp_app:rot" in env and "SECRET_KEY_FALLBACKS=" in env
    # the worker reaches Redis (its queue) with the new password too
    assert job(host, enqueue(host, "after the rotation"))["status"] == "finished"

    # the same value twice: refused, nothing written
    host.check_output(f"touch {testhelpers.MARKER}")
    rc, out = testhelpers.run_playbook("playbooks/rotate-secrets.yml", {
        **new, "vault_redis_app_password_previous": new["vault_redis_app_password"]})
    assert rc != 0
    assert ("vault_redis_app_password_previous is the same as vault_redis_app_password: put the new value in "
            "vault_redis_app_password") in " ".join(out.split()), out[-2000:]
    assert host.check_output(f"find {testhelpers.WATCHED} -newer {testhelpers.MARKER} -print | head") == ""
