"""What roles/gunicorn must leave on every host: a socket that never refuses, a hardened service."""

import re
import time

import pytest

import testhelpers

SOCK = "/run/testapp.sock"


def get(host, path="/", timeout=15):
    return host.run(f"curl -sS --fail --max-time {timeout} --unix-socket {SOCK} http://testapp{path}")


def main_pid(host):
    return int(host.run("systemctl show -p MainPID --value testapp.service").stdout.strip())


def test_units_enabled_and_active(host):
    for unit in ("testapp.socket", "testapp.service"):
        assert host.run(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
        assert host.run(f"systemctl is-active {unit}").stdout.strip() == "active"


def test_units_pass_systemd_analyze_verify(host):
    units = " ".join(f"/etc/systemd/system/{unit}" for unit in (
        "testapp.service", "testapp.socket", "testapp-overlap.service", "testapp-ticker@.service",
        "testapp-job-hello.service", "testapp-job-hello.timer"))
    res = host.run(f"systemd-analyze verify {units}")
    assert res.rc == 0, res.stderr


@pytest.mark.parametrize("unit", ["testapp.service", "testapp-overlap.service", "testapp-ticker@1.service",
                                  "testapp-job-hello.service"])
def test_security_exposure_at_most_2(host, unit):
    out = host.run(f"systemd-analyze security --no-pager {unit}").stdout
    exposure = float(re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", out).group(1))
    print(f"systemd-analyze security exposure of {unit} on {host.backend.get_hostname()}: {exposure}")
    assert exposure <= 2.0, out


def ticker_pid(host, n=1):
    return int(host.check_output(f"systemctl show -p MainPID --value testapp-ticker@{n}.service"))


def ticker_journal(host, pid, text):
    """The journal of ticker@1's process `pid` once it holds `text` (journald may take a moment)."""
    for _ in range(40):
        journal = host.check_output(f"journalctl -u testapp-ticker@1.service -o cat _PID={pid}")
        if text in journal:
            break
        time.sleep(0.25)
    return journal


def test_process_instances_run_in_the_sandbox_and_come_back_after_sigkill(host):
    """The deploy (roles/app) starts the instances; here the test does."""
    host.check_output("systemctl start testapp-ticker@1.service testapp-ticker@2.service")
    for n in (1, 2):
        pid = ticker_pid(host, n)
        assert pid > 0
        assert host.check_output(f"ps -o user= -p {pid}") == "testapp"
    pid = ticker_pid(host)
    host.check_output(f"kill -KILL {pid}")
    for _ in range(40):
        new = ticker_pid(host)
        if new not in (0, pid):
            break
        time.sleep(0.25)
    assert new not in (0, pid)
    # the new process prints the greeting from the environment file once it runs
    journal = ticker_journal(host, new, "hello from the environment file")
    assert "hello from the environment file" in journal, journal


def test_a_new_environment_restarts_the_running_processes_too(host):
    """A changed environment file (a rotated secret, say) restarts the processes, not only the web service:
    none keeps running on the old values. Converged as a worker host (gunicorn_web_service false), whose
    web service the role leaves alone; then converged back."""
    before, web_before = ticker_pid(host), main_pid(host)
    rc, out, _ = testhelpers.converge_with({
        "gunicorn_web_service": False,
        "gunicorn_environment": {"GREETING": "hello from the new environment",
                                 "SECRET_KEY": "not-a-real-secret-0123456789abcdef"}})
    assert rc == 0, out[-3000:]
    new = ticker_pid(host)
    assert new not in (0, before) and main_pid(host) == web_before
    journal = ticker_journal(host, new, "hello from the new environment")
    assert "hello from the new environment" in journal, journal
    rc, out, _ = testhelpers.converge_with({})
    assert rc == 0, out[-3000:]
    assert main_pid(host) != web_before and ticker_pid(host) != new


def test_a_new_environment_restarts_the_web_service_beside_its_second_instance(host):
    """A changed environment (a rotated secret) restarts the running web service while its second instance
    serves the socket (files/gunicorn-overlap), as a deploy's switch does, and stops that one after: the
    requests made meanwhile are all answered, some by the second instance, and the restarted service has
    the new environment. (Before, a plain restart: every request waited for the new Gunicorn to boot.)"""
    old = main_pid(host)
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    loop = host.check_output(
        "rm -f /tmp/overlap-load; nohup sh -c 'while :; do echo \"$(curl -s --max-time 20 -w \" %{http_code}\" "
        f"--unix-socket {SOCK} http://testapp/)\" >> /tmp/overlap-load; sleep 0.05; done' >/dev/null 2>&1 & echo $!")
    try:
        rc, out, _ = testhelpers.converge_with({
            "gunicorn_environment": {"GREETING": "hello after a rotation",
                                     "SECRET_KEY": "not-a-real-secret-0123456789abcdef"}})
        time.sleep(1)
    finally:
        host.run(f"kill {loop}")
    assert rc == 0, out[-3000:]
    new = main_pid(host)
    assert new not in (0, old)
    overlap = host.check_output(f"journalctl -q -o cat -u testapp-overlap.service --since '{since}'")
    assert "Started" in overlap and ("Stopped" in overlap or "Deactivated" in overlap), overlap
    assert host.run("systemctl is-active testapp-overlap.service").stdout.strip() == "inactive"
    lines = host.file("/tmp/overlap-load").content_string.splitlines()
    assert lines and all(line.endswith(" 200") for line in lines), [l for l in lines if not l.endswith(" 200")][:5]
    masters = {int(m) for m in re.findall(r"ppid=(\d+)", "\n".join(lines))}
    assert masters - {old, new}, f"no request answered by the second instance: {masters}, {old}, {new}"
    assert "hello after a rotation" in get(host).stdout
    rc, out, _ = testhelpers.converge_with({})
    assert rc == 0, out[-3000:]
    assert "hello from the environment file" in get(host).stdout


def test_the_job_runs_on_its_timer_and_writes_its_status(host):
    assert host.service("testapp-job-hello.timer").is_enabled and host.service("testapp-job-hello.timer").is_running
    host.check_output("systemctl start testapp-job-hello.service")
    status = host.file("/var/lib/testapp/jobs/hello.json").content_string
    assert '"result": "success"' in status and '"exit_status": "0"' in status, status
    assert "job hello hello from the environment file" in host.check_output(
        "journalctl -u testapp-job-hello.service -o cat -n 5")


def test_serves_over_unix_socket_and_tcp(host):
    assert get(host).stdout.startswith("hello from the environment file")
    assert host.run("curl -sS --max-time 5 http://127.0.0.1:8001/").stdout.startswith("hello")


def test_unix_socket_only_for_nginx_group(host):
    sock = host.file(SOCK)
    assert sock.is_socket and sock.user == "root" and sock.group == "www-data" and sock.mode == 0o660


def test_runs_as_its_own_unprivileged_user(host):
    users = set(host.run(f"ps -o user= --ppid {main_pid(host)}").stdout.split())
    assert users == {"testapp"}
    assert host.user("testapp").shell == "/usr/sbin/nologin"
    caps = host.run(f"grep CapEff /proc/{main_pid(host)}/status").stdout.split()[1]
    assert int(caps, 16) == 0


def test_environment_file_readable_by_root_only(host):
    env = host.file("/etc/testapp/env")
    assert env.user == "root" and env.mode == 0o600
    assert 'SECRET_KEY="not-a-real-secret-0123456789abcdef"' in env.content_string


def test_sandbox_lets_the_app_write_only_its_paths(host):
    out = get(host, "/write").stdout
    assert "/srv/testapp/shared/uploads/probe=ok" in out
    assert "/srv/testapp/current/probe=ok" not in out and "/etc/probe=ok" not in out


def test_logs_go_to_the_journal(host):
    assert "Booting worker" in host.run("journalctl -u testapp.service --no-pager -n 200").stdout


def test_reload_keeps_main_process_and_replaces_workers(host):
    before_main = main_pid(host)
    before_worker = get(host).stdout.split("pid=")[1].split()[0]
    assert host.run("systemctl reload testapp.service").rc == 0
    for _ in range(50):
        worker = get(host).stdout.split("pid=")[1].split()[0]
        if worker != before_worker:
            break
        time.sleep(0.2)
    assert main_pid(host) == before_main and worker != before_worker


def test_sigkill_of_main_process_refuses_nothing_and_recovers_on_its_own(host):
    """The socket is systemd's: a request sent right after SIGKILL waits in its queue and is answered.
    The time is printed; the bound is loose enough for a slow, shared CI machine."""
    killed = main_pid(host)
    res = host.run(f"kill -KILL {killed}; start=$(date +%s.%N); "
                   f"curl -sS --fail --max-time 60 --unix-socket {SOCK} http://testapp/; echo; "
                   f"until systemctl is-active -q testapp.service && [ \"$(systemctl show -p MainPID --value testapp.service)\" != {killed} ]; "
                   "do sleep 0.1; done; echo elapsed=$(echo \"$(date +%s.%N) - $start\" | bc 2>/dev/null || python3 -c \"import time; print(time.time() - $start)\")")
    assert res.rc == 0 and "hello" in res.stdout, res.stdout + res.stderr
    elapsed = float(res.stdout.split("elapsed=")[1])
    print(f"service back {elapsed:.2f} s after SIGKILL on {host.backend.get_hostname()}")
    assert elapsed < 30
    assert main_pid(host) != killed


def test_restart_under_requests_refuses_nothing(host):
    """Requests made while the service restarts are queued by the socket, not refused."""
    res = host.run(f"for i in $(seq 20); do curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 20 --unix-socket {SOCK} "
                   "http://testapp/ & sleep 0.05; done & sleep 0.3; systemctl restart testapp.service; wait")
    codes = res.stdout.split()
    assert len(codes) == 20 and set(codes) == {"200"}, codes


def test_the_second_instance_serves_the_same_socket_only_when_started(host):
    """testapp-overlap.service (roles/app starts it for a deploy's restart): not enabled, not running;
    once started it runs gunicorn_overlap_workers workers and answers on the service's socket while the
    service itself is frozen, and stops clean."""
    assert host.run("systemctl is-enabled testapp-overlap.service").stdout.strip() == "static"
    assert host.run("systemctl is-active testapp-overlap.service").stdout.strip() == "inactive"
    try:
        host.check_output("systemctl start testapp-overlap.service")
        for _ in range(40):  # until a worker of the second instance has loaded the app
            if host.run("journalctl -q -o cat -u testapp-overlap.service | grep -q 'Booting worker'").rc == 0:
                break
            time.sleep(0.25)
        time.sleep(2)
        # gunicorn_overlap_workers (1 here), not the service's 2
        assert host.check_output("pgrep -c -P $(systemctl show -p MainPID --value testapp-overlap.service)") == "1"
        host.check_output("systemctl kill -s SIGSTOP testapp.service")
        try:
            codes = host.check_output(f"for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{{http_code}} ' --max-time 5 "
                                      f"--unix-socket {SOCK} http://testapp/; done").split()
        finally:
            host.check_output("systemctl kill -s SIGCONT testapp.service")
        assert codes == ["200"] * 5, codes
    finally:
        host.check_output("systemctl stop testapp-overlap.service")
    assert host.run("systemctl is-active testapp-overlap.service").stdout.strip() == "inactive"
    assert get(host).rc == 0


@pytest.mark.parametrize("extra, message", [
    ({"gunicorn_app_name": "Test App"}, "gunicorn_app_name=Test App cannot name a system user"),
    ({"gunicorn_listen": ["run/app.sock"]}, "gunicorn_listen entry run/app.sock is neither"),
    ({"gunicorn_environment": {"BAD-NAME": "x"}}, "gunicorn_environment has names that are not variable names: BAD-NAME"),
    ({"gunicorn_processes": {"Bad Name": {"command": "x"}}}, "gunicorn_processes and gunicorn_jobs map names"),
    ({"gunicorn_overlap_workers": 0}, "gunicorn_overlap_workers=0: the second Gunicorn"),
])
def test_bad_input_stops_before_any_change(extra, message):
    testhelpers.assert_refused_before_any_change(extra, message)


def test_a_process_and_a_job_dropped_from_the_settings_go():
    """Last: a converge without them stops the instances and removes the units, on every host."""
    rc, out, recaps = testhelpers.converge_with({"gunicorn_processes": {}, "gunicorn_jobs": {}})
    assert rc == 0, out[-3000:]
    for host in testhelpers.all_hosts():
        assert not host.file("/etc/systemd/system/testapp-ticker@.service").exists
        assert not host.file("/etc/systemd/system/testapp-job-hello.timer").exists
        assert not host.file("/etc/systemd/system/timers.target.wants/testapp-job-hello.timer").exists
        assert host.run("systemctl is-active testapp-ticker@1.service testapp-ticker@2.service").stdout.split() \
            == ["inactive", "inactive"]
        assert host.service("testapp.service").is_running
