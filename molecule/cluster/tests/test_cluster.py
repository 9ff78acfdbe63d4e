"""Seven hosts converged by site.yml: a load balancer, two web hosts, a worker host (the app's `background`
process only: app_processes with group worker), PostgreSQL, Redis, and a backup host with the others'
off-site copies. Who may talk to whom, the spread of
requests, jobs on the worker host, rolling deploys and a rollback under steady load (the worker host switches
after the web hosts), a web host powered off mid-load, and failed gates in the first and in the second batch.

The tests run in file order and build on each other. None takes testinfra's `host` fixture (which would
run each once per host); they reach the hosts they need through `hosts` (conftest.py)."""

import collections
import http.client
import json
import re
import shlex
import ssl
import subprocess
import time
from pathlib import Path

import pytest

import testhelpers

DOMAIN = "lb.test"
PORT = 8001     # app_port in inventory/group_vars/all/main.yml (not the default 8000)
HISTORY = {}   # tag -> commit of the test repository
RELEASES = {}  # tag -> release id the deploy made
SICK_GATE_RETRIES = testhelpers.SICK_GATE_RETRIES


@pytest.fixture(scope="module")
def app_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("app-history")
    HISTORY.update(testhelpers.make_app_history(repo))
    return repo


def deploy(app_repo, tag, options=(), **extra):
    return testhelpers.run_playbook("playbooks/deploy.yml", {
        "app_git_repo": str(app_repo), "app_git_version": tag,
        "app_controller_cache_dir": str(app_repo.parent / "controller-cache"), **extra}, options=options)


def through_lb(address, path="/version"):
    """One request through the load balancer's nginx, as a browser would send it. It waits as long as nginx
    waits for a web host (nginx_proxy_read_timeout): a web host that is booting already accepts on its
    socket, and a request sent there waits for the app to start."""
    conn = testhelpers.https_connection(address, DOMAIN)
    try:
        conn.request("GET", path, headers={"Host": DOMAIN})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def through_lb_under_load(addresses, label, action):
    """(action's result, the Load) for action run under steady load through the load balancer."""
    return testhelpers.under_load(addresses["lb"], DOMAIN, label, action)


def served(web):
    """The release a web host's own Gunicorn serves (asked on the host, at its private address)."""
    address = web.ansible.get_variables()["ansible_host"]
    return json.loads(web.check_output(f"curl -sS --fail -H 'Host: {DOMAIN}' http://{address}:{PORT}/version"))["release"]


def overlap_starts(web, since):
    """How often the second Gunicorn (NAME-overlap.service, roles/app's restart without a pause) started
    on a web host since then (the host's time)."""
    journal = web.check_output(f"journalctl -q -o cat -u notesapp-overlap.service --since '{since}'")
    return journal.count("[INFO] Starting gunicorn")



def current(web):
    return Path(web.check_output("readlink /srv/notesapp/current")).name


def worker_release(web, instance=1, process="worker"):
    """The release the process instance runs: its process's working directory, resolved when it started."""
    pid = web.check_output(f"systemctl show --property=MainPID --value notesapp-{process}@{instance}.service")
    return web.check_output(f"readlink /proc/{pid}/cwd").rsplit("/", 1)[-1]


def background_release(hosts):
    """The release the worker host's `background` process runs."""
    return worker_release(hosts["worker1"], process="background")


def api_through_lb(address, method, path, body=None):
    conn = testhelpers.https_connection(address, DOMAIN)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Host": DOMAIN, "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


can_connect = testhelpers.can_connect


def test_site_yml_converged_every_group_where_it_belongs(hosts, addresses):
    # The hosts boot on images with every package of the stack installed (OS+stack): what shows the
    # topology is what the roles configured where, not what is installed.
    for web in ("web1", "web2"):
        assert hosts[web].socket(f"tcp://{addresses[web]}:{PORT}").is_listening
        assert not hosts[web].file("/etc/nginx/sites-enabled/notesapp.conf").exists
        assert not hosts[web].run("ls /etc/postgresql/*/main/conf.d/50-ansible.conf").succeeded
    assert hosts["db"].run("ls /etc/postgresql/*/main/conf.d/50-ansible.conf").succeeded
    assert not hosts["db"].file("/etc/nginx/sites-enabled/notesapp.conf").exists
    assert hosts["lb"].service("nginx").is_running and not hosts["lb"].exists("gunicorn")
    assert hosts["db"].socket(f"tcp://{addresses['db']}:5432").is_listening
    assert hosts["redis"].socket(f"tcp://{addresses['redis']}:6379").is_listening
    site = hosts["lb"].file("/etc/nginx/sites-available/notesapp.conf").content_string
    for web in ("web1", "web2"):
        assert f"server {addresses[web]}:{PORT} max_fails=3 fail_timeout=10s;" in site
    assert "keepalive 32;" in site and "alias " not in site  # the web hosts serve /static/
    # the worker on both web hosts, the scheduled job's timer on the first only, and Redis keeps queued jobs
    for web in ("web1", "web2"):
        assert hosts[web].service("notesapp-worker@1.service").is_running
        assert hosts[web].service("notesapp-worker@2.service").is_running
    assert hosts["web1"].service("notesapp-job-stats.timer").is_enabled
    assert not hosts["web2"].service("notesapp-job-stats.timer").is_enabled
    # the worker host: its process, the app's environment, and nothing of the web service, the other
    # processes, the jobs or the owner's password; the web hosts do not run its process
    worker = hosts["worker1"]
    assert worker.service("notesapp-background@1.service").is_running
    assert worker.file("/etc/notesapp/env").mode == 0o600
    for absent in ("notesapp.socket", "notesapp.service", "notesapp-worker@.service", "notesapp-job-stats.timer"):
        assert not worker.file(f"/etc/systemd/system/{absent}").exists, absent
    assert not worker.file("/etc/notesapp/migration.env").exists
    assert not worker.socket(f"tcp://{addresses['worker1']}:{PORT}").is_listening
    for web in ("web1", "web2"):
        assert not hosts[web].file("/etc/systemd/system/notesapp-background@.service").exists
    assert "maxmemory-policy noeviction" in hosts["redis"].file("/etc/redis/redis.d/20-runtime.conf").content_string


