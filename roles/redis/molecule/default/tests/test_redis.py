"""What roles/redis must leave on every host: checked on the host, from the controller, and across a
reboot of the test host."""

import shlex
import socket
import uuid

import pytest

import testhelpers

# The administrator's password holds every character that needs quoting somewhere: the handlers pass it
# to redis-cli on stdin in a quoted AUTH line (roles/redis/vars/main.yml).
ADMIN = 'admin-Test-"pass\\word\'/+=@:#?%-0123'
APP = "app-Test-password-0123456789"


@pytest.fixture(scope="module")
def hostvars(host):
    return host.ansible.get_variables()


def cli(host, *args, user=None, password=None):
    """redis-cli on the test host; credentials through the environment, as the role does."""
    auth = f"REDISCLI_AUTH={shlex.quote(password)} " if password else ""
    who = f"--user {user} " if user else ""
    return host.run(f"{auth}redis-cli -h 127.0.0.1 {who}" + " ".join(args))


def admin(host, *args):
    return cli(host, *args, password=ADMIN)


def pid(host):
    return admin(host, "INFO", "server").stdout.split("process_id:")[1].split()[0]


def test_service_enabled_and_active(host):
    assert host.service("redis-server").is_enabled
    assert host.service("redis-server").is_running


def test_unauthenticated_commands_refused(host):
    res = cli(host, "SET", "k", "v")
    assert "NOAUTH" in res.stdout + res.stderr


