"""What roles/postgresql must leave on every host: checked on the host, from the controller, and
across a reboot of the test host."""

import os
import subprocess
import uuid

import pytest

import testhelpers

GATEWAY = testhelpers.TESTNET["testnet_gateway"]   # the controller on the test bridge

APP_PASSWORD = "app-Test-password-0123456789"
REPORTER_PASSWORD = "reporter-Test-password-0123456789"
VERSIONS = {"ubuntu2404": "16", "ubuntu2204": "14", "debian12": "15"}


@pytest.fixture(scope="module")
def hostvars(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def version(hostvars):
    return VERSIONS[hostvars["inventory_hostname"]]


def psql(host, sql, user="app", password=APP_PASSWORD, db="app", address="127.0.0.1"):
    """psql on the test host, over TCP with a password."""
    return host.run(f"PGPASSWORD='{password}' PGCONNECT_TIMEOUT=5 psql -h {address} -U {user} -d {db} "
                    f"-XAtq -v ON_ERROR_STOP=1 -c \"{sql}\"")


def psql_from_controller(address, user, password, sql="SELECT current_user"):
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run(["psql", "-h", address, "-U", user, "-d", "app", "-XAtq", "-c", sql],
                          capture_output=True, text=True, env=env, timeout=30)


def admin(host, sql, db="app"):
    return host.run(f"runuser -u postgres -- psql -d {db} -XAtq -c \"{sql}\"")


def test_distribution_version_installed(host, version):
    assert host.package(f"postgresql-{version}").is_installed


def test_service_enabled_and_active(host, version):
    assert host.service("postgresql").is_enabled
    assert host.run(f"systemctl is-active postgresql@{version}-main").stdout.strip() == "active"


def test_settings_in_effect(host):
    memtotal_mb = int(host.file("/proc/meminfo").content_string.split()[1]) // 1024
    shown = {name: admin(host, f"SHOW {name}").stdout.strip() for name in (
        "password_encryption", "max_connections", "shared_buffers", "work_mem", "log_min_duration_statement",
        "TimeZone", "log_connections", "idle_in_transaction_session_timeout")}
    assert shown["password_encryption"] == "scram-sha-256"
    assert shown["max_connections"] == "50"
    assert shown["shared_buffers"] == f"{int(memtotal_mb * 0.25)}MB"
    assert shown["work_mem"] == f"{max(int(memtotal_mb / 4 / 50), 4)}MB"
    assert shown["log_min_duration_statement"] == "500ms"
    assert shown["TimeZone"] == "Europe/Berlin"
    assert shown["log_connections"] == "on"
    assert shown["idle_in_transaction_session_timeout"] == "1min"


def test_settings_in_conf_d_with_managed_header(host, version):
    conf = host.file(f"/etc/postgresql/{version}/main/conf.d/50-ansible.conf")
    assert conf.user == "postgres" and "Ansible managed" in "".join(conf.content_string.splitlines()[:3])


def test_hba_holds_only_the_configured_rules(host, version):
    rules = [line.split() for line in host.file(f"/etc/postgresql/{version}/main/pg_hba.conf").content_string.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert rules == [
        ["local", "all", "postgres", "peer"],
        ["local", "app", "app", "scram-sha-256"],
        ["host", "app", "app", "127.0.0.1/32", "scram-sha-256"],
        ["host", "app", "app", f"{GATEWAY}/32", "scram-sha-256"],
        ["host", "app", "reporter", "127.0.0.1/32", "scram-sha-256"],
        ["host", "app", "app", "192.0.2.10/32", "scram-sha-256"],
    ]


def test_passwords_stored_as_scram_verifiers(host):
    stored = admin(host, "SELECT rolname, left(rolpassword, 14) FROM pg_authid WHERE rolname IN ('app','reporter') ORDER BY 1")
    assert stored.stdout.split() == ["app|SCRAM-SHA-256$", "reporter|SCRAM-SHA-256$"]


def test_app_user_connects_over_tcp_and_creates_a_table(host):
    res = psql(host, "CREATE TABLE IF NOT EXISTS t_connect (id int); INSERT INTO t_connect VALUES (1); "
                     "SELECT count(*) > 0 FROM t_connect")
    assert res.rc == 0 and res.stdout.strip() == "t", res.stderr


def test_default_privileges_let_reporter_read_app_tables(host):
    assert psql(host, "CREATE TABLE IF NOT EXISTS t_report (id int)").rc == 0
    res = psql(host, "SELECT count(*) FROM t_report", user="reporter", password=REPORTER_PASSWORD)
    assert res.rc == 0, res.stderr
    res = psql(host, "INSERT INTO t_report VALUES (1)", user="reporter", password=REPORTER_PASSWORD)
    assert res.rc != 0 and "permission denied" in res.stderr


def test_a_revoke_leaves_only_the_owner_creating_in_public(host):
    res = psql(host, "CREATE TABLE t_reporter (id int)", user="reporter", password=REPORTER_PASSWORD)
    assert res.rc != 0 and "permission denied for schema public" in res.stderr, (res.rc, res.stderr)
    assert psql(host, "CREATE TABLE IF NOT EXISTS t_owner (id int)").rc == 0


def test_it_listens_on_an_address_that_is_not_up_yet(host):
    """192.0.2.10 is in listen_addresses but on no interface: with ip_nonlocal_bind PostgreSQL binds it
    anyway (without, it skips it with a warning and never listens there)."""
    assert host.run("ip -o address show | grep -q ' 192.0.2.10/'").rc != 0
    assert "192.0.2.10:5432" in host.check_output("ss -ltnH 'sport = :5432'")


def test_extension_created(host):
    assert admin(host, "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'").stdout.strip() == "pg_trgm"


def test_wrong_password_refused(host):
    res = psql(host, "SELECT 1", password="not-the-password")
    assert res.rc != 0 and "password authentication failed" in res.stderr


def test_allowed_address_accepted_from_controller(hostvars):
    res = psql_from_controller(hostvars["ansible_host"], "app", APP_PASSWORD)
    assert res.returncode == 0 and res.stdout.strip() == "app", res.stderr


def test_address_outside_the_list_refused(hostvars):
    # reporter may connect from 127.0.0.1 only; the controller (GATEWAY) is another address
    res = psql_from_controller(hostvars["ansible_host"], "reporter", REPORTER_PASSWORD)
    assert res.returncode != 0 and f'no pg_hba.conf entry for host "{GATEWAY}"' in res.stderr, res.stderr


def test_listens_only_on_configured_addresses(host, hostvars):
    listening = {s for s in host.socket.get_listening_sockets() if s.endswith(":5432")}
    allowed = {"tcp://127.0.0.1:5432", "tcp://::1:5432", f"tcp://{hostvars['ansible_host']}:5432",
               "tcp://192.0.2.10:5432"}
    assert listening and listening <= allowed, listening


@pytest.mark.parametrize("extra, message", [
    ({"postgresql_users": [{"name": "app"}]}, "postgresql_users[0] (name: app) has no password"),
    ({"postgresql_hba_entries": [{"database": "app", "user": "app", "address": "10.0.0.0/8", "method": "md6"}]},
     "postgresql_hba_entries[0] (type host, database app, user app): method md6 is not allowed for type host"),
    ({"postgresql_hba_entries": [{"database": "app", "user": "app", "address": "10.0.0.0/8", "method": "peer"}]},
     "method peer is not allowed for type host"),
    ({"postgresql_hba_entries": [{"database": "app", "user": "app"}]}, "address (none) is not an address"),
    ({"postgresql_databases": [{"name": "shop", "owner": "ghost"}]},
     "postgresql_databases[0] (name: shop) is owned by ghost, which is not in postgresql_users"),
])
def test_bad_input_stops_before_any_change(extra, message):
    testhelpers.assert_refused_before_any_change(extra, message)


def test_reload_for_sighup_settings_restart_only_for_postmaster_ones():
    """A reloadable setting is applied without a restart; shared_buffers needs one and gets it.
    (No `host` fixture: one converge covers all platforms.)"""
    hosts = testhelpers.all_hosts()
    started = [admin(h, "SELECT pg_postmaster_start_time()").stdout.strip() for h in hosts]
    rc, output, _ = testhelpers.converge_with({"postgresql_log_min_duration_statement_ms": 250})
    assert rc == 0, output[-3000:]
    assert [admin(h, "SHOW log_min_duration_statement").stdout.strip() for h in hosts] == ["250ms"] * len(hosts)
    assert [admin(h, "SELECT pg_postmaster_start_time()").stdout.strip() for h in hosts] == started
    rc, output, _ = testhelpers.converge_with({"postgresql_shared_buffers_mb": 64})
    assert rc == 0, output[-3000:]
    assert [admin(h, "SHOW shared_buffers").stdout.strip() for h in hosts] == ["64MB"] * len(hosts)
    restarted = [admin(h, "SELECT pg_postmaster_start_time()").stdout.strip() for h in hosts]
    assert all(now != before for now, before in zip(restarted, started)), (started, restarted)


def test_refused_setting_fails_the_play_naming_it():
    rc, output, _ = testhelpers.converge_with({"postgresql_settings": {"work_mem": "lots"}})
    assert rc != 0
    assert "PostgreSQL refused these settings" in output and "work_mem = 'lots'" in output, output[-3000:]
    rc, output, recaps = testhelpers.converge_with({})
    assert rc == 0 and len(recaps) == len(testhelpers.all_hosts()), output[-3000:]


def test_zz_data_survives_a_reboot(host, hostvars, version):
    """Last in the file: the host reboots, so later tests would find stale SSH connections."""
    marker = uuid.uuid4().hex
    assert psql(host, f"CREATE TABLE IF NOT EXISTS t_reboot (v text); INSERT INTO t_reboot VALUES ('{marker}')").rc == 0
    testhelpers.reboot(hostvars["ansible_host"])
    res = testhelpers.ssh(hostvars, f"for i in $(seq 50); do systemctl is-active -q postgresql@{version}-main && break; "
                                    f"sleep 0.2; done; PGPASSWORD='{APP_PASSWORD}' psql -h 127.0.0.1 -U app -d app "
                                    f"-XAtq -c \"SELECT count(*) FROM t_reboot WHERE v = '{marker}'\"")
    assert res.returncode == 0 and res.stdout.strip() == "1", res.stderr
    # the address comes up after the server started: it is served there without a restart
    res = testhelpers.ssh(hostvars, f"ip address add 192.0.2.10/32 dev lo && PGPASSWORD='{APP_PASSWORD}' "
                                    "PGCONNECT_TIMEOUT=5 psql -h 192.0.2.10 -U app -d app -XAtq -c 'SELECT 1'")
    assert res.returncode == 0 and res.stdout.strip() == "1", res.stderr