def test_requests_through_the_lb_reach_both_web_hosts(hosts, addresses):
    spread = collections.Counter()
    for _ in range(40):
        status, body = through_lb(addresses["lb"])
        assert status == 200
        spread[body["host"]] += 1
    print(f"\nspread of 40 requests through the load balancer: {dict(spread)}")
    assert {name.rsplit("-", 1)[-1] for name in spread} == {"web1", "web2"}
    assert min(spread.values()) >= 10


def test_database_and_redis_take_connections_from_web_and_worker_hosts_only(hosts, addresses):
    for service, port in (("db", 5432), ("redis", 6379)):
        assert not can_connect(hosts["lb"], addresses[service], port), f"lb reaches {service}"
        assert can_connect(hosts["web1"], addresses[service], port)
        assert can_connect(hosts["worker1"], addresses[service], port)
    # and with the app's credentials, through their protocols, from a web host
    env = "set -a; . /etc/notesapp/env; set +a;"
    python = "/srv/notesapp/current/venv/bin/python"
    sql = "import os, psycopg2; c = psycopg2.connect(os.environ['DATABASE_URL']).cursor(); " \
          "c.execute('SELECT 1'); print(c.fetchone()[0])"
    assert hosts["web2"].check_output(f'{env} {python} -c "{sql}"') == "1"
    ping = "import os, redis; print(redis.Redis.from_url(os.environ['REDIS_URL']).ping())"
    assert hosts["web2"].check_output(f'{env} {python} -c "{ping}"') == "True"
    # pg_hba has no line for the load balancer, whatever the firewall says
    hba = hosts["db"].check_output("runuser -u postgres -- psql -tAc 'SELECT address FROM pg_hba_file_rules'")
    assert addresses["web1"] in hba and addresses["web2"] in hba and addresses["lb"] not in hba
    assert addresses["worker1"] in hba


def test_web_hosts_take_app_traffic_from_the_lb_only(hosts, addresses):
    assert can_connect(hosts["lb"], addresses["web1"], PORT)
    assert not can_connect(hosts["db"], addresses["web1"], PORT)
    assert not can_connect(hosts["redis"], addresses["web2"], PORT)
    assert not can_connect(hosts["worker1"], addresses["web1"], PORT)


def test_check_mode_deploy_changes_no_host(hosts, addresses, app_repo):
    """Deploy v1, then --check --diff of a deploy of v2 (a migration): it says what would happen on each
    web host, and no web host, the database or the load balancer's upstream changed."""
    rc, out = deploy(app_repo, "v1")
    assert rc == 0, out[-3000:]
    RELEASES["v1"] = served(hosts["web1"])

    def state():
        return ([testhelpers.deploy_state(hosts[w], database=False) for w in ("web1", "web2", "worker1")]
                + [hosts["db"].check_output(testhelpers.database_dump_digest("notesapp")),
                   hosts["lb"].check_output("sha256sum /etc/nginx/sites-available/notesapp.conf")])

    before = state()
    rc, out = deploy(app_repo, "v2", options=("--check", "--diff"))
    said = " ".join(out.split())  # the message as one line, however the output callback wrapped it
    assert rc == 0, out[-3000:]
    assert re.search(r"would make release \S+ on web1, web2, worker1\.", said), out[-3000:]
    assert "the database is at 0002, the new code at 0003: it would be dumped" in said
    assert f"web1: from {RELEASES['v1']}, reusing its virtualenv" in said
    assert f"web2: from {RELEASES['v1']}, reusing its virtualenv" in said
    assert f"worker1: from {RELEASES['v1']}, reusing its virtualenv" in said
    assert state() == before


