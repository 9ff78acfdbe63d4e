"""The one host monitors itself (the `monitoring` group): Prometheus, Alertmanager and the blackbox exporter
(roles/monitoring) and the exporters (roles/exporters), all on loopback, the firewall unchanged."""

import subprocess

import pytest

import testhelpers

DOMAIN = "allinone.test"
PEBBLE_ROOT = "/usr/local/share/flask-deploy-test/pebble-root.pem"   # monitoring_probe_ca_file


@pytest.fixture(scope="module")
def address(host):
    return host.ansible.get_variables()["ansible_host"]


@pytest.fixture(scope="module")
def monitor(host, address):
    testhelpers.trust_the_test_site(host, DOMAIN, address, PEBBLE_ROOT)
    return host


def test_prometheus_scrapes_every_exporter_and_the_app_on_the_one_host(monitor):
    expected = {"node", "postgres", "redis", "nginx", "app", "prometheus", "site", "ssh"}

    def all_up():
        targets = testhelpers.prometheus(monitor, "/api/v1/targets?state=active")["data"]["activeTargets"]
        up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        return expected <= up and targets

    _, targets = testhelpers.wait_for("every target up", all_up, 120)
    # the exporters and the app's /metrics (through nginx's loopback server) at 127.0.0.1, named by host
    for target in targets:
        if target["labels"]["job"] in ("node", "postgres", "redis", "nginx", "app"):
            assert target["scrapeUrl"].startswith("http://127.0.0.1:"), target["scrapeUrl"]
            assert target["labels"]["host"] == "allinone"

    def probes_succeed():
        results = testhelpers.prometheus_query(monitor, "probe_success")
        return len(results) == 2 and all(r["value"][1] == "1" for r in results)

    testhelpers.wait_for("the HTTPS and SSH probes succeeding", probes_succeed, 120)
    requests = testhelpers.prometheus_query(monitor, "sum(http_requests_total)")
    assert requests and float(requests[0]["value"][1]) > 0
    # the last deploy's outcome, through the textfile collector
    _, deploy = testhelpers.wait_for("the deploy's status", lambda: testhelpers.prometheus_query(
        monitor, 'flask_deploy_job_status_ok{job_name="deploy"} == 1'), 120)
    assert deploy[0]["metric"]["host"] == "allinone"


def test_nothing_of_the_monitoring_listens_beyond_loopback(monitor, address):
    listening = monitor.check_output("ss -Hltn")
    for port in (9090, 9093, 9094, 9100, 9113, 9115, 9121, 9187, 8081):
        bound = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(f":{port}")]
        assert all(local.startswith("127.0.0.1:") for local in bound), (port, bound)
        # and from this machine, outside the host
        assert subprocess.run(["timeout", "3", "bash", "-c", f"</dev/tcp/{address}/{port}"]).returncode != 0, port
    assert "9100" not in monitor.check_output("ufw status")
