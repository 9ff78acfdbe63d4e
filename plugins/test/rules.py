"""The project's rules for names and addresses, as Jinja tests: one rule per check, used by preflight
(playbooks/preflight/) and by each role's tasks/validate.yml alike, so that what preflight accepts the
roles accept too. ansible.cfg (test_plugins) and .config/molecule/config.yml (ANSIBLE_TEST_PLUGINS) put
this directory on Ansible's path.

    app_domains | reject('domain_name')        a DNS name a certificate can name
    name is domain_name(wildcard=true)         the same, or *. before one (a certificate by DNS-01)
    app_name is unit_name                      an app name that can name a user, units, files and a site
    app_acme_email is email_address            an e-mail address (one @, a dot in the domain)
    app_acme_server is acme_server             letsencrypt, letsencrypt-staging or an https:// URL
    private_address is ipv4_address            a dotted-quad IPv4 address
"""

from __future__ import annotations

import ipaddress
import re

# Letters, digits and inner hyphens in each label (63 at most), at least two labels, the last one not
# numeric (so no IP address), 253 characters at most. Lower case only: certbot and Let's Encrypt fold
# names to lower case, and the certificate's directory (/etc/letsencrypt/live/NAME) is named after the
# first one as given. A wildcard (*. before such a name) only where the caller allows it: a wildcard
# certificate needs the DNS-01 challenge (certbot_challenge: dns-01); nginx serves one either way.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)+[a-z]([a-z0-9-]{{0,61}}[a-z0-9])?$")
# A lower-case letter first, then letters, digits, - and _: 31 characters at most, as a system user name
# must be short enough for useradd and a unit name readable.
_UNIT = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def domain_name(value, wildcard: bool = False) -> bool:
    if wildcard and isinstance(value, str) and value.startswith("*."):
        value = value[2:]
    return isinstance(value, str) and bool(_DOMAIN.match(value))


def unit_name(value) -> bool:
    return isinstance(value, str) and bool(_UNIT.match(value))


def email_address(value) -> bool:
    return isinstance(value, str) and bool(_EMAIL.match(value))


def acme_server(value) -> bool:
    return isinstance(value, str) and (value in ("letsencrypt", "letsencrypt-staging") or value.startswith("https://"))


def ipv4_address(value) -> bool:
    try:
        return isinstance(value, str) and isinstance(ipaddress.ip_address(value), ipaddress.IPv4Address)
    except ValueError:
        return False


class TestModule:
    def tests(self):
        return {"domain_name": domain_name, "unit_name": unit_name, "email_address": email_address,
                "acme_server": acme_server, "ipv4_address": ipv4_address}