def test_rolling_deploy_with_a_migration_under_load(hosts, addresses, app_repo):
    """...each host out of the load balancer while it restarts, so without a second Gunicorn."""
    since = testhelpers.host_now(hosts["web1"])
    (rc, out), load = through_lb_under_load(addresses, "rolling deploy of v2 (a migration) through the load balancer",
                                            lambda: deploy(app_repo, "v2"))
    assert rc == 0, out[-3000:]
    assert [overlap_starts(hosts[w], since) for w in ("web1", "web2")] == [0, 0]
    assert load.ok > 100 and load.failed == 0, load.summary()
    RELEASES["v2"] = served(hosts["web1"])
    assert served(hosts["web2"]) == RELEASES["v2"] != RELEASES["v1"]
    assert worker_release(hosts["web1"]) == worker_release(hosts["web2"]) == RELEASES["v2"]
    assert background_release(hosts) == RELEASES["v2"] == current(hosts["worker1"])
    # one host at a time (the worker host last), and the migration (with its dump) once, before the first switch
    assert out.count("PLAY [Switch the web hosts in batches]") == 3
    logs = {h: json.loads(hosts[h].file("/var/log/notesapp/deploy.log").content_string.splitlines()[-1])
            for h in ("web1", "web2", "worker1")}
    assert all(entry["release"] == RELEASES["v2"] and entry["result"] == "ok" for entry in logs.values()), logs
    assert logs["web1"]["time"] <= logs["web2"]["time"] <= logs["worker1"]["time"], logs
    dumps = [w for w in ("web1", "web2")
             if hosts[w].file(f"/srv/notesapp/shared/backups/pre-migrate-{RELEASES['v2']}.dump").exists]
    assert len(dumps) == 1, dumps
    assert out.index("Run the migration under the lock") < out.index("Take the host out of the load balancer")
    # the load balancer's upstream is whole again
    assert " down" not in hosts["lb"].file("/etc/nginx/sites-available/notesapp.conf").content_string


def test_the_worker_host_runs_jobs_on_the_live_release(hosts, addresses):
    """With the web hosts' workers stopped, a job enqueued through the load balancer is run by the worker
    host's process, on the release the web hosts serve."""
    try:
        for web in ("web1", "web2"):
            hosts[web].check_output("systemctl stop 'notesapp-worker@*.service'")
        status, body = api_through_lb(addresses["lb"], "POST", "/api/jobs", {"text": "three small words"})
        assert status == 202, body
        start = time.monotonic()
        while time.monotonic() - start < 60:
            status, state = api_through_lb(addresses["lb"], "GET", f"/api/jobs/{body['id']}")
            if state["status"] in ("finished", "failed"):
                break
            time.sleep(0.5)
        assert state["status"] == "finished", state
        assert state["result"]["words"] == 3
        assert state["result"]["host"].rsplit("-", 1)[-1] == "worker1"
        assert state["result"]["release"] == RELEASES["v2"]
    finally:
        for web in ("web1", "web2"):
            hosts[web].check_output("systemctl start notesapp-worker@1.service notesapp-worker@2.service")


def test_a_web_host_powered_off_mid_load(hosts, addresses):
    web1 = testhelpers.testhost_name(addresses["web1"])
    with testhelpers.Load(addresses["lb"], DOMAIN, path="/version") as load:
        time.sleep(2)
        subprocess.run(["python3", str(testhelpers.TESTHOST), "stop", web1], check=True, timeout=120)
        time.sleep(8)
        only_web2 = {through_lb(addresses["lb"])[1]["host"].rsplit("-", 1)[-1] for _ in range(10)}
    print(f"\nweb1 powered off under load: {load.summary()}")
    assert only_web2 == {"web2"}
    assert load.ok > 50 and load.failed == 0, load.summary()
    subprocess.run(["python3", str(testhelpers.TESTHOST), "start", web1], check=True, timeout=120)
    # back by itself: the units are enabled, and nginx tries it again after fail_timeout. The bound only
    # has to hold on a slow, shared CI machine; the time is printed.
    start = time.monotonic()
    seen = set()
    while time.monotonic() - start < 180 and seen != {"web1", "web2"}:
        status, body = through_lb(addresses["lb"])
        if status == 200:
            seen.add(body["host"].rsplit("-", 1)[-1])
        time.sleep(0.5)
    print(f"web1 started again: served through the load balancer after {time.monotonic() - start:.1f} s")
    assert seen == {"web1", "web2"}


def test_failed_gate_in_the_first_batch_leaves_the_second_host_alone(hosts, addresses, app_repo):
    (rc, out), load = through_lb_under_load(addresses, "failed gate on web1 under load",
                                            lambda: deploy(app_repo, "sick",
                                                           app_gate_retries=SICK_GATE_RETRIES))
    assert rc != 0
    assert "web1: The health gate failed for release" in out, out[-3000:]
    assert "Never switched: web2, worker1." in out, out[-3000:]  # in play order: web hosts, then workers
    assert load.failed == 0, load.summary()
    for web in ("web1", "web2"):
        assert served(hosts[web]) == RELEASES["v2"] == current(hosts[web])
    assert background_release(hosts) == RELEASES["v2"] == current(hosts["worker1"])
    sick = [r for r in hosts["web2"].check_output("ls /srv/notesapp/releases").split()
            if r.endswith(HISTORY["sick"][:8])]
    assert len(sick) == 1  # unpacked on web2 too, never switched to
    assert " down" not in hosts["lb"].file("/etc/nginx/sites-available/notesapp.conf").content_string
    # the monitoring's view of it (roles/exporters publishes it; JobFailed fires while it says failure)
    status = json.loads(hosts["web1"].check_output("cat /var/lib/notesapp/deploy.json"))
    assert status["result"] == "failure" and "gate failed" in status["message"], status


