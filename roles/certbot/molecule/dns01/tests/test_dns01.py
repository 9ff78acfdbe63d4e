"""DNS-01 through certbot's rfc2136 plugin: a wildcard certificate from a real ACME server (a Pebble that
validates through the BIND on `ns`), served by nginx for any name under the zone, renewed the same way."""

import os
import time

import pytest
import testinfra

import testhelpers

ZONE = "dns01.test"
CREDENTIALS = "/etc/letsencrypt/dns-rfc2136.ini"


def scenario_host(name):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


@pytest.fixture(scope="module")
def web():
    return scenario_host("web")


@pytest.fixture(scope="module")
def ns():
    return scenario_host("ns")


def served(web, name):
    """Issuer, serial and names of the certificate nginx serves for NAME (in the TLS handshake) right now."""
    out = web.check_output(f"echo | openssl s_client -connect 127.0.0.1:443 -servername {name} 2>/dev/null "
                           "| openssl x509 -noout -issuer -serial -ext subjectAltName")
    issuer = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("issuer="))
    serial = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("serial="))
    names = sorted(n.strip().removeprefix("DNS:") for n in out.split("Subject Alternative Name:")[1].split(","))
    return issuer, serial, names


def test_a_wildcard_certificate_issued_through_bind_and_served_for_any_name(web):
    for name in (ZONE, f"anything.{ZONE}", f"www.{ZONE}"):
        issuer, _, names = served(web, name)
        assert "Pebble" in issuer and names == [f"*.{ZONE}", ZONE], (name, issuer, names)
    res = web.run(f"curl -sS -k -o /dev/null -w '%{{http_code}}' --resolve shop.{ZONE}:443:127.0.0.1 "
                  f"https://shop.{ZONE}/")
    assert res.stdout == "200", res.stdout + res.stderr


def test_the_credentials_are_root_only_and_renewals_use_the_plugin(web):
    credentials = web.file(CREDENTIALS)
    assert credentials.user == "root" and credentials.mode == 0o600
    assert "dns_rfc2136_secret = " in web.check_output(f"cat {CREDENTIALS}")
    renewal = web.file(f"/etc/letsencrypt/renewal/{ZONE}.conf").content_string
    assert "authenticator = dns-rfc2136" in renewal and f"dns_rfc2136_credentials = {CREDENTIALS}" in renewal
    assert "dns_rfc2136_propagation_seconds = 1" in renewal


def test_the_challenge_record_is_gone_after_issuance(ns):
    """certbot deletes its TXT record again; BIND's journal shows the update went through the key."""
    res = ns.run(f"dig +short TXT _acme-challenge.{ZONE} @127.0.0.1")
    assert res.rc == 0 and res.stdout.strip() == "", res.stdout + res.stderr
    assert ns.run(f"test -s /var/lib/bind/db.{ZONE}.jnl").rc == 0


def test_the_key_may_write_nothing_but_the_challenge_record(web, ns):
    """update-policy grants the TSIG key the _acme-challenge TXT record only: a stolen key cannot point the
    site's name elsewhere."""
    key = "hmac-sha512:certbot.:" + web.check_output(f"sed -n 's/^dns_rfc2136_secret = //p' {CREDENTIALS}")
    address = ns.ansible.get_variables()["ansible_host"]
    script = f"server {address}\\nzone {ZONE}\\nupdate add {ZONE}. 60 A 192.0.2.66\\nsend\\n"
    res = web.run(f"printf '{script}' | nsupdate -y '{key}'")
    assert res.rc != 0 and "REFUSED" in res.stdout + res.stderr, res.stdout + res.stderr


def test_forced_renewal_through_the_plugin_changes_the_served_serial(web):
    _, before, _ = served(web, ZONE)
    res = web.run("env $(systemctl show -p Environment --value certbot.service) certbot renew --force-renewal "
                  "--no-random-sleep-on-renew --non-interactive")
    assert res.rc == 0, res.stdout + res.stderr
    for _ in range(20):
        _, after, names = served(web, f"x.{ZONE}")
        if after != before:
            break
        time.sleep(0.5)
    assert after != before and names == [f"*.{ZONE}", ZONE]


@pytest.mark.parametrize("extra, message", [
    ({"certbot_challenge": "http-01"},
     f"no wildcard: *.example.com needs certbot_challenge: dns-01); not valid: *.{ZONE}."),
    ({"certbot_dns_credentials": {"dns_rfc2136_server": "10.0.0.5", "dns_rfc2136_secret": ""}},
     "certbot_challenge dns-01 with certbot_dns_plugin rfc2136 needs certbot_dns_credentials with "
     "dns_rfc2136_name, dns_rfc2136_secret"),
    ({"certbot_domains": [f"*.{ZONE}", ZONE]}, f"certbot_domains[0]=*.{ZONE} names the certificate"),
])
def test_bad_input_stops_before_any_change(extra, message):
    testhelpers.assert_refused_before_any_change(extra, message)