def test_unauthenticated_commands_refused_from_controller(hostvars):
    with socket.create_connection((hostvars["ansible_host"], 6379), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(200).startswith(b"-NOAUTH")


def test_app_credentials_work(host):
    assert cli(host, "SET", "k", "v", user="app", password=APP).stdout.strip() == "OK"
    assert cli(host, "GET", "k", user="app", password=APP).stdout.strip() == "v"


def test_wrong_password_refused(host):
    res = cli(host, "GET", "k", user="app", password="nope")
    assert "WRONGPASS" in res.stdout + res.stderr or "NOAUTH" in res.stdout + res.stderr


def test_maxmemory_derived_from_ram(host):
    memtotal_mb = int(host.file("/proc/meminfo").content_string.split()[1]) // 1024
    assert admin(host, "CONFIG", "GET", "maxmemory").stdout.split() == [
        "maxmemory", str(int(memtotal_mb * 10 / 100) * 1024 * 1024)]
    assert admin(host, "CONFIG", "GET", "maxmemory-policy").stdout.split() == ["maxmemory-policy", "allkeys-lru"]


def test_settings_in_effect(host):
    got = {k: admin(host, "CONFIG", "GET", k).stdout.split("\n", 1)[1].strip()
           for k in ("appendonly", "protected-mode", "tcp-keepalive", "save")}
    assert got == {"appendonly": "yes", "protected-mode": "yes", "tcp-keepalive": "120",
                   "save": "3600 1 300 100 60 10000"}


@pytest.mark.parametrize("command", ["FLUSHALL", "FLUSHDB", "DEBUG SLEEP 0"])
def test_disabled_commands_fail_even_for_the_administrator(host, command):
    res = admin(host, command)
    assert "unknown command" in res.stdout + res.stderr


def test_app_user_cannot_run_dangerous_commands(host):
    res = cli(host, "CONFIG", "GET", "maxmemory", user="app", password=APP)
    assert "NOPERM" in res.stdout + res.stderr


def test_listens_only_where_configured(host, hostvars):
    tcp = {s for s in host.socket.get_listening_sockets() if s.startswith("tcp") and s.endswith(":6379")}
    assert tcp == {"tcp://127.0.0.1:6379", f"tcp://{hostvars['ansible_host']}:6379", "tcp://192.0.2.10:6379"}
    sock = host.file("/run/redis/redis-server.sock")
    assert sock.is_socket and sock.group == "redis" and sock.mode == 0o770


@pytest.mark.parametrize("path", ["/etc/redis/redis.d/10-restart.conf", "/etc/redis/redis.d/20-runtime.conf"])
def test_include_files_carry_ansible_managed_header(host, path):
    assert "Ansible managed" in "".join(host.file(path).content_string.splitlines()[:3])


def test_acl_file_holds_no_plain_password(host):
    acl = host.file("/etc/redis/users.acl")
    assert acl.mode == 0o640 and ADMIN not in acl.content_string and APP not in acl.content_string


def test_runtime_changes_apply_without_restart_and_others_restart():
    """maxmemory and a new user apply live (same pid); a disabled command needs a restart (new pid).
    (No `host` fixture: one converge covers all platforms.)"""
    hosts = testhelpers.all_hosts()
    before = [pid(h) for h in hosts]
    extra_user = {"name": "worker", "password": "worker-Test-password-0123456789"}
    rc, output, _ = testhelpers.converge_with({
        "redis_maxmemory_mb": 100,
        "redis_users": [{"name": "app", "password": APP}, extra_user]})
    assert rc == 0, output[-3000:]
    assert [pid(h) for h in hosts] == before
    assert all(admin(h, "CONFIG", "GET", "maxmemory").stdout.split()[1] == str(100 * 1024 * 1024) for h in hosts)
    assert all(cli(h, "PING", user="worker", password=extra_user["password"]).stdout.strip() == "PONG" for h in hosts)

    rc, output, _ = testhelpers.converge_with({"redis_disabled_commands": ["FLUSHALL", "FLUSHDB", "DEBUG", "KEYS"]})
    assert rc == 0, output[-3000:]
    after = [pid(h) for h in hosts]
    assert all(a != b for a, b in zip(after, before)), (before, after)
    assert all("unknown command" in admin(h, "KEYS", "*").stdout for h in hosts)

    rc, output, recaps = testhelpers.converge_with({})
    assert rc == 0 and len(recaps) == len(testhelpers.all_hosts()), output[-3000:]
    assert all("NOAUTH" in cli(h, "PING", user="worker", password=extra_user["password"]).stdout
               or "WRONGPASS" in cli(h, "PING", user="worker", password=extra_user["password"]).stdout
               for h in hosts)


@pytest.mark.parametrize("extra, message", [
    ({"redis_password": ""}, "redis_password is empty"),
    ({"redis_users": [{"name": "app"}]}, "redis_users[0] (name: app): no password"),
    ({"redis_users": [{"name": "default", "password": "x" * 20}]}, "the name default belongs to the administrator"),
    ({"redis_maxmemory_policy": "lru"}, "redis_maxmemory_policy must be one of"),
    ({"redis_save": ["every hour"]}, 'redis_save entries must read "SECONDS CHANGES"'),
])
def test_bad_input_stops_before_any_change(extra, message):
    testhelpers.assert_refused_before_any_change(extra, message)


def test_it_listens_on_an_address_that_is_not_up_yet(host):
    """192.0.2.10 is in redis_bind but on no interface: with ip_nonlocal_bind Redis binds it anyway
    (without, it refuses to start)."""
    assert host.run("ip -o address show | grep -q ' 192.0.2.10/'").rc != 0
    assert "192.0.2.10:6379" in host.check_output("ss -ltnH 'sport = :6379'")


def test_zz_data_survives_a_reboot(host, hostvars):
    """Last in the file: the host reboots, so later tests would find stale SSH connections."""
    marker = uuid.uuid4().hex
    assert cli(host, "SET", "reboot-marker", marker, user="app", password=APP).stdout.strip() == "OK"
    testhelpers.reboot(hostvars["ansible_host"])
    res = testhelpers.ssh(hostvars, "for i in $(seq 50); do systemctl is-active -q redis-server && break; sleep 0.2; "
                                    f"done; REDISCLI_AUTH={shlex.quote(APP)} redis-cli --user app GET reboot-marker")
    assert res.returncode == 0 and res.stdout.strip() == marker, res.stderr
    # the address comes up after Redis started: it is served there without a restart
    res = testhelpers.ssh(hostvars, f"ip address add 192.0.2.10/32 dev lo && REDISCLI_AUTH={shlex.quote(APP)} "
                                    "redis-cli -h 192.0.2.10 --user app GET reboot-marker")
    assert res.returncode == 0 and res.stdout.strip() == marker, res.stderr