def test_failed_gate_in_the_second_batch_switches_the_first_back(hosts, addresses, app_repo):
    (rc, out), load = through_lb_under_load(addresses, "failed gate on web2 after web1 switched, under load",
                                            lambda: deploy(app_repo, "sick-on-web2",
                                                           app_gate_retries=SICK_GATE_RETRIES))
    assert rc != 0
    assert "web2: The health gate failed for release" in out, out[-3000:]
    assert "Switched back: web1" in out, out[-3000:]
    assert load.failed == 0, load.summary()
    for web in ("web1", "web2"):
        assert served(hosts[web]) == RELEASES["v2"] == current(hosts[web]) == worker_release(hosts[web], 2)
    assert background_release(hosts) == RELEASES["v2"] == current(hosts["worker1"])  # never switched
    release = [r for r in hosts["web1"].check_output("ls /srv/notesapp/releases").split()
               if r.endswith(HISTORY["sick-on-web2"][:8])][0]
    assert hosts["web1"].file(f"/srv/notesapp/releases/{release}/.FAILED").exists
    log = [json.loads(line) for line in hosts["web1"].file("/var/log/notesapp/deploy.log").content_string.splitlines()]
    assert [entry["action"] for entry in log[-2:]] == ["deploy", "deploy-reverted"]


def test_one_batch_of_every_host_switches_them_together(hosts, addresses, app_repo):
    """serial 100%: no host leaves the load balancer (none would be left to serve); the restarts queue
    on the held sockets instead, each served meanwhile by a second Gunicorn of the old release. The
    release it makes (v2b) is what the rolling rollback below leaves."""
    since = testhelpers.host_now(hosts["web1"])
    (rc, out), load = through_lb_under_load(addresses, "one batch of both web hosts under load",
                                            lambda: deploy(app_repo, "v2b", app_deploy_serial="100%"))
    assert rc == 0, out[-3000:]
    assert [overlap_starts(hosts[w], since) for w in ("web1", "web2")] == [1, 1]
    assert load.failed == 0, load.summary()
    assert out.count("PLAY [Switch the web hosts in batches]") == 1
    RELEASES["v2b"] = served(hosts["web1"])
    assert served(hosts["web2"]) == background_release(hosts) == RELEASES["v2b"] != RELEASES["v2"]


def test_rollback_across_all_web_hosts_under_load(hosts, addresses):
    """From v2b, which the one-batch deploy above made, back to v2 in batches (the default serial)."""
    (rc, out), load = through_lb_under_load(addresses, "rolling rollback of v2b through the load balancer",
                                            lambda: testhelpers.run_playbook("playbooks/rollback.yml"))
    assert rc == 0, out[-3000:]
    assert load.ok > 50 and load.failed == 0, load.summary()
    assert out.count("PLAY [Switch the web hosts in batches]") == 3
    for web in ("web1", "web2"):
        assert served(hosts[web]) == RELEASES["v2"] == current(hosts[web])
    assert background_release(hosts) == RELEASES["v2"] == current(hosts["worker1"])


def test_a_real_restore_across_the_hosts_behind_the_lb_maintenance_page(hosts, addresses):
    """A backup made on the db host restored for real: the lb shows the maintenance page, both web hosts stop,
    the databases swap on the db host, both web hosts start and serve through the lb again; the replaced
    database is kept."""
    live = served(hosts["web1"])
    rc, out = testhelpers.run_playbook("playbooks/backup.yml")
    assert rc == 0, out[-3000:]
    rc, out = testhelpers.run_playbook("playbooks/restore.yml", {"backup_restore_confirm": "notesapp"})
    assert rc == 0, out[-3000:]
    assert "changed: [lb]" in out.split("PLAY [Show the maintenance page]")[1].split("PLAY [")[0], out[-3000:]
    for web in ("web1", "web2"):
        assert served(hosts[web]) == live == current(hosts[web])
        assert hosts[web].service("notesapp.service").is_running
    assert "changed: [worker1]" in out.split("PLAY [Stop the app]")[1].split("PLAY [")[0], out[-3000:]
    assert hosts["worker1"].service("notesapp-background@1.service").is_running
    databases = hosts["db"].check_output("runuser -u postgres -- psql -XAtc 'SELECT datname FROM pg_database'").split()
    assert [name for name in databases if name.startswith("notesapp_before_restore_")], databases
    assert not hosts["lb"].file("/var/www/maintenance/notesapp/on").exists
    assert through_lb(addresses["lb"])[1]["release"] == live


