"""The monitoring of the seven hosts: backup1 is the `monitoring` host too (Prometheus, Alertmanager, the
blackbox exporter; roles/monitoring), every host runs its exporters (roles/exporters). Prometheus scrapes
every exporter and the app on each web host and probes the site and each host's SSH; no one but the
monitoring host reaches the exporters; Redis stopped fires RedisDown, which Alertmanager posts to the
webhook (a recorder on backup1 stands in for the user's); an off-site copy that fails fires JobFailed.

Runs after test_cluster.py (file order), on the hosts as it left them."""

import json
import shlex
import time
import uuid

import pytest

import testhelpers

DOMAIN = "lb.test"
PORT = 8001        # app_port (inventory/group_vars/all/main.yml)
RECORDER = 9099    # monitoring_alert_webhook_url's port there
PEBBLE_ROOT = "/usr/local/share/flask-deploy-test/pebble-root.pem"   # monitoring_probe_ca_file there


@pytest.fixture(scope="module")
def monitor(hosts, addresses):
    testhelpers.trust_the_test_site(hosts["backup1"], DOMAIN, addresses["lb"], PEBBLE_ROOT)
    return hosts["backup1"]


can_connect = testhelpers.can_connect


def firing(monitor, alertname, **labels):
    """The alerts of that name Prometheus has firing with those labels."""
    alerts = testhelpers.prometheus(monitor, "/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def test_prometheus_scrapes_every_exporter_and_the_app_and_probes_the_site(monitor):
    expected = ({("node", h) for h in ("lb", "web1", "web2", "worker1", "db", "redis", "backup1")}
                | {("postgres", "db"), ("redis", "redis"), ("nginx", "lb"), ("app", "web1"), ("app", "web2")})

    seen = []

    def all_up():
        targets = testhelpers.prometheus(monitor, "/api/v1/targets?state=active")["data"]["activeTargets"]
        up = {(t["labels"]["job"], t["labels"].get("host")) for t in targets if t["health"] == "up"}
        seen[:] = [(t["labels"]["job"], t["labels"].get("host"), t["lastError"]) for t in targets
                   if t["health"] != "up"]
        return expected <= up and targets

    try:
        _, targets = testhelpers.wait_for("every exporter and the app up", all_up, 120)
    except AssertionError as e:
        raise AssertionError(f"{e}; not up: {seen}") from None
    assert {t["labels"]["job"] for t in targets} >= {"node", "postgres", "redis", "nginx", "app", "site", "ssh"}

    def probes_succeed():
        results = testhelpers.prometheus_query(monitor, "probe_success")
        return results if len(results) == 8 and all(r["value"][1] == "1" for r in results) else None

    testhelpers.wait_for("the site's HTTPS probe and the 7 SSH probes succeeding", probes_succeed, 120)
    expiry = testhelpers.prometheus_query(monitor, "probe_ssl_earliest_cert_expiry")
    assert expiry and float(expiry[0]["value"][1]) > time.time(), expiry
    # the app's request counter, through the nginx-less web hosts' own port
    requests = testhelpers.prometheus_query(monitor, "sum(http_requests_total)")
    assert requests and float(requests[0]["value"][1]) > 0, requests
    # the jobs' status from the textfile collector: the nightly dump ran in test_cluster.py
    jobs = testhelpers.prometheus_query(monitor, "flask_deploy_job_last_success_timestamp_seconds")
    assert {r["metric"]["job_name"] for r in jobs} >= {"pg-backup", "offsite-backup", "barman-base-backup"}, jobs


def test_the_ssh_probes_leave_the_firewall_room_for_other_connections(monitor, addresses):
    """Each SSH probe is a connection that the hosts' firewall counts (roles/common: a 6th from one address
    within 30 s is refused). Scrapes here run every 5 s, the SSH probes every 30 s (monitoring_probe_ssh_
    interval), so the monitoring host, which is the Barman host too, can still open three connections to
    the database host in a row. At the scrape interval they could not: CI's run at cdb00b3 saw the probes
    fail and Barman's recovery connection refused."""
    targets = testhelpers.prometheus(monitor, "/api/v1/targets?state=active")["data"]["activeTargets"]
    every = {t["labels"]["job"]: t["scrapeInterval"] for t in targets}
    assert every["ssh"] == "30s" and every["node"] == "5s", every
    opened = [can_connect(monitor, addresses["db"], 22) for _ in range(3)]
    assert all(opened), opened


def test_the_exporters_answer_the_monitoring_host_alone(hosts, addresses, monitor):
    outsider = hosts["web2"]   # any host of the stack that is not the monitoring host
    exporters = [(addresses[host], port) for host, port in (
        ("db", 9100), ("db", 9187), ("redis", 9121), ("lb", 9113), ("lb", 8081), ("web1", 9100))]
    # the app's port takes the monitoring host (for /metrics) besides the load balancer
    from_monitor = testhelpers.connects(monitor, exporters + [(addresses["web1"], PORT)])
    assert all(from_monitor.values()), from_monitor
    # Prometheus, Alertmanager and the blackbox exporter listen on loopback: an SSH tunnel reaches them
    from_outsider = testhelpers.connects(outsider, exporters + [(addresses["backup1"], port)
                                                                for port in (9090, 9093, 9115, 9100)])
    assert not any(from_outsider.values()), from_outsider
    assert not can_connect(hosts["worker1"], addresses["web1"], PORT)


def test_redis_stopped_fires_its_alert_and_alertmanager_posts_it_to_the_webhook(hosts, monitor):
    """The bound: monitoring_alert_down_for (30 s here) + a scrape and an evaluation (15 s each) + Alertmanager's
    group_wait (10 s): about 70 s; asserted within 150 s and printed."""
    recorded = "/run/alert-recorder.jsonl"
    monitor.check_output(f"rm -f {recorded}; systemd-run --unit alert-recorder --collect python3 -c "
                         + shlex.quote(RECORDER_SCRIPT) + f" {RECORDER} {recorded}")
    try:
        testhelpers.wait_for("the recorder listening", lambda: can_connect(monitor, "127.0.0.1", RECORDER), 30)
        hosts["redis"].check_output("systemctl stop redis-server")
        stopped = time.monotonic()
        try:
            took, _ = testhelpers.wait_for("RedisDown firing", lambda: firing(monitor, "RedisDown", host="redis"), 150)

            def posted():
                lines = monitor.run(f"cat {recorded}").stdout.splitlines()
                return [json.loads(line) for line in lines
                        if any(a["labels"]["alertname"] == "RedisDown" and a["status"] == "firing"
                               for a in json.loads(line)["alerts"])]

            testhelpers.wait_for("RedisDown posted to the webhook", posted, 60)
            sent = time.monotonic() - stopped
        finally:
            hosts["redis"].check_output("systemctl start redis-server")
        print(f"\nRedis stopped: RedisDown firing in Prometheus after {took:.0f} s, posted by Alertmanager to the "
              f"webhook after {sent:.0f} s (down_for 30 s)")
        assert sent < 150
        testhelpers.wait_for("RedisDown resolved", lambda: not firing(monitor, "RedisDown"), 120)
    finally:
        monitor.run("systemctl stop alert-recorder")


def test_a_failed_off_site_copy_fires_its_alert(hosts, monitor):
    """The db host's copy fails (its repository password file gone for the run): the job's status says
    failure, the textfile collector publishes it within a minute, and JobFailed fires; a good run clears it."""
    db = hosts["db"]
    # from a good copy first (an earlier test left failed ones), so that the alert below is this failure's;
    # its status published at once, not at the timer's next minute (the failure below waits for the timer)
    db.check_output("systemctl start offsite-backup.service && systemctl start flask-deploy-status-metrics.service")
    testhelpers.wait_for("no JobFailed for db's offsite-backup",
                         lambda: not firing(monitor, "JobFailed", host="db"), 180)
    db.check_output("mv /etc/offsite/password /etc/offsite/password.away")
    try:
        assert db.run("systemctl start offsite-backup.service").rc != 0
    finally:
        db.check_output("mv /etc/offsite/password.away /etc/offsite/password")
    took, _ = testhelpers.wait_for("JobFailed firing for db's offsite-backup",
                                   lambda: firing(monitor, "JobFailed", host="db", job_name="offsite-backup"), 180)
    print(f"\nOff-site copy failed on db: JobFailed firing after {took:.0f} s")
    db.check_output("systemctl start offsite-backup.service && systemctl start flask-deploy-status-metrics.service")
    testhelpers.wait_for("JobFailed resolved", lambda: not firing(monitor, "JobFailed", host="db"), 180)


def test_preflight_refuses_bad_monitoring_settings_before_any_change(hosts):
    """A `monitoring` group without the Redis exporter's password, an alert webhook that is no URL, a
    duration Prometheus cannot read and SSH probes the firewall would refuse: one message names all four,
    and no host is touched."""
    rc, out = testhelpers.run_playbook("molecule/cluster/converge.yml", {
        "vault_redis_monitor_password": "", "monitoring_alert_webhook_url": "ftp://alerts.example.com/",
        "monitoring_alert_down_for": "soon", "monitoring_probe_ssh_interval": "5s"})
    flat = " ".join(out.split()).replace("''", "'")   # the output quotes a ' in a message as ''
    assert rc != 0, out[-3000:]
    for said in ("vault_redis_monitor_password is not set",
                 "monitoring_alert_webhook_url='ftp://alerts.example.com/' is not an http:// or https:// URL",
                 "monitoring_alert_down_for='soon': a Prometheus duration",
                 "monitoring_probe_ssh_interval='5s': at least 10s"):
        assert said in flat, (said, out[-3000:])
    assert "PLAY [Apply the base to every host]" not in out


def test_check_diff_never_shows_alertmanagers_secrets(hosts):
    """--check --diff with a webhook token and an SMTP password that differ from the ones configured: the run
    reports Alertmanager's configuration changed, and shows neither secret."""
    token, password = f"hook-token-{uuid.uuid4().hex}", f"smtp-pass-{uuid.uuid4().hex}"
    rc, out = testhelpers.run_playbook("playbooks/provision.yml", {
        "monitoring_alert_webhook_url": f"http://127.0.0.1:{RECORDER}/alerts?token={token}",
        "monitoring_alert_email_to": "ops@example.com", "monitoring_alert_email_from": "alerts@example.com",
        "monitoring_alert_smtp_smarthost": "mail.example.com:587", "monitoring_alert_smtp_username": "alerts",
        "monitoring_alert_smtp_password": password}, options=("--check", "--diff", "--tags", "monitoring",
                                                              "--limit", "backup1"))
    assert rc == 0, out[-3000:]
    task = [chunk for chunk in out.split("TASK [") if chunk.startswith("monitoring : Write Alertmanager's conf")]
    assert len(task) == 1 and "changed: [backup1]" in task[0], out[-3000:]
    assert token not in out and password not in out


RECORDER_SCRIPT = """
import http.server, sys
port, path = int(sys.argv[1]), sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        with open(path, 'ab') as f:
            f.write(body.replace(b'\\n', b' ') + b'\\n')
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(('127.0.0.1', port), Handler).serve_forever()
"""
