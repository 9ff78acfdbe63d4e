"""Helpers for the testinfra suites of every scenario (roles/*/molecule/*/tests and molecule/*/tests).

Import with:  sys.path.insert(0, str(REPO / "molecule/shared")); import testhelpers
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTHOST = REPO / "scripts" / "testhost"


def _ansible_env() -> dict:
    """Molecule's Ansible settings for this scenario, and every place its roles may live."""
    project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    return {**os.environ, "ANSIBLE_CONFIG": f"{os.environ['MOLECULE_EPHEMERAL_DIRECTORY']}/ansible.cfg",
            "ANSIBLE_ROLES_PATH": f"{project}/..:{project}/roles:{REPO}/roles"}


def converge_with(extra: dict, timeout: int = 600) -> tuple[int, str, dict[str, int]]:
    """Run the scenario's converge.yml on every host with extra variables, as Molecule would.

    Returns the exit code, the whole output and the `changed` count of each host's recap."""
    scenario = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
    res = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "-e", json.dumps(extra),
         f"{scenario}/converge.yml"],
        capture_output=True, text=True, timeout=timeout, env=_ansible_env())
    recaps = {h: int(c) for h, c in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", res.stdout, re.MULTILINE)}
    return res.returncode, res.stdout + res.stderr, recaps


def testhost_name(address: str) -> str:
    """The scripts/testhost name of the test host at this address."""
    listing = subprocess.run(["python3", str(TESTHOST), "list"], capture_output=True, text=True, check=True)
    for line in listing.stdout.splitlines():
        name, _os, addr, _state = line.split("\t")
        if addr == address:
            return name
    raise LookupError(f"no test host at {address}:\n{listing.stdout}")


def reboot(address: str) -> None:
    """Halt the test host cleanly and boot it again on the same disk (see `scripts/testhost reboot`)."""
    subprocess.run(["python3", str(TESTHOST), "reboot", testhost_name(address)], check=True, timeout=180)


def ssh(variables: dict, command: str, timeout: int = 60) -> subprocess.CompletedProcess:
    """Run a command on the host over a fresh SSH connection (no shared master: safe across a reboot)."""
    return subprocess.run(
        ["ssh", "-i", variables["ansible_private_key_file"], "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
         "-o", "ControlPath=none", "-o", "LogLevel=ERROR",
         f"{variables.get('ansible_user', 'root')}@{variables['ansible_host']}", command],
        capture_output=True, text=True, timeout=timeout)


def all_hosts() -> list:
    """testinfra hosts for every host of the scenario's inventory, for tests that converge once for all."""
    import testinfra

    return testinfra.get_hosts(["ansible://all"], ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def assert_refused_before_any_change(extra: dict, message: str, hosts: int = 3) -> None:
    """Converge with one bad variable: the run must fail, say `message`, and change nothing on any host."""
    rc, output, recaps = converge_with(extra)
    assert rc != 0
    assert message in output, output[-3000:]
    assert len(recaps) == hosts and not any(recaps.values()), output[-3000:]


def run_playbook(playbook: str, extra: dict | None = None, inventory: str | None = None,
                 settings: str | None = None, timeout: int = 900) -> tuple[int, str]:
    """Run one of the project's playbooks (path relative to the repository) against the scenario's hosts,
    as a user would: the scenario's settings file stands in for the inventory's group_vars.

    Returns the exit code and the whole output."""
    settings = settings or f"{os.environ['MOLECULE_SCENARIO_DIRECTORY']}/vars/settings.yml"
    command = ["ansible-playbook", "-i", inventory or os.environ["MOLECULE_INVENTORY_FILE"], "-e", f"@{settings}"]
    if extra:
        command += ["-e", json.dumps(extra)]
    res = subprocess.run(command + [str(REPO / playbook)], capture_output=True, text=True, timeout=timeout,
                         env=_ansible_env())
    return res.returncode, res.stdout + res.stderr


class Load:
    """Steady load from a second process's point of view: threads sending GET requests over HTTPS to one
    address (any certificate accepted: the load counts answers, the certificate has its own tests).
    A failure is an exception (refused, reset, timeout) or a 5xx answer."""

    def __init__(self, address: str, host_header: str, path: str = "/", threads: int = 4):
        import threading

        self.address, self.host_header, self.path = address, host_header, path
        self.ok, self.failed, self.latencies, self.errors = 0, 0, [], []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        import http.client
        import ssl
        import time

        context = ssl._create_unverified_context()
        conn = None
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(self.address, 443, timeout=30, context=context)
                conn.request("GET", self.path, headers={"Host": self.host_header})
                response = conn.getresponse()
                response.read()
                good, detail = response.status < 500, f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                good, detail = False, f"{exc.__class__.__name__}: {exc}"
                conn = None
            with self._lock:
                self.latencies.append(time.monotonic() - start)
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(detail)
            time.sleep(0.02)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (f"{self.ok + self.failed} requests, {self.failed} failed, p99 {p99 * 1000:.0f} ms, "
                f"max {lat[-1] * 1000:.0f} ms" + (f"; errors: {sorted(set(self.errors))[:5]}" if self.errors else ""))