def test_a_dump_the_db_host_cannot_read_is_refused_before_any_change(hosts, addresses):
    """web1 (Ubuntu 24.04, pg_dump 16) dumps the database of the db host (Debian 12, PostgreSQL 15), as a
    deploy does before it migrates: the db host's pg_restore cannot read that archive. The restore brings it
    over through the controller, finds that out, says so, and changes nothing."""
    hosts["web1"].check_output(
        "systemd-run --quiet --wait --pipe --collect --property=EnvironmentFile=/etc/notesapp/env "
        "--property=EnvironmentFile=/etc/notesapp/migration.env /usr/local/lib/flask-deploy/with-libpq-env -- "
        "pg_dump --format=custom --file=/root/now.dump")
    before = hosts["db"].check_output(testhelpers.database_dump_digest("notesapp"))
    rc, out = testhelpers.run_playbook("playbooks/restore.yml", {
        "backup_restore_confirm": "notesapp", "backup_restore_dump": "web1:/root/now.dump"})
    assert rc != 0
    flat = " ".join(out.split())
    assert "Not restored: pg_restore on db cannot read web1:/root/now.dump" in flat, out[-3000:]
    assert "unsupported version" in flat and "Nothing was changed" in flat
    assert "PLAY [Show the maintenance page]" not in out
    assert hosts["db"].check_output(testhelpers.database_dump_digest("notesapp")) == before
    assert hosts["db"].run("ls /var/backups/postgresql/imported/*/notesapp.dump").rc != 0
    assert through_lb(addresses["lb"])[0] == 200


COPIERS = ("db", "web1", "web2", "lb")   # the hosts with something a restore needs: dumps, uploads, certificates
UPLOADS = "/srv/notesapp/shared/uploads"


def offsite(host, *args):
    """/usr/local/sbin/offsite on a host, as root (what the timers run)."""
    return host.run(" ".join(["/usr/local/sbin/offsite", *map(shlex.quote, args)]))


def offsite_status(host, job="backup"):
    return json.loads(host.file(f"/var/lib/offsite/{job}.json").content_string)


def forget_ssh_connections(backup):
    """Empty the backup host's count of new SSH connections per address (roles/common's ufw `limit`: the 6th
    within 30 s is refused). A nightly copy opens one; a test that asks a repository several things within
    seconds opens more."""
    backup.check_output("for recent in /proc/net/xt_recent/*; do echo / > $recent; done")


def snapshots(host):
    result = offsite(host, "restic", "--no-lock", "snapshots", "--json")   # no lock: it reads a full disk too
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def test_every_host_with_data_copies_it_off_site_into_its_own_repository(hosts, addresses):
    """site.yml gave db, web1, web2 and lb each a repository on backup1, behind a user of its own that may only
    speak SFTP with that host's key; playbooks/backup.yml copied the dump, the uploads and the certificates
    there. The copies are encrypted, and one host's key cannot open another host's repository."""
    backup = hosts["backup1"]
    upload = hosts["web1"].check_output(
        f"head -c 300000 /dev/urandom > {UPLOADS}/photo.jpg && chown notesapp: {UPLOADS}/photo.jpg"
        f" && sha256sum {UPLOADS}/photo.jpg")
    rc, out = testhelpers.run_playbook("playbooks/backup.yml")
    assert rc == 0, out[-3000:]
    for name in COPIERS:
        forget_ssh_connections(backup)
        host = hosts[name]
        assert host.service("offsite-backup.timer").is_enabled and host.service("offsite-check.timer").is_enabled
        status = offsite_status(host)
        assert status["result"] == "success" and status["snapshot"], (name, status)
        assert status["last_success_at"] == status["finished_at"]
        taken = snapshots(host)
        assert taken and {s["hostname"] for s in taken} == {name}, taken
        repo = backup.file(f"/srv/restic/{name}")
        assert repo.user == f"restic-{name}" and repo.mode == 0o700, name
        keys = backup.file(f"/srv/restic/{name}/.ssh/authorized_keys").content_string.splitlines()
        assert len(keys) == 1 and keys[0].startswith('restrict,command="/usr/lib/openssh/sftp-server" ssh-ed25519')
        assert host.file("/etc/offsite/password").mode == 0o600
        # encrypted: nothing of the data is readable on the backup host
        assert backup.run(f"grep -rl notesapp /srv/restic/{name}/repo/data").rc == 1, name
    paths = {p for s in snapshots(hosts["db"]) for p in s["paths"]}
    assert paths == {"/var/backups/postgresql"}, paths
    assert {p for s in snapshots(hosts["lb"]) for p in s["paths"]} == {"/etc/letsencrypt"}
    forget_ssh_connections(backup)
    listed = offsite(hosts["web1"], "restic", "ls", "latest", f"{UPLOADS}/photo.jpg")
    assert listed.rc == 0 and f"{UPLOADS}/photo.jpg" in listed.stdout, listed.stderr
    # web1's key opens web1's repository only: not web2's, and no shell
    web1_key = "-i /etc/offsite/id_ed25519 -o UserKnownHostsFile=/etc/offsite/known_hosts -o BatchMode=yes"
    # (an exit status of ssh's 255 is read by testinfra as its own connection failing: hence `; echo`)
    other = hosts["web1"].run(f"echo 'ls /srv/restic/web2/repo' | sftp {web1_key} -b - "
                              f"restic-web2@{addresses['backup1']} 2>&1; echo exit=$?")
    assert "Permission denied" in other.stdout and "exit=0" not in other.stdout, other.stdout
    shell = hosts["web1"].run(f"timeout 20 ssh {web1_key} restic-web1@{addresses['backup1']} id </dev/null 2>&1; "
                              f"echo exit=$?")
    assert "uid=" not in shell.stdout, shell.stdout
    RELEASES["upload"] = upload.split()[0]


