"""The hosts' journals on backup1, the `logs` host too (roles/logs): a line from each of the six other hosts
arrives in its own file there; a request through the load balancer is found there by its request id, in the
app's log and Gunicorn's access log of the web host that served it; the log port takes the stack's hosts and
no one else.

Runs after test_cluster.py and test_monitoring.py (file order), on the hosts as they left them."""

import json
import shlex
import socket
import uuid

import testhelpers

DOMAIN = "lb.test"
PORT = 2514   # roles/logs' logs_port


def received(loghost, text: str) -> list[dict]:
    out = loghost.run(f"grep -rhF -- {shlex.quote(text)} /var/log/remote").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_every_hosts_journal_reaches_the_log_host(hosts):
    loghost = hosts["backup1"]
    markers = {name: f"logs-test-{name}-{uuid.uuid4().hex}" for name in hosts if name != "backup1"}
    for name, marker in markers.items():
        hosts[name].check_output(f"logger -t logstest {marker}")
    for name, marker in markers.items():
        _, lines = testhelpers.wait_for(f"{name}'s line on backup1", lambda: received(loghost, marker), 60)
        hostname = hosts[name].check_output("hostname")
        assert [line["host"] for line in lines] == [hostname], lines
        assert loghost.file(f"/var/log/remote/{hostname}/syslog.jsonl").contains(marker)


def test_a_request_is_found_on_the_log_host_by_its_request_id(hosts, addresses):
    connection = testhelpers.https_connection(addresses["lb"], DOMAIN)
    connection.request("GET", "/", headers={"Host": DOMAIN})
    response = connection.getresponse()
    response.read()
    request_id = response.getheader("X-Request-ID")
    assert response.status == 200 and request_id, (response.status, response.getheaders())
    web_hostnames = {hosts[name].check_output("hostname") for name in ("web1", "web2")}

    def both_logs():
        lines = received(hosts["backup1"], request_id)
        access = [line for line in lines if '"type": "access"' in line["message"]]
        return lines if access and len(lines) > len(access) else []

    took, lines = testhelpers.wait_for("the request's lines on backup1", both_logs, 60)
    print(f"request {request_id}: {len(lines)} lines on backup1 after {took:.1f} s")
    assert {line["host"] for line in lines} <= web_hostnames and len({line["host"] for line in lines}) == 1, lines


def test_the_log_port_takes_the_stacks_hosts_alone(hosts, addresses):
    for name in ("lb", "db", "worker1"):
        assert hosts[name].run(f"timeout 3 bash -c '</dev/tcp/{addresses['backup1']}/{PORT}'").rc == 0, name
    # this machine is on the test hosts' network but not in the inventory
    try:
        socket.create_connection((addresses["backup1"], PORT), timeout=3).close()
        reached = True
    except OSError:
        reached = False
    assert not reached, "the log port answers a host outside the inventory"


def test_preflight_refuses_bad_log_settings_before_any_change():
    rc, out = testhelpers.run_playbook("molecule/cluster/converge.yml",
                                       {"logs_queue_max_disk_space": "lots", "logs_keep_days": 0})
    flat = " ".join(out.split()).replace("''", "'")   # the output quotes a ' in a message as ''
    assert rc != 0, out[-3000:]
    for said in ("logs_queue_max_disk_space='lots' is not a size rsyslog reads",
                 "logs_keep_days=0: keep at least one day"):
        assert said in flat, (said, out[-3000:])
    assert "PLAY [Apply the base to every host]" not in out
