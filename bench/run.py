#!/usr/bin/env python3
"""bench/run.py: the figures users choose a deployment stack by, measured side by side in one run.

    make bench            # = .venv/bin/python bench/run.py  (about 20 minutes on 2 cores)

Boots a fresh local test host "bench" (Ubuntu 24.04, scripts/testhost) with Pebble as the ACME server,
then measures and prints:

  P1  site.yml second run ÷ first run (and the second run's `changed` count)
  P2  the same no-change run with a naive ansible.cfg (no Mitogen, pipelining or ControlPersist) ÷ ours
  P3  requests/s: nginx -> Gunicorn ÷ Gunicorn direct; a static file via nginx ÷ via Flask;
      our Gunicorn settings ÷ `gunicorn wsgi:app` defaults, on an endpoint that waits on the database
  P4  code-only deploy ÷ first converge; rollback wall time
  P5  failed requests and p99 latency during a deploy and a rollback under steady load, ÷ p99 at rest
  P6  pg_restore -j2 of a custom-format dump ÷ psql of a plain SQL dump, on a seeded database
      (about 300 MB); dump size ratio
  P7  recovery after losing the database host, with a second test host as the `backup` group: the data
      lost (RPO) and the time a restore takes (RTO), by the nightly dump and by Barman's point-in-time
      recovery, on the app's database grown to about 300 MB
  and security figures: sslyze's Mozilla-intermediate verdict, `systemd-analyze security` of the app's
      unit, Lynis' hardening index (the first two are also asserted in the certbot and gunicorn scenarios)

Writes bench/results/latest.json, latest.md (the table the README shows) and latest.png (latency over
a deploy and a rollback). Ratios, not assertions: nothing here fails because a figure is slow.
The hosts are taken down at the end (--keep leaves them up). --only P7 measures that one figure (after a
first site.yml) and keeps the others from bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A script run on its own, not by pytest: the one place that puts molecule/shared on the path by hand
# (every test directory gets it from the repository's pytest.ini).
sys.path.insert(0, str(REPO / "molecule/shared"))
import testhelpers  # noqa: E402

NAME = "bench"
BACKUP = "bench-backup"
DOMAIN = f"{NAME}.test"
RESULTS = REPO / "bench/results"
WORK = REPO / ".cache/bench"


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)


class Host:
    """The bench host: SSH commands and ansible-playbook runs against the generated inventory."""

    def __init__(self, info: dict, inventory: Path):
        self.info, self.inventory = info, inventory
        self.address = info["address"]

    def run(self, command: str, timeout: int = 900) -> str:
        res = testhelpers.ssh({"ansible_host": self.address, "ansible_private_key_file": self.info["identity_file"]},
                              command, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"on {NAME}: {command}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        return res.stdout.strip()

    def playbook(self, playbook: str, extra: dict | None = None, env: dict | None = None) -> tuple[float, str]:
        """Run a playbook; return its wall time and output (raises on failure)."""
        argv = ["ansible-playbook", "-i", str(self.inventory), str(REPO / playbook)]
        if extra:
            argv += ["-e", json.dumps(extra)]
        start = time.monotonic()
        res = subprocess.run(argv, text=True, capture_output=True, env={**os.environ, **(env or {})}, cwd=REPO)
        took = time.monotonic() - start
        if res.returncode != 0:
            raise RuntimeError(f"{playbook} failed:\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}")
        return took, res.stdout


# The bench's steady load: heavier than the tests' (which only need requests flowing during a switch),
# and the same as in earlier runs, so that P5's figures compare.
LOAD = {"threads": 4, "pause": 0.02}


def changed_count(output: str) -> int:
    return sum(int(c) for c in re.findall(r"^\S+\s+: ok=\d+\s+changed=(\d+)", output, re.MULTILINE))


def boot(keep_inventory: Path) -> Host:
    log("booting a fresh test host and Pebble")
    sh(["python3", str(REPO / "scripts/testhost"), "image", "ubuntu2404"])
    info = json.loads(sh(["python3", str(REPO / "scripts/testhost"), "up", "--replace", f"{NAME}=ubuntu2404"]).stdout)
    keep_inventory.mkdir(parents=True, exist_ok=True)
    (keep_inventory / "group_vars/all").mkdir(parents=True, exist_ok=True)
    (keep_inventory / "hosts.yml").write_text(json.dumps({
        "all": {"hosts": {NAME: {
            "ansible_host": info["address"], "ansible_user": "root",
            "ansible_ssh_private_key_file": info["identity_file"],
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_host_key_checking": False}},
            "children": {g: {"hosts": {NAME: None}} for g in ("db", "redis", "web", "lb")}}}))
    settings = {
        "app_domains": [DOMAIN], "app_acme_email": "ops@flask-deploy.test",
        "app_acme_server": testhelpers.TESTNET["testnet_acme_server"],
        "app_acme_ca_bundle": testhelpers.TESTNET["testnet_acme_ca_bundle"],
        "common_ntp_servers": [testhelpers.TESTNET["testnet_gateway"]],
        # P2's naive ansible.cfg opens one SSH connection per task, which ufw's SSH limit would refuse
        "common_firewall_ssh_limit": False,
        **{k: secrets.token_urlsafe(32) for k in ("vault_app_secret_key", "vault_postgresql_owner_password",
                                                   "vault_postgresql_app_password",
                                                   "vault_redis_password", "vault_redis_app_password")}}
    (keep_inventory / "group_vars/all/main.yml").write_text(json.dumps(settings))
    host = Host(info, keep_inventory)
    host.playbook("molecule/shared/prepare.yml")
    host.playbook("molecule/shared/pebble.yml")
    return host


def wrk(host: Host, url: str, header: str = "", seconds: int = 10, connections: int = 16) -> float:
    """Requests per second wrk measures on the host itself (loopback), two threads."""
    out = host.run(f"wrk -t2 -c{connections} -d{seconds}s --latency {header} {url}", timeout=seconds + 60)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not match or non2xx:
        raise RuntimeError(f"wrk {url}: {out}")
    return float(match.group(1))


def p3(host: Host) -> dict:
    log("P3: requests per second, side by side (wrk on the host)")
    host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null")
    release = "/srv/notesapp/current"
    common = (f"--property User=notesapp --property WorkingDirectory={release} "
              f"--property EnvironmentFile=/etc/notesapp/env --property EnvironmentFile={release}/.release.env "
              f"--property RuntimeDirectory=bench-gunicorn --setenv PROMETHEUS_MULTIPROC_DIR=/run/bench-gunicorn")
    # the same code, our settings (gunicorn.conf.py, as the service runs it) on TCP, and the defaults
    host.run(f"systemd-run --unit bench-ours {common} {release}/venv/bin/gunicorn -c gunicorn.conf.py "
             f"--bind 127.0.0.1:8001 wsgi:app")
    host.run(f"systemd-run --unit bench-defaults {common.replace('bench-gunicorn', 'bench-gunicorn2')} "
             f"{release}/venv/bin/gunicorn --bind 127.0.0.1:8002 wsgi:app")
    host.run("for i in $(seq 50); do curl -sf http://127.0.0.1:8001/health >/dev/null && "
             "curl -sf http://127.0.0.1:8002/health >/dev/null && exit 0; sleep 0.2; done; exit 1")
    # wrk names the URL's host in the TLS handshake: nginx's default server refuses one without the site's name
    host.run(f"grep -q ' {DOMAIN}$' /etc/hosts || echo '127.0.0.1 {DOMAIN}' >> /etc/hosts")
    tls = ""
    static = "/static/notes.css"
    try:
        r = {
            "nginx_to_gunicorn_rps": wrk(host, f"https://{DOMAIN}/health", tls),
            "gunicorn_direct_rps": wrk(host, "http://127.0.0.1:8001/health"),
            "static_nginx_rps": wrk(host, f"https://{DOMAIN}{static}", tls),
            "static_flask_rps": wrk(host, f"http://127.0.0.1:8001{static}"),
            "db_ours_rps": wrk(host, "http://127.0.0.1:8001/health/ready"),
            "db_defaults_rps": wrk(host, "http://127.0.0.1:8002/health/ready"),
        }
    finally:
        host.run("systemctl stop bench-ours bench-defaults || true")
    r["nginx_over_direct"] = r["nginx_to_gunicorn_rps"] / r["gunicorn_direct_rps"]
    r["static_nginx_over_flask"] = r["static_nginx_rps"] / r["static_flask_rps"]
    r["ours_over_defaults_db"] = r["db_ours_rps"] / r["db_defaults_rps"]
    return r


def p6(host: Host) -> dict:
    log("P6: seeding a database of about 300 MB, then custom-format -j2 vs plain SQL restores")
    psql = "runuser -u postgres -- psql -q -X -v ON_ERROR_STOP=1"
    host.run(f"{psql} -c 'DROP DATABASE IF EXISTS bench_seed' -c 'CREATE DATABASE bench_seed'")
    host.run(f"{psql} -d bench_seed -c \"CREATE TABLE events AS SELECT g AS id, now() - g * interval '1 second' AS at, "
             f"md5(g::text) || repeat('x', 120) AS payload FROM generate_series(1, 1600000) g\" "
             f"-c 'CREATE TABLE users AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 400000) g' "
             f"-c 'ALTER TABLE events ADD PRIMARY KEY (id)' -c 'ALTER TABLE users ADD PRIMARY KEY (id)' "
             f"-c 'CREATE INDEX ON events (at)'", timeout=1800)
    size = int(host.run(f"{psql} -tAc \"SELECT pg_database_size('bench_seed')\""))
    d = "/var/tmp/bench-dumps"
    host.run(f"rm -rf {d} && install -d -o postgres {d}")
    host.run(f"runuser -u postgres -- pg_dump -Fc -f {d}/seed.dump bench_seed", timeout=1800)
    host.run(f"runuser -u postgres -- pg_dump -Fp -f {d}/seed.sql bench_seed", timeout=1800)
    custom = int(host.run(f"stat -c %s {d}/seed.dump"))
    plain = int(host.run(f"stat -c %s {d}/seed.sql"))

    def timed(command: str) -> float:
        out = host.run(f"{psql} -c 'DROP DATABASE IF EXISTS bench_restore' -c 'CREATE DATABASE bench_restore' && "
                       f"start=$EPOCHREALTIME; {command}; end=$EPOCHREALTIME; python3 -c \"print($end - $start)\"",
                       timeout=3600)
        return float(out.splitlines()[-1])

    parallel = timed(f"runuser -u postgres -- pg_restore -j2 -d bench_restore {d}/seed.dump")
    serial_sql = timed(f"{psql} -d bench_restore -f {d}/seed.sql >/dev/null")
    host.run(f"{psql} -c 'DROP DATABASE IF EXISTS bench_restore' -c 'DROP DATABASE bench_seed' && rm -rf {d}")
    return {"database_bytes": size, "custom_dump_bytes": custom, "plain_dump_bytes": plain,
            "restore_custom_j2_s": parallel, "restore_plain_sql_s": serial_sql,
            "custom_j2_over_plain": parallel / serial_sql, "custom_over_plain_size": custom / plain}


def security(host: Host) -> dict:
    """sslyze against Mozilla's intermediate profile (from the controller, certificate checked against
    Pebble's root), systemd-analyze's exposure of the app's unit, and Lynis' hardening index."""
    log("security: sslyze, systemd-analyze security, Lynis")
    import ssl
    import urllib.request

    env = json.loads(sh(["python3", str(REPO / "scripts/testhost"), "pebble", "env"]).stdout)
    context = ssl.create_default_context(cafile=env["ca_bundle"])
    root = WORK / "pebble-root.pem"
    with urllib.request.urlopen(f"{env['management']}/roots/0", context=context, timeout=10) as answer:
        root.write_bytes(answer.read())
    res = subprocess.run([str(REPO / ".venv/bin/sslyze"), "--mozilla_config=intermediate", "--certinfo",
                          f"--certinfo_ca_file={root}", f"{DOMAIN}:443{{{host.address}}}"],
                         capture_output=True, text=True, timeout=300)
    compliant = f"{DOMAIN}:443: OK - Compliant." in res.stdout
    exposure = re.search(r"Overall exposure level for notesapp.service: ([0-9.]+) (\S+)",
                         host.run("systemd-analyze security --no-pager notesapp.service"))
    host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q lynis >/dev/null")
    lynis = host.run("lynis audit system --quick --no-colors --no-log 2>/dev/null | "
                     "sed -n 's/.*Hardening index : \\([0-9]*\\).*/\\1/p'", timeout=900)
    return {"sslyze_mozilla_intermediate": "compliant" if compliant else res.stdout.strip().splitlines()[-1:],
            "systemd_exposure": float(exposure.group(1)), "systemd_exposure_label": exposure.group(2),
            "lynis_hardening_index": int(lynis) if lynis.isdigit() else None}


def plot(loads: dict, marks: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(loads), 1, figsize=(9, 3 * len(loads)), sharey=True)
    for ax, (title, load) in zip(axes, loads.items()):
        ok = [(t, lat * 1000) for t, lat, good in load.samples if good]
        bad = [(t, lat * 1000) for t, lat, good in load.samples if not good]
        ax.scatter([t for t, _ in ok], [v for _, v in ok], s=2, label="answered")
        if bad:
            ax.scatter([t for t, _ in bad], [v for _, v in bad], s=12, c="red", label="failed")
        for label, (start, end) in marks[title].items():
            ax.axvspan(start, end, alpha=0.15, color="orange")
            ax.text(start, 1, label, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"{title}: {load.summary().split(';')[0]}", fontsize=9)
        ax.set_ylabel("latency (ms)")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def p7(host: Host) -> dict:
    """RPO and RTO of the two ways to recover the app's database, on the same data: the nightly dump (RPO:
    the time between two dumps; RTO: playbooks/restore.yml of the newest dump) and Barman (RPO: how long a
    write exists only on the database host before Barman has archived its WAL, measured; RTO:
    playbooks/restore.yml -e restore_to, the WAL replayed to that moment)."""
    log("P7: a backup host beside the bench host (Barman, restic), the app's database grown to about 300 MB")
    info = json.loads(sh(["python3", str(REPO / "scripts/testhost"), "up", "--replace",
                          f"{BACKUP}=ubuntu2404"]).stdout)
    hosts_file = host.inventory / "hosts.yml"
    inventory = json.loads(hosts_file.read_text())
    inventory["all"]["hosts"][BACKUP] = {**inventory["all"]["hosts"][NAME], "ansible_host": info["address"]}
    inventory["all"]["children"]["backup"] = {"hosts": {BACKUP: None}}
    hosts_file.write_text(json.dumps(inventory))
    settings_file = host.inventory / "group_vars/all/main.yml"
    settings = json.loads(settings_file.read_text())
    settings.update({k: secrets.token_urlsafe(32)
                     for k in ("vault_backup_repository_password", "vault_postgresql_barman_password")})
    settings_file.write_text(json.dumps(settings))
    backup = Host(info, host.inventory)
    host.playbook("molecule/shared/prepare.yml")
    host.playbook("playbooks/provision.yml")
    psql = "runuser -u postgres -- psql -q -X -v ON_ERROR_STOP=1 -d notesapp"
    host.run(f"{psql} -c \"CREATE TABLE bench_events AS SELECT g AS id, now() - g * interval '1 second' AS at, "
             f"md5(g::text) || repeat('x', 120) AS payload FROM generate_series(1, 1600000) g\" "
             f"-c 'ALTER TABLE bench_events ADD PRIMARY KEY (id)'", timeout=1800)
    size = int(host.run(f"{psql} -tAc \"SELECT pg_database_size('notesapp')\""))
    dump_s, _ = host.playbook("playbooks/backup.yml")
    restore_dump_s, _ = host.playbook("playbooks/restore.yml", {"backup_restore_confirm": "notesapp"})
    # A write, the moment to restore to, and a later write: a recovery to a moment stops at the first commit
    # after it. The RPO is how long the later write lives on the database host alone: until Barman's
    # pg_receivewal reports it has written the WAL past it (it reports every 10 s at most, or when asked, so
    # this is an upper bound). Nothing waits for the segment to close or be archived: the recovery reads
    # Barman's streaming directory too.
    host.run(f"{psql} -c \"INSERT INTO bench_events VALUES (0, now(), 'kept')\"")
    time.sleep(1)
    moment = host.run("date -u '+%Y-%m-%d %H:%M:%S'")
    time.sleep(1)
    # On the host, in one SSH connection (its firewall limits new ones): the write, then the wait.
    query = ("SELECT coalesce(bool_or(r.write_lsn >= '$lsn'), false) FROM pg_stat_replication r "
             "JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = 'barman'")
    script = (f"{psql} -c \"INSERT INTO bench_events VALUES (-1, now(), 'after the moment')\"; start=$(date +%s.%N); "
              f"lsn=$({psql} -tAc 'SELECT pg_current_wal_lsn()'); "
              f"for i in $(seq 1500); do test \"$({psql} -tAc \"{query}\")\" = t && break; sleep 0.2; done; "
              f"test \"$({psql} -tAc \"{query}\")\" = t || exit 1; echo $start $(date +%s.%N)")
    start, end = map(float, host.run(script, timeout=400).split())
    rpo_barman = end - start
    restore_pitr_s, _ = host.playbook("playbooks/restore.yml", {"backup_restore_confirm": "notesapp",
                                                                "restore_to": moment})
    rows = host.run(f"{psql} -tAc 'SELECT payload FROM bench_events WHERE id <= 0 ORDER BY id'")
    if rows != "kept":
        raise RuntimeError(f"P7: after the restore to {moment}, rows -1 and 0 hold {rows!r}, not just 'kept'")
    host.run(f"{psql} -c 'DROP TABLE bench_events'")
    return {"database_bytes": size, "dump_s": dump_s, "rpo_dump_s": 24 * 3600, "rpo_barman_s": rpo_barman,
            "rto_dump_s": restore_dump_s, "rto_barman_s": restore_pitr_s,
            "rpo_barman_over_dump": rpo_barman / (24 * 3600),
            "rto_barman_over_dump": restore_pitr_s / restore_dump_s}


def machine() -> dict:
    return {"cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "os": platform.freedesktop_os_release().get("PRETTY_NAME", ""), "date": time.strftime("%Y-%m-%d"),
            "test_host": "Ubuntu 24.04 (systemd-nspawn)"}


def p1_p2(host) -> tuple[dict, dict]:
    """P1: site.yml on the bare host, then again. P2: the no-change run again with a naive ansible.cfg."""
    log("P1: site.yml on the bare host, then again")
    first, out1 = host.playbook("site.yml")
    second, out2 = host.playbook("site.yml")
    p1 = {"first_s": first, "second_s": second, "second_over_first": second / first,
          "first_changed": changed_count(out1), "second_changed": changed_count(out2)}
    log("P2: the no-change run with a naive ansible.cfg")
    naive, out3 = host.playbook("site.yml", env={"ANSIBLE_PIPELINING": "False", "ANSIBLE_STRATEGY": "linear",
                                                 "ANSIBLE_SSH_ARGS": "-o ControlMaster=no"})
    p2 = {"naive_s": naive, "ours_s": second, "naive_over_ours": naive / second, "naive_changed": changed_count(out3)}
    return p1, p2


def timed_under_load(host, playbook: str, extra: dict | None = None):
    """(seconds the playbook took, the Load around it, (start, end) of the playbook in the load's time)."""
    with testhelpers.Load(host.address, DOMAIN, **LOAD) as load:
        time.sleep(3)
        start = time.monotonic() - load.began
        took, _ = host.playbook(playbook, extra)
        end = time.monotonic() - load.began
        time.sleep(3)
    return took, load, (start, end)


def p4_p5(host, first_converge: float) -> tuple[dict, dict]:
    """A code-only deploy and a rollback of the reference app's history, each under steady load, against
    the load at rest; plots every request's latency to latest.png."""
    log("P4/P5: deploys and a rollback of the reference app's history, under steady load")
    repo = Path(tempfile.mkdtemp(prefix="app-history-", dir=WORK))
    tags = testhelpers.make_app_history(repo)
    deploy = {"app_git_repo": str(repo), "app_controller_cache_dir": str(WORK / "controller-cache")}
    host.playbook("playbooks/deploy.yml", {**deploy, "app_git_version": "v2"})
    with testhelpers.Load(host.address, DOMAIN, **LOAD) as rest:
        time.sleep(15)
    code_only, during_deploy, deploy_span = timed_under_load(host, "playbooks/deploy.yml",
                                                             {**deploy, "app_git_version": "v2b"})
    rollback, during_rollback, rollback_span = timed_under_load(host, "playbooks/rollback.yml")
    # Side by side: the same deploy again with a plain restart (no second Gunicorn on the socket).
    plain, during_plain, plain_span = timed_under_load(
        host, "playbooks/deploy.yml", {**deploy, "app_git_version": "v2b", "app_overlap_restart": False})
    plot({"code-only deploy": during_deploy, "rollback": during_rollback,
          "code-only deploy, plain restart (app_overlap_restart: false)": during_plain},
         {"code-only deploy": {"deploy.yml": deploy_span}, "rollback": {"rollback.yml": rollback_span},
          "code-only deploy, plain restart (app_overlap_restart: false)": {"deploy.yml": plain_span}},
         RESULTS / "latest.png")
    p4 = {"code_only_deploy_s": code_only, "first_converge_s": first_converge,
          "code_only_over_first_converge": code_only / first_converge, "rollback_s": rollback,
          "commit": tags["v2b"]}
    p5 = {"rest_p99_ms": rest.p99() * 1000, "rest_requests": rest.ok + rest.failed}
    p4["plain_restart_deploy_s"] = plain
    for key, load in (("deploy", during_deploy), ("rollback", during_rollback), ("plain_deploy", during_plain)):
        p5.update({f"{key}_requests": load.ok + load.failed, f"{key}_failed": load.failed,
                   f"{key}_retried": load.retried, f"{key}_p99_ms": load.p99() * 1000,
                   f"{key}_max_ms": max(load.latencies) * 1000, f"{key}_p99_over_rest": load.p99() / rest.p99()})
    return p4, p5


def write_results(results: dict) -> str:
    """latest.json (the one before it kept as previous.json) and latest.md, the table beside the previous run."""
    latest = RESULTS / "latest.json"
    previous = json.loads(latest.read_text()) if latest.exists() else None
    if previous:
        (RESULTS / "previous.json").write_text(latest.read_text())
    latest.write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results, previous)
    (RESULTS / "latest.md").write_text(table)
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="leave the bench hosts running")
    ap.add_argument("--only", choices=["P7"], help="measure this figure alone (after a first site.yml) and keep "
                                                   "the others from bench/results/latest.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py runs as root (test hosts are systemd-nspawn containers)", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    latest = RESULTS / "latest.json"
    results: dict = {"machine": machine()}
    if args.only:
        results = {**json.loads(latest.read_text()), "machine": machine()} if latest.exists() else results
    host = boot(WORK / "inventory")
    try:
        if args.only:
            host.playbook("site.yml")
        else:
            results["P1"], results["P2"] = p1_p2(host)
            results["P4"], results["P5"] = p4_p5(host, results["P1"]["first_s"])
            results["P3"] = p3(host)
            results["P6"] = p6(host)
            results["security"] = security(host)
        results["P7"] = p7(host)
    finally:
        if not args.keep:
            subprocess.run(["python3", str(REPO / "scripts/testhost"), "down", NAME, BACKUP], capture_output=True)
    if not args.only:
        results["took_s"] = time.monotonic() - began
    print(write_results(results))
    return 0


# Each figure: its tag, what it is, how to read it from a results dict, its unit, and its goal (#16) if any.
FIGURES = [
    ("P1", "site.yml second run ÷ first run", lambda r: r["P1"]["second_over_first"], "", ("<=", 0.25)),
    ("P2", "naive ansible.cfg ÷ ours, no-change run", lambda r: r["P2"]["naive_over_ours"], "", None),
    ("P3", "req/s nginx → Gunicorn ÷ Gunicorn direct", lambda r: r["P3"]["nginx_over_direct"], "", None),
    ("P3", "static file via nginx ÷ via Flask", lambda r: r["P3"]["static_nginx_over_flask"], "", None),
    ("P3", "our Gunicorn settings ÷ `gunicorn wsgi:app`, DB endpoint", lambda r: r["P3"]["ours_over_defaults_db"],
     "", None),
    ("P4", "code-only deploy ÷ first converge", lambda r: r["P4"]["code_only_over_first_converge"], "", ("<=", 0.2)),
    ("P4", "rollback to a release on disk, one host", lambda r: r["P4"]["rollback_s"], " s", ("<=", 10)),
    ("P4", "deploy ÷ the same with a plain restart", lambda r: r["P4"]["code_only_deploy_s"]
     / r["P4"]["plain_restart_deploy_s"], "", None),
    ("P5", "longest request wait during a deploy", lambda r: r["P5"]["deploy_max_ms"], " ms", ("<=", 1000)),
    ("P5", "longest request wait during a rollback", lambda r: r["P5"]["rollback_max_ms"], " ms", ("<=", 1000)),
    ("P5", "longest wait, deploy ÷ the same with a plain restart",
     lambda r: r["P5"]["deploy_max_ms"] / r["P5"]["plain_deploy_max_ms"], "", None),
    ("P5", "p99 during a deploy ÷ at rest", lambda r: r["P5"]["deploy_p99_over_rest"], "", None),
    ("P5", "p99 during a rollback ÷ at rest", lambda r: r["P5"]["rollback_p99_over_rest"], "", None),
    ("P6", "pg_restore -j2 (custom) ÷ psql (plain SQL)", lambda r: r["P6"]["custom_j2_over_plain"], "", None),
    ("P6", "custom dump size ÷ plain SQL dump size", lambda r: r["P6"]["custom_over_plain_size"], "", None),
    ("P7", "data lost with the database host (RPO): nightly dump", lambda r: r["P7"]["rpo_dump_s"], " s", None),
    ("P7", "data lost with the database host (RPO): Barman", lambda r: r["P7"]["rpo_barman_s"], " s", None),
    ("P7", "RPO Barman ÷ nightly dump", lambda r: r["P7"]["rpo_barman_over_dump"], "", None),
    ("P7", "restore time (RTO): the newest dump", lambda r: r["P7"]["rto_dump_s"], " s", None),
    ("P7", "restore time (RTO): Barman, to a moment", lambda r: r["P7"]["rto_barman_s"], " s", None),
    ("P7", "RTO Barman ÷ nightly dump", lambda r: r["P7"]["rto_barman_over_dump"], "", None),
]


def figure(read, results: dict | None) -> float | None:
    try:
        return float(read(results)) if results else None
    except (KeyError, TypeError):
        return None


def shown(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    # seconds under a minute to the tenth: a rollback of 10.5 s against a goal of 10 is not "11 s"
    if unit == " s" and value < 60:
        return f"{value:.1f}{unit}"
    return f"{value:.0f}{unit}" if unit else f"{value:.2f}"


def details(r: dict) -> dict:
    """What each figure was measured from, by tag and figure."""
    p1, p2, p3, p4, p5, p6 = (r[k] for k in ("P1", "P2", "P3", "P4", "P5", "P6"))
    p7 = r.get("P7")
    size = f"the app's database at {p7['database_bytes'] / 2**20:.0f} MB" if p7 else ""
    return {
        "data lost with the database host (RPO): nightly dump": "the time between two dumps (cron, daily)",
        "data lost with the database host (RPO): Barman":
            "a committed write until Barman's pg_receivewal reports it written (an upper bound: it reports every "
            "10 s at most); a restore reads what it received, archived or not",
        "RPO Barman ÷ nightly dump": f"{p7['rpo_barman_over_dump']:.1e}" if p7 else "",
        "restore time (RTO): the newest dump": f"playbooks/restore.yml -e backup_restore_confirm, {size}",
        "restore time (RTO): Barman, to a moment": f"playbooks/restore.yml -e restore_to (recover, replay, dump, "
                                                    f"restore), {size}",
        "RTO Barman ÷ nightly dump": "",
        "site.yml second run ÷ first run":
            f"{p1['second_s']:.0f} s ÷ {p1['first_s']:.0f} s; changed={p1['second_changed']} (first {p1['first_changed']})",
        "naive ansible.cfg ÷ ours, no-change run":
            f"{p2['naive_s']:.0f} s ÷ {p2['ours_s']:.0f} s (no Mitogen, pipelining or ControlPersist)",
        "req/s nginx → Gunicorn ÷ Gunicorn direct":
            f"{p3['nginx_to_gunicorn_rps']:.0f} (HTTPS) ÷ {p3['gunicorn_direct_rps']:.0f} (HTTP), /health",
        "static file via nginx ÷ via Flask": f"{p3['static_nginx_rps']:.0f} ÷ {p3['static_flask_rps']:.0f} req/s",
        "our Gunicorn settings ÷ `gunicorn wsgi:app`, DB endpoint":
            f"{p3['db_ours_rps']:.0f} ÷ {p3['db_defaults_rps']:.0f} req/s, /health/ready",
        "code-only deploy ÷ first converge": f"{p4['code_only_deploy_s']:.0f} s ÷ {p4['first_converge_s']:.0f} s",
        "rollback to a release on disk, one host": "playbooks/rollback.yml, no migration",
        **{f"longest request wait during a {run}": f"{p5[f'{run}_failed']} of {p5[f'{run}_requests']} failed"
           for run in ("deploy", "rollback")},
        "longest wait, deploy ÷ the same with a plain restart":
            f"{p5['deploy_max_ms']:.0f} ms ÷ {p5['plain_deploy_max_ms']:.0f} ms; {p5['plain_deploy_failed']} of "
            f"{p5['plain_deploy_requests']} failed" if "plain_deploy_max_ms" in p5 else "",
        "deploy ÷ the same with a plain restart":
            f"{p4['code_only_deploy_s']:.0f} s ÷ {p4['plain_restart_deploy_s']:.0f} s"
            if "plain_restart_deploy_s" in p4 else "",
        **{f"p99 during a {run} ÷ at rest": f"{p5[f'{run}_p99_ms']:.0f} ms ÷ {p5['rest_p99_ms']:.0f} ms"
           for run in ("deploy", "rollback")},
        "pg_restore -j2 (custom) ÷ psql (plain SQL)":
            f"{p6['restore_custom_j2_s']:.0f} s ÷ {p6['restore_plain_sql_s']:.0f} s, "
            f"{p6['database_bytes'] / 2**20:.0f} MB database",
        "custom dump size ÷ plain SQL dump size":
            f"{p6['custom_dump_bytes'] / 2**20:.0f} MB ÷ {p6['plain_dump_bytes'] / 2**20:.0f} MB",
    }


def markdown(r: dict, previous: dict | None = None) -> str:
    """The table: each figure beside the previous run's (bench/results/previous.json) and its goal."""
    m = r["machine"]
    said = details(r)
    when = previous["machine"]["date"] if previous else "none"
    lines = [f"Measured {m['date']} on {m['cpus']} cores, {m['memory_gib']} GiB, {m['os']}; test host "
             f"{m['test_host']}; the whole run took {r['took_s'] / 60:.0f} min. Previous run: {when}.", "",
             "| | figure | now | previous | goal | measured |", "| --- | --- | --- | --- | --- | --- |"]
    for tag, name, read, unit, goal in FIGURES:
        now, before = figure(read, r), figure(read, previous)
        if goal:
            met = now is not None and now <= goal[1]
            goal_text = f"≤ {shown(goal[1], unit)} ({'met' if met else 'not met'})"
        else:
            goal_text = ""
        lines.append(f"| {tag} | {name} | {shown(now, unit)} | {shown(before, unit)} | {goal_text} | {said[name]} |")
    sec = r["security"]
    lines += ["", f"Security: sslyze (Mozilla intermediate) {sec['sslyze_mozilla_intermediate']}; "
              f"`systemd-analyze security notesapp.service` exposure {sec['systemd_exposure']} "
              f"({sec['systemd_exposure_label']}); Lynis hardening index {sec['lynis_hardening_index']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