def test_the_restore_drill_runs_from_the_off_site_copies(hosts):
    """With a backup group, playbooks/restore.yml's drill restores the database from the newest dump in the
    off-site copy (verified by restic, then checked, restored and compared as the drill does), and every
    web host and the load balancer restore their latest snapshot, verify it and compare it with their files."""
    rc, out = testhelpers.run_playbook("playbooks/backup.yml")
    assert rc == 0, out[-3000:]
    forget_ssh_connections(hosts["backup1"])
    rc, out = testhelpers.run_playbook("playbooks/restore.yml")
    assert rc == 0, out[-3000:]
    flat = " ".join(out.split())
    assert re.search(r"Restore drill of notesapp from /var/backups/postgresql/imported/\S+, backup \S+ from the "
                     r"off-site copy .* passed", flat), out[-3000:]
    web1 = flat.split("Off-site drill on web1 passed")[1].split("Off-site drill on")[0]
    assert f"{UPLOADS}: 1 file(s), 0 changed on the host since, 0 no longer there." in web1, web1
    assert "Off-site drill on lb passed" in flat and "Off-site drill on web2 passed" in flat
    assert hosts["db"].run("ls -A /var/backups/postgresql/imported").stdout.strip() == ""


def test_uploads_come_back_after_a_web_host_is_replaced(hosts, addresses):
    """web1 lost with its disk: a new web1 (no uploads, no key, no password) set up by site.yml's off-site
    part gets a new key, which replaces the old one on the backup host; playbooks/restore-files.yml puts
    the uploads back, byte for byte, and leaves a file the new host already has as it is."""
    web1 = hosts["web1"]
    old_key = web1.check_output("cat /etc/offsite/id_ed25519.pub")
    web1.check_output(f"cp /etc/offsite/id_ed25519 /root/old-offsite-key && rm -rf /etc/offsite {UPLOADS}/*")
    web1.check_output(f"echo written on the new host > {UPLOADS}/notes.txt")
    web1.check_output(f"echo the new host owns this > {UPLOADS}/photo.jpg.keep")
    rc, out = testhelpers.run_playbook("playbooks/provision.yml", options=("--limit", "web1", "--tags", "offsite"))
    assert rc == 0, out[-3000:]
    assert web1.check_output("cat /etc/offsite/id_ed25519.pub") != old_key
    keys = hosts["backup1"].file("/srv/restic/web1/.ssh/authorized_keys").content_string
    assert old_key.split()[1] not in keys
    old = web1.run("echo ls | sftp -i /root/old-offsite-key -o UserKnownHostsFile=/etc/offsite/known_hosts "
                   f"-o BatchMode=yes -b - restic-web1@{addresses['backup1']} 2>&1; echo exit=$?")
    assert "Permission denied" in old.stdout, f"the lost host's key still opens its repository: {old.stdout}"
    forget_ssh_connections(hosts["backup1"])
    rc, out = testhelpers.run_playbook("playbooks/restore-files.yml", options=("--limit", "web1"))
    assert rc == 0, out[-3000:]
    assert f"{UPLOADS}: 1 file(s) put back" in " ".join(out.split()), out[-3000:]
    assert web1.check_output(f"sha256sum {UPLOADS}/photo.jpg").split()[0] == RELEASES["upload"]
    assert web1.file(f"{UPLOADS}/photo.jpg").user == "notesapp"
    assert web1.check_output(f"cat {UPLOADS}/notes.txt") == "written on the new host"
    web1.check_output(f"rm -f /root/old-offsite-key {UPLOADS}/notes.txt {UPLOADS}/photo.jpg.keep")


