"""The project's rules for names and addresses (plugins/test/rules.py): preflight and the roles'
validate.yml files both use them, so a name preflight accepts is one nginx, certbot, roles/app and
roles/gunicorn accept too."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("rules", REPO / "plugins/test/rules.py")
rules = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(rules)


@pytest.mark.parametrize("name, ok", [
    ("notes.example.com", True), ("a-b.c0.example", True), ("x.test", True), ("xn--bcher-kva.example", True),
    ("Notes.Example.com", False),             # certbot folds case; the certificate's directory would not
    ("*.example.com", False),                 # a wildcard needs DNS-01
    ("localhost", False), ("10.0.0.1", False), ("notes_app.example.com", False), ("-a.example.com", False),
    ("https://notes.example.com/", False), ("a..example.com", False), ("", False), (["a.test"], False),
    ("a" * 64 + ".example.com", False), (".".join(["a" * 60] * 5) + ".com", False),
])
def test_domain_name(name, ok):
    assert rules.domain_name(name) is ok


def test_wildcards_only_where_allowed():
    assert rules.domain_name("*.example.com", wildcard=True) and rules.domain_name("example.com", wildcard=True)
    assert not rules.domain_name("*.example.com") and not rules.domain_name("*.com", wildcard=True)
    assert not rules.domain_name("a.*.example.com", wildcard=True) and not rules.domain_name("**.a.test", wildcard=True)


@pytest.mark.parametrize("name, ok", [
    ("notesapp", True), ("book_shelf-2", True), ("a" * 31, True),
    ("a" * 32, False), ("Notes", False), ("2app", False), ("bad name", False), ("", False),
])
def test_unit_name(name, ok):
    assert rules.unit_name(name) is ok


def test_email_acme_server_and_ipv4():
    assert rules.email_address("ops@example.com") and not rules.email_address("ops@localhost")
    assert rules.acme_server("letsencrypt") and rules.acme_server("https://10.0.0.1:14000/dir")
    assert not rules.acme_server("http://acme.test/dir") and not rules.acme_server("letsencrypt-prod")
    assert rules.ipv4_address("10.0.0.2") and not rules.ipv4_address("10.0.0.256")
    assert not rules.ipv4_address("fd00::1") and not rules.ipv4_address("web2.internal")


def test_ansible_finds_the_rules_through_the_project_config():
    """ansible.cfg's test_plugins: any playbook run from the repository (site.yml, the playbooks, a role's
    validate.yml) can use them."""
    res = subprocess.run(
        [str(REPO / ".venv/bin/ansible"), "localhost", "-c", "local", "-m", "ansible.builtin.debug", "-a",
         "msg={{ ['a.test' is domain_name, 'A.test' is domain_name, 'notesapp' is unit_name] }}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"] == [True, False, True]
