"""What roles/common must leave on every host, checked from the host and from outside it."""

import socket
import subprocess
import time

import pytest

import testhelpers

GATEWAY = testhelpers.TESTNET["testnet_gateway"]   # the controller on the test bridge


@pytest.fixture(scope="module")
def address(host):
    return host.ansible.get_variables()["ansible_host"]


@pytest.fixture(scope="module")
def ssh_args(host):
    v = host.ansible.get_variables()
    return ["ssh", "-i", v["ansible_private_key_file"], "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def reachable(address, port, proto="tcp", timeout=2.0):
    """Connect from the controller, outside the host's firewall."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            return True
        except (TimeoutError, ConnectionRefusedError, OSError):
            return False


@pytest.fixture
def listener(host):
    """Run a TCP listener on the host for the duration of a test."""
    started = []

    def start(port):
        unit = f"test-listener-{port}"
        host.run(f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null")
        cmd = host.run(f"systemd-run --unit {unit} python3 -m http.server --bind 0.0.0.0 {port}")
        assert cmd.rc == 0, cmd.stderr
        started.append(unit)
        for _ in range(50):
            if host.socket(f"tcp://0.0.0.0:{port}").is_listening:
                return
            time.sleep(0.1)
        pytest.fail(f"listener on {port} did not start")

    yield start
    for unit in started:
        host.run(f"systemctl stop {unit}")


@pytest.mark.parametrize("pkg", ["acl", "curl", "logrotate", "rsync", "chrony", "ufw", "fail2ban",
                                 "unattended-upgrades"])
def test_packages_installed(host, pkg):
    assert host.package(pkg).is_installed


@pytest.mark.parametrize("svc", ["fail2ban", "ufw"])
def test_services_enabled_and_active(host, svc):
    assert host.service(svc).is_enabled
    assert host.run(f"systemctl is-active {svc}").stdout.strip() == "active"


def test_sshd_enabled_and_running(host):
    # Ubuntu 24.04 starts sshd from ssh.socket; the others enable ssh.service.
    assert host.service("ssh").is_enabled or host.service("ssh.socket").is_enabled
    assert host.service("ssh").is_running


def test_timezone(host):
    assert host.file("/etc/localtime").linked_to.endswith("Europe/Berlin")


def test_chrony_uses_only_configured_servers(host):
    assert host.service("chrony").is_enabled
    sources = host.file("/etc/chrony/sources.d/common.sources")
    assert f"server {GATEWAY} iburst" in sources.content_string
    assert "Ansible managed" in sources.content_string
    active = [line for line in host.file("/etc/chrony/chrony.conf").content_string.splitlines()
              if line.startswith(("pool ", "server "))]
    assert active == []


def test_chrony_running_where_it_can(host):
    state = host.run("systemctl show chrony -p ActiveState -p ConditionResult").stdout
    if host.system_info.distribution == "ubuntu":
        assert "ActiveState=active" in state
    else:
        # Debian's unit needs CAP_SYS_TIME; test hosts are containers without it, so systemd skips it.
        assert "ActiveState=active" in state or "ConditionResult=no" in state


def test_unattended_upgrades_on(host):
    dump = host.run("apt-config dump APT::Periodic").stdout
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert 'APT::Periodic::Update-Package-Lists "1";' in dump
    reboot = host.run("apt-config dump Unattended-Upgrade::Automatic-Reboot").stdout
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in reboot


def test_sshd_effective_config(host):
    effective = dict(line.split(" ", 1) for line in host.check_output("sshd -T").splitlines() if " " in line)
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["permitrootlogin"] == "without-password"
    assert effective["permitemptypasswords"] == "no"
    assert effective["maxauthtries"] == "3"
    assert effective["x11forwarding"] == "no"
    assert effective["authenticationmethods"] == "publickey"


def test_ssh_refuses_passwords(address, ssh_args):
    res = subprocess.run(ssh_args + ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
                                     f"root@{address}", "true"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 255
    assert "Permission denied (publickey)" in res.stderr


def test_ssh_key_login_works(address, ssh_args):
    res = subprocess.run(ssh_args + [f"root@{address}", "id -u"], capture_output=True, text=True, timeout=30)
    assert res.stdout.strip() == "0", res.stderr


def test_firewall_policy(host):
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "deny (incoming), allow (outgoing), deny (routed)" in status
    assert "22/tcp" in status and "LIMIT IN" in status
    assert "8125/udp" in status and testhelpers.TESTNET["testnet_subnet"] in status


def test_open_port_reachable_from_outside(address, listener):
    listener(443)
    assert reachable(address, 443)


def test_closed_port_unreachable_from_outside(host, address, listener):
    listener(8080)
    assert host.run("curl -fsS -o /dev/null http://127.0.0.1:8080/").rc == 0  # it does listen...
    assert not reachable(address, 8080)                                      # ...but ufw drops it


def test_fail2ban_guards_sshd(host):
    status = host.check_output("fail2ban-client status sshd")
    assert "Journal matches:" in status or "File list:" in status
    assert GATEWAY in host.check_output("fail2ban-client get sshd ignoreip")


def test_swap_file_prepared(host):
    swap = host.file("/swapfile")
    assert swap.exists and swap.mode == 0o600 and swap.size == 64 * 1024 * 1024
    # mkswap's signature sits at the end of the first 4 KiB page
    assert host.check_output("dd if=/swapfile bs=1 skip=4086 count=10 status=none") == "SWAPSPACE2"
    assert any(line.split()[:3] == ["/swapfile", "none", "swap"]
               for line in host.file("/etc/fstab").content_string.splitlines())


def test_the_journal_is_kept_on_disk_with_a_cap(host):
    conf = host.file("/etc/systemd/journald.conf.d/50-common.conf").content_string
    assert "Storage=persistent" in conf and "SystemMaxUse=200M" in conf and "MaxRetentionSec=2weeks" in conf
    # journald runs with it: its files are under /var/log/journal, not the volatile /run/log/journal
    assert "/var/log/journal/" in host.check_output("journalctl --header | grep 'File path'")


@pytest.mark.parametrize("path", ["/etc/ssh/sshd_config.d/50-hardening.conf", "/etc/fail2ban/jail.d/sshd.local",
                                  "/etc/apt/apt.conf.d/20auto-upgrades", "/etc/systemd/journald.conf.d/50-common.conf"])
def test_templates_carry_ansible_managed_header(host, path):
    assert "Ansible managed" in "".join(host.file(path).content_string.splitlines()[:3])


@pytest.mark.parametrize("extra, message", [
    ({"common_timezone": "Mars/Olympus"}, "common_timezone=Mars/Olympus is not a timezone"),
    ({"common_firewall_rules": [{"port": "http"}]}, "port http is neither a port number nor a range"),
    ({"common_firewall_rules": [{"proto": "tcp"}]}, "missing required arguments: port"),
    ({"common_ssh_permit_root_login": "yes"}, "common_ssh_permit_root_login must be one of"),
    ({"common_journal_max_use": "half the disk"}, "common_journal_max_use=half the disk must be a number"),
])
def test_bad_input_stops_before_any_change(extra, message):
    """Run the scenario's converge on every host with one bad variable: it must fail naming it, and
    change nothing anywhere. (No `host` fixture: one run covers all platforms.)"""
    testhelpers.assert_refused_before_any_change(extra, message)