def test_a_copy_fails_loudly_when_the_backup_host_is_unreachable_or_full_and_keeps_earlier_snapshots(
        hosts, addresses):
    """The backup host unreachable from db (its SSH rejected), then web2's repository on a full disk (a
    64 MB tmpfs, filled): each copy exits non-zero, its status says why and keeps the last success, and the
    snapshot taken before still restores byte for byte."""
    db, web2, backup = hosts["db"], hosts["web2"], hosts["backup1"]
    before = offsite_status(db)
    rule = f"OUTPUT -d {addresses['backup1']} -p tcp --dport 22 -j REJECT --reject-with tcp-reset"
    db.check_output(f"iptables -I {rule}")
    try:
        result = offsite(db, "backup")
    finally:
        db.check_output(f"iptables -D {rule}")
    assert result.rc != 0
    status = offsite_status(db)
    assert status["result"] == "failure" and status["last_success_at"] == before["last_success_at"], status
    assert status["message"].startswith("cannot reach the backup host backup1"), status
    assert "Connection refused" in status["message"], status

    repo = "/srv/restic/web2/repo"
    web2.check_output(f"head -c 200000 /dev/urandom > {UPLOADS}/kept.bin")
    forget_ssh_connections(backup)
    assert offsite(web2, "backup").rc == 0
    kept = snapshots(web2)
    expected = web2.check_output(f"sha256sum {UPLOADS}/kept.bin").split()[0]
    backup.check_output(f"mkdir -p /mnt/full && mount -t tmpfs -o size=64m tmpfs /mnt/full"
                        f" && cp -a {repo}/. /mnt/full/ && chown restic-web2: /mnt/full && chmod 0700 /mnt/full"
                        f" && mount --bind /mnt/full {repo}")
    try:
        backup.run("dd if=/dev/zero of=/mnt/full/filler bs=1M")   # until the disk is full
        web2.check_output(f"head -c 2000000 /dev/urandom > {UPLOADS}/later.bin")
        result = offsite(web2, "backup")
        assert result.rc != 0
        status = offsite_status(web2)
        assert status["result"] == "failure", status
        assert status["message"].startswith("the backup host's disk is full: 0 MB free under /srv/restic/web2/repo"), status
        assert snapshots(web2) == kept
    finally:
        backup.run(f"umount {repo}; umount /mnt/full")
        web2.run(f"rm -f {UPLOADS}/later.bin")
    forget_ssh_connections(backup)
    restored = web2.run(f"rm -rf /root/restored && /usr/local/sbin/offsite restic restore latest --target "
                        f"/root/restored --include {UPLOADS} && sha256sum /root/restored{UPLOADS}/kept.bin")
    assert restored.rc == 0 and restored.stdout.splitlines()[-1].split()[0] == expected, restored.stdout
    web2.check_output("rm -rf /root/restored")
    check = offsite(web2, "check")
    assert check.rc == 0 and offsite_status(web2, "check")["result"] == "success", check.stderr


def received(db, timeout=120):
    """Wait until Barman's pg_receivewal on the backup host reports it has written the database host's WAL up
    to where it is now; the seconds it took: how long a write made now lives on the database host alone (an
    upper bound: pg_receivewal reports every 10 s, or when asked). If it does not, say what both say."""
    psql = "runuser -u postgres -- psql -XAt"
    lsn = db.check_output(f"{psql} -c 'SELECT pg_current_wal_lsn()'")
    query = (f"SELECT coalesce(bool_or(r.write_lsn >= '{lsn}'), false) FROM pg_stat_replication r "
             f"JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = 'barman'")
    start = time.monotonic()
    while db.check_output(f'{psql} -c "{query}"') != "t":
        if time.monotonic() - start > timeout:
            seen = db.run(f"{psql} -xc 'SELECT * FROM pg_stat_replication' -c 'SELECT * FROM pg_replication_slots'")
            raise AssertionError(f"WAL up to {lsn} not received by Barman within {timeout} s:\n{seen.stdout}")
        time.sleep(0.5)
    return time.monotonic() - start


def test_a_restore_to_a_time_that_cannot_be_reached_is_refused_before_any_change(hosts, addresses):
    """restore_to that is not a time, in the future, or before the oldest base backup: refused with the reason,
    the database and the site as they were, no maintenance page."""
    before = hosts["db"].check_output(testhelpers.database_dump_digest("notesapp"))
    for moment, said in (("not a time", "restore_to='not a time' is not a time"),
                         ("2099-01-01 00:00:00", "restore_to='2099-01-01 00:00:00' is in the future"),
                         ("2020-01-01 00:00:00", "No base backup on backup1 ended before 2020-01-01 00:00:00+00:00")):
        rc, out = testhelpers.run_playbook("playbooks/restore.yml", {"backup_restore_confirm": "notesapp",
                                                                     "restore_to": moment})
        flat = " ".join(out.split()).replace("''", "'")   # the output quotes a ' in a message as ''
        assert rc != 0 and said in flat and "Nothing was changed" in flat, out[-3000:]
        assert "PLAY [Show the maintenance page]" not in out
    assert hosts["db"].check_output(testhelpers.database_dump_digest("notesapp")) == before
    assert through_lb(addresses["lb"])[0] == 200


