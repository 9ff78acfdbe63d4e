"""scripts/testhost under concurrency: what one scenario reads must never fail because another scenario
creates or destroys its own hosts at the same moment (the test command runs two scenarios at once).

Needs root and a cached ubuntu2404 image (the test command builds it before this runs)."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import threading
import time
from pathlib import Path

TESTHOST = Path(__file__).resolve().parents[1] / "scripts" / "testhost"
PREFIX = os.environ.get("TESTHOST_PREFIX", "") + "churn-"


def run_testhost(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["python3", str(TESTHOST), *args], capture_output=True, text=True, timeout=180)


def test_list_never_fails_while_hosts_come_and_go():
    """Another process boots and removes hosts, over and over; `list` runs in a loop meanwhile. Every
    `list` must exit 0 and print only whole lines, whatever it caught half-made or half-removed."""
    names = [f"{PREFIX}{i}" for i in range(3)]
    keeper = f"{PREFIX}keeper"  # stays up throughout, so the bridge is not torn down between cycles
    assert run_testhost("up", "--replace", keeper).returncode == 0
    churn_errors: list[str] = []
    done = threading.Event()

    def churn() -> None:
        try:
            for _ in range(6):
                for step in (["up", "--replace", *names], ["down", *names]):
                    res = run_testhost(*step)
                    if res.returncode != 0:
                        churn_errors.append(f"{step[0]}: {res.stderr.strip()[-500:]}")
        finally:
            done.set()

    worker = threading.Thread(target=churn)
    worker.start()
    calls, failures, seen = 0, [], set()
    try:
        while not done.is_set():
            res = run_testhost("list")
            calls += 1
            if res.returncode != 0:
                failures.append(res.stderr.strip()[-300:])
            for line in res.stdout.splitlines():
                fields = line.split("\t")
                assert len(fields) == 4, f"a broken line in `list`: {line!r}"
                seen.add(fields[0])
            time.sleep(0.01)
    finally:
        worker.join()
        run_testhost("down", keeper, *names)
    print(f"\n{calls} `list` calls while 6 cycles of 3 hosts came and went: {len(failures)} failed")
    assert not churn_errors, churn_errors
    assert set(names) & seen, "the churning hosts were never seen: the test did not overlap with them"
    assert calls >= 10, f"only {calls} `list` calls: too few to have overlapped with the churn"
    assert failures == [], f"{len(failures)} of {calls} `list` calls failed, e.g. {failures[:3]}"


def test_down_of_a_vanished_host_is_quiet():
    """`down` of a host that another process already removed succeeds: teardown never fails on it."""
    res = run_testhost("down", f"{PREFIX}never-was")
    assert res.returncode == 0, res.stderr


def test_two_teardowns_of_the_same_hosts_at_once_both_succeed():
    """A scenario's own destroy and the test command's teardown (Ctrl-C, a failed run) may take the same
    hosts down at the same moment; neither may fail on what the other removed."""
    names = [f"{PREFIX}twice-{i}" for i in range(3)]
    for _ in range(3):
        assert run_testhost("up", "--replace", *names).returncode == 0
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: run_testhost("down", *names), range(2)))
        assert [r.returncode for r in results] == [0, 0], [r.stderr[-500:] for r in results]
        assert not set(names) & {line.split("\t")[0] for line in run_testhost("list").stdout.splitlines()}


def test_a_stack_host_boots_with_recent_apt_lists_and_a_bare_host_without():
    """A host on a stack image gets the OS's apt lists, fetched less than an hour ago, so roles/common
    skips its update there (cache_valid_time 3600 s); a host on the bare image gets none and must update."""
    stack, bare = f"{PREFIX}lists-stack", f"{PREFIX}lists-bare"
    try:
        assert run_testhost("up", "--replace", f"{stack}=ubuntu2404+stack", f"{bare}=ubuntu2404").returncode == 0
        age = run_testhost("shell", stack, "echo $(( $(date +%s) - $(stat -c %Y /var/lib/apt/periodic/"
                                          "update-success-stamp) )); ls /var/lib/apt/lists | grep -c _Packages")
        assert age.returncode == 0, age.stderr
        seconds, packages = map(int, age.stdout.split())
        assert 0 <= seconds < 3600 and packages > 0, age.stdout
        policy = run_testhost("shell", stack, "apt-cache policy nginx-light jq | grep -c Candidate:")
        assert policy.stdout.strip() == "2", policy.stdout + policy.stderr
        none = run_testhost("shell", bare, "ls /var/lib/apt/lists | grep -c _Packages")
        assert none.stdout.strip() == "0", none.stdout
    finally:
        run_testhost("down", stack, bare)


def test_the_test_network_file_agrees_with_itself():
    """scripts/testnet.json is the one place for the test network's addresses: the gateway is the bridge's
    first address, the ACME server is Pebble on it, and testhost (which makes the bridge) reads the file."""
    import ipaddress
    import json

    net = json.loads((TESTHOST.parent / "testnet.json").read_text())
    subnet = ipaddress.ip_network(net["testnet_subnet"])
    assert net["testnet_gateway"] == str(subnet[1])
    assert net["testnet_acme_server"] == f"https://{net['testnet_gateway']}:{net['testnet_pebble_port']}/dir"
    assert net["testnet_dns01_acme_server"] == \
        f"https://{net['testnet_gateway']}:{net['testnet_pebble_dns01_port']}/dir"
    out = subprocess.run(["python3", str(TESTHOST), "pebble", "env"], capture_output=True, text=True, timeout=30)
    assert net["testnet_acme_server"] in out.stdout, (out.stdout, out.stderr)


def test_a_rebuilt_image_leaves_the_older_image_a_host_runs_on(tmp_path):
    """Two checkouts whose package lists differ (two versions of the project, one machine) build two
    images of the same name; the newer build removes the older image, except while a host's overlay sits
    on it (before, each build removed the other's image under its running hosts)."""
    import importlib.machinery
    import importlib.util
    import json

    loader = importlib.machinery.SourceFileLoader("testhost_module", str(TESTHOST))
    spec = importlib.util.spec_from_loader("testhost_module", loader)
    testhost = importlib.util.module_from_spec(spec)
    loader.exec_module(testhost)
    testhost.CACHE, testhost.STATE = tmp_path / "cache", tmp_path / "state"
    images = testhost.CACHE / "images"
    used, unused = images / "ubuntu2404+stack-aaaa", images / "ubuntu2404+stack-bbbb"
    for image in (used, unused):
        (image / "rootfs").mkdir(parents=True)
    (testhost.STATE / "hosts/h1").mkdir(parents=True)
    (testhost.STATE / "hosts/h1/host.json").write_text(json.dumps({"image": str(used / "rootfs")}))
    (testhost.STATE / "hosts/h2").mkdir()
    (testhost.STATE / "hosts/h2/host.json").write_text("{half written")
    testhost.remove_unused_images("ubuntu2404+stack-*")
    assert used.exists() and not unused.exists()
    (testhost.STATE / "hosts/h1/host.json").unlink()
    testhost.remove_unused_images("ubuntu2404+stack-*")
    assert not used.exists()
