"""What roles/certbot must leave on every host: a certificate from a real ACME server (Pebble) that
nginx serves, Mozilla-intermediate TLS as sslyze sees it, and renewals nginx picks up by itself."""

import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[5]
import testhelpers


@pytest.fixture(scope="module")
def hostvars(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def domain(hostvars):
    return f"{hostvars['inventory_hostname']}.test"


@pytest.fixture(scope="module")
def pebble_root(tmp_path_factory):
    """Pebble's root CA (it makes a new one each start), from its management API."""
    path = tmp_path_factory.mktemp("pebble") / "root.pem"
    path.write_text(testhelpers.pebble_root())
    return path


def served_certificate(host, domain):
    """Issuer and serial of the certificate nginx serves for the domain right now."""
    out = host.run(f"echo | openssl s_client -connect 127.0.0.1:443 -servername {domain} 2>/dev/null "
                   "| openssl x509 -noout -issuer -serial").stdout
    fields = dict(line.split("=", 1) for line in out.splitlines())
    return fields["issuer"], fields["serial"]


def test_certificate_issued_by_pebble_and_served_by_nginx(host, domain):
    issuer, _ = served_certificate(host, domain)
    assert "Pebble Intermediate CA" in issuer
    assert host.file(f"/etc/letsencrypt/live/{domain}/fullchain.pem").exists


def test_renewal_configuration_uses_webroot_and_the_chosen_server(host, domain):
    conf = host.file(f"/etc/letsencrypt/renewal/{domain}.conf").content_string
    assert "authenticator = webroot" in conf
    assert f"server = {testhelpers.TESTNET['testnet_acme_server']}" in conf


def test_packaged_timer_is_the_only_scheduler(host):
    assert host.run("systemctl is-enabled certbot.timer").stdout.strip() == "enabled"
    assert host.run("systemctl is-active certbot.timer").stdout.strip() == "active"
    cron = host.file("/etc/cron.d/certbot")
    # the package's cron entry stands down when systemd runs (its test of /run/systemd/system)
    assert not cron.exists or "/run/systemd/system" in cron.content_string
    crontabs = host.run("cat /var/spool/cron/crontabs/* 2>/dev/null").stdout
    assert "certbot" not in crontabs


def test_timer_environment_trusts_the_acme_servers_ca(host):
    env = host.run("systemctl show -p Environment --value certbot.service").stdout
    assert f"REQUESTS_CA_BUNDLE={testhelpers.TESTNET['testnet_acme_ca_bundle']}" in env


def test_deploy_hook_checks_and_reloads_nginx(host):
    hook = host.file("/etc/letsencrypt/renewal-hooks/deploy/50-reload-nginx")
    assert hook.mode == 0o755 and "nginx -t" in hook.content_string and "systemctl reload nginx" in hook.content_string


def test_sslyze_reports_mozilla_intermediate_compliance(hostvars, domain, pebble_root, tmp_path):
    out = tmp_path / "sslyze.json"
    res = subprocess.run([str(REPO / ".venv/bin/sslyze"), "--mozilla_config=intermediate", "--certinfo",
                          f"--certinfo_ca_file={pebble_root}", f"--json_out={out}",
                          f"{domain}:443{{{hostvars['ansible_host']}}}"],
                         capture_output=True, text=True, timeout=300)
    print(f"sslyze on {domain}: " + (res.stdout.strip().splitlines() or [""])[-1])
    assert res.returncode == 0 and f"{domain}:443: OK - Compliant." in res.stdout, \
        res.stdout[-3000:] + res.stderr[-2000:]


def test_http_answers_301_except_the_challenge(hostvars, domain):
    for path in ("/", "/api/notes", "/static/x.css", "/.well-known/other"):
        res = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                              "--resolve", f"{domain}:80:{hostvars['ansible_host']}", f"http://{domain}{path}"],
                             capture_output=True, text=True, timeout=30)
        assert res.stdout == f"301 https://{domain}{path}", (path, res.stdout)
    res = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
                          f"{domain}:80:{hostvars['ansible_host']}", f"http://{domain}/.well-known/acme-challenge/none"],
                         capture_output=True, text=True, timeout=30)
    assert res.stdout == "404"


def test_forced_renewal_changes_the_served_serial_without_a_manual_reload(host, domain):
    _, before = served_certificate(host, domain)
    # the timer's own environment: what `systemctl show` reports for certbot.service
    res = host.run("env $(systemctl show -p Environment --value certbot.service) certbot renew --force-renewal --no-random-sleep-on-renew "
                   "--non-interactive")
    assert res.rc == 0, res.stdout + res.stderr
    # the hook's reload is asynchronous: old nginx workers may answer a moment longer
    for _ in range(20):
        _, after = served_certificate(host, domain)
        if after != before:
            break
        time.sleep(0.5)
    assert after != before


@pytest.mark.parametrize("extra, message", [
    ({"certbot_domains": []}, "certbot_domains must list the fully qualified names"),
    ({"certbot_acme_server": "ftp://acme.test/dir"}, "is neither letsencrypt, letsencrypt-staging nor an"),
    ({"certbot_email": "not-an-address"}, "certbot_email=not-an-address must be an address"),
])
def test_bad_input_stops_before_any_change(extra, message):
    testhelpers.assert_refused_before_any_change(extra, message)