def test_point_in_time_restore_after_losing_the_database_host(hosts, addresses):
    """Notes written and streamed to Barman on backup1 (the time that took is the data loss window, printed),
    the moment T noted, more notes written and streamed. Nothing waits for PostgreSQL to close the segment or
    for Barman to archive it: the later notes are only in Barman's streaming directory. Then the database
    host's cluster is lost and a new one made (as on a new VM), site.yml's provisioning sets it up, and
    playbooks/restore.yml -e restore_to=T restores onto it behind the maintenance page: the notes up to T are
    there, the later ones are not, the app serves, and Barman starts over with the new cluster, keeping the
    old one's backups (the restore's time, printed, is the recovery time)."""
    db, backup = hosts["db"], hosts["backup1"]
    psql = "runuser -u postgres -- psql -XAt"
    assert "receive-wal running: OK" in backup.check_output("cd /var/lib/barman && runuser -u barman -- barman check db")
    assert db.check_output(f"{psql} -c 'SHOW archive_timeout'") == "1min"
    before = [api_through_lb(addresses["lb"], "POST", "/api/notes", {"title": f"before T {i}", "body": "kept"})[1]["id"]
              for i in range(3)]
    window = received(db)
    moment = db.check_output("date -u '+%Y-%m-%d %H:%M:%S'")
    time.sleep(1.5)
    after = [api_through_lb(addresses["lb"], "POST", "/api/notes", {"title": f"after T {i}", "body": "gone"})[1]["id"]
             for i in range(2)]
    received(db)

    db.check_output("pg_dropcluster --stop 15 main && pg_createcluster --start 15 main >/dev/null")
    assert db.check_output(f"{psql} -c 'SELECT count(*) FROM pg_database WHERE datname = $$notesapp$$'") == "0"
    rc, out = testhelpers.run_playbook("playbooks/provision.yml", options=("--limit", "db,backup1"))
    assert rc == 0, out[-3000:]
    started = time.monotonic()
    rc, out = testhelpers.run_playbook("playbooks/restore.yml", {"backup_restore_confirm": "notesapp",
                                                                 "restore_to": moment})
    recovery = time.monotonic() - started
    assert rc == 0, out[-3000:]
    flat = " ".join(out.split())
    assert f"recovered to {moment}+00:00 from base backup" in flat, out[-3000:]
    assert "changed: [lb]" in out.split("PLAY [Show the maintenance page]")[1].split("PLAY [")[0]
    for note in before:
        assert api_through_lb(addresses["lb"], "GET", f"/api/notes/{note}")[0] == 200, note
    for note in after:
        assert api_through_lb(addresses["lb"], "GET", f"/api/notes/{note}")[0] == 404, note
    assert through_lb(addresses["lb"])[0] == 200
    databases = db.check_output(f"{psql} -c 'SELECT datname FROM pg_database'").split()
    assert [name for name in databases if name.startswith("notesapp_before_restore_")], databases
    # Barman follows the new cluster; the old one's backups are kept aside
    assert backup.run("ls -d /var/lib/barman/db-before-*").rc == 0
    check = backup.check_output("cd /var/lib/barman && runuser -u barman -- barman check db")
    assert "systemid coherence: OK" in check and "receive-wal running: OK" in check, check
    print(f"\nPoint-in-time recovery: a write reached Barman on the backup host within {window:.1f} s (the data "
          f"loss window, RPO); the restore to T onto a new cluster took {recovery:.0f} s (RTO)")


def test_restore_to_latest_brings_back_every_write_barman_received(hosts, addresses):
    """restore_to=latest: a note written a moment ago, streamed to Barman but in no archived WAL segment, is
    in the database the restore swaps in (it is the one recovered from Barman, the live one is kept aside)."""
    db = hosts["db"]
    psql = "runuser -u postgres -- psql -XAt"
    def replaced():
        names = db.check_output(f"{psql} -c 'SELECT datname FROM pg_database'").split()
        return [name for name in names if name.startswith("notesapp_before_restore_")]

    earlier = replaced()
    note = api_through_lb(addresses["lb"], "POST", "/api/notes", {"title": "just now", "body": "latest"})[1]["id"]
    received(db)
    rc, out = testhelpers.run_playbook("playbooks/restore.yml", {"backup_restore_confirm": "notesapp",
                                                                 "restore_to": "latest"})
    assert rc == 0, out[-3000:]
    assert "recovered to the last write Barman received from base backup" in " ".join(out.split()), out[-3000:]
    assert api_through_lb(addresses["lb"], "GET", f"/api/notes/{note}")[0] == 200
    now = replaced()   # the live database was swapped out (kept), the earlier restore's one dropped
    assert len(now) == 1 and now != earlier, (earlier, now)


def test_preflight_refuses_a_backup_group_without_its_own_repository_password(hosts):
    """With a `backup` group, the copies' password must be in the vault and be no other secret's."""
    rc, out = testhelpers.run_playbook("molecule/cluster/converge.yml", {"vault_backup_repository_password": ""})
    assert rc != 0 and "vault_backup_repository_password is not set" in out, out[-3000:]
    import yaml

    vault = testhelpers.REPO / "molecule/cluster/inventory/group_vars/all/vault.yml"
    same = yaml.safe_load(vault.read_text())["vault_redis_password"]
    rc, out = testhelpers.run_playbook("molecule/cluster/converge.yml", {"vault_backup_repository_password": same})
    flat = " ".join(out.split())
    assert rc != 0 and "vault_redis_password and vault_backup_repository_password are the same" in flat, out[-3000:]
    assert "PLAY [Apply the base to every host]" not in out


def test_preflight_refuses_a_split_topology_without_private_addresses(hosts, tmp_path):
    import yaml

    inventory, path = testhelpers.inventory_copy(tmp_path)
    inventory["all"]["hosts"]["web2"]["private_address"] = "web2.internal"
    path.write_text(yaml.safe_dump(inventory))
    rc, out = testhelpers.run_playbook("molecule/cluster/converge.yml", inventory=str(path))
    assert rc != 0
    assert "web2 has no private IPv4 address ('web2.internal'): set private_address" in out, out[-3000:]
    recaps = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", out, re.MULTILINE)
    assert len(recaps) == 7 and all(changed == "0" for _, changed in recaps), out[-3000:]
