"""Helpers for the testinfra suites of every scenario (roles/*/molecule/*/tests and molecule/*/tests).

Import with `import testhelpers`: the repository's pytest.ini puts molecule/shared on the path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTHOST = REPO / "scripts" / "testhost"
# The test network's addresses and Pebble's (testnet_gateway, testnet_subnet, testnet_acme_server, ...).
TESTNET = json.loads((REPO / "scripts" / "testnet.json").read_text())


def _ansible_env() -> dict:
    """Molecule's Ansible settings for this scenario, and every place its roles may live. Without Molecule's
    profile_tasks callback: the tests read the output as users see it (a task's banner, then its result)."""
    project = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    env = {key: value for key, value in os.environ.items() if key != "ANSIBLE_CALLBACKS_ENABLED"}
    return {**env, "ANSIBLE_CONFIG": f"{os.environ['MOLECULE_EPHEMERAL_DIRECTORY']}/ansible.cfg",
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
    """The scripts/testhost name of this scenario's test host at this address, from the instance config
    that molecule/shared/create.yml wrote (other scenarios create and destroy hosts meanwhile: a listing
    of every host on the machine is no place to look)."""
    import yaml

    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "instance_config.yml"
    instances = yaml.safe_load(path.read_text()) or []
    for instance in instances:
        if instance["address"] == address:
            return instance["testhost"]
    raise LookupError(f"no test host of this scenario at {address} in {path}: {instances}")


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


MARKER = "/run/flask-deploy-before-refusal"
WATCHED = "/etc /srv /usr/local /opt"  # where the roles write: settings, the app, helpers


def assert_refused_before_any_change(extra: dict, *messages: str) -> None:
    """Converge with bad variables: the run must fail, say each of `messages`, report no change on every
    host of the scenario's inventory, and leave no file written under WATCHED on any host (compared with a
    marker made just before)."""
    targets = all_hosts()
    hosts = len(targets)
    for target in targets:
        target.check_output(f"touch {MARKER}")
    rc, output, recaps = converge_with(extra)
    assert rc != 0
    said = " ".join(output.split())  # however the output callback wrapped it
    missing = [message for message in messages if message not in said]
    assert not missing, (missing, output[-3000:])
    assert len(recaps) == hosts and not any(recaps.values()), output[-3000:]
    for target in targets:
        written = target.check_output(f"find {WATCHED} -newer {MARKER} -print 2>/dev/null | head -20")
        assert written == "", f"{target.backend.get_hostname()}: written despite the refusal:\n{written}"


def run_playbook(playbook: str, extra: dict | None = None, inventory: str | None = None, timeout: int = 900,
                 options: tuple = (), env: dict | None = None) -> tuple[int, str]:
    """Run one of the project's playbooks (path relative to the repository) against the scenario's hosts,
    as a user would: its settings come from the group_vars Molecule links into the scenario's inventory.
    `options` go to ansible-playbook as they are (--check, --diff); `env` adds to its environment.

    Returns the exit code and the whole output."""
    command = ["ansible-playbook", "-i", inventory or os.environ["MOLECULE_INVENTORY_FILE"], *options]
    if extra:
        command += ["-e", json.dumps(extra)]
    # Its own process group: on a timeout the forked workers go too, not only ansible-playbook (orphans
    # of a hung run went on burning a CPU under the next scenarios).
    proc = subprocess.Popen(command + [str(REPO / playbook)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**_ansible_env(), **(env or {})}, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()  # what it printed until then says where it hung
        return 124, f"{stdout}{stderr}\n[run_playbook: {playbook} still ran after {timeout} s and was stopped]"
    return proc.returncode, stdout + stderr


def inventory_copy(directory: Path) -> tuple[dict, Path]:
    """A copy of the scenario's inventory in DIRECTORY, for a test to change: the hosts file Molecule wrote
    and the group_vars and host_vars it links in, copied as files. Returns the hosts file's content and
    its path: change the content, write it back, and pass the path as run_playbook's `inventory`."""
    import shutil

    import yaml

    source = Path(os.environ["MOLECULE_INVENTORY_FILE"])
    target = directory / "inventory"
    shutil.copytree(source.parent, target, symlinks=False)
    return yaml.safe_load(source.read_text()), target / source.name


def deploy_state(host, app: str = "notesapp", database: bool = True) -> str:
    """What a deploy could change on a host, to compare before and after a run that must change nothing:
    the live release, every file under the app's home (path, size, mtime, mode), the deploy log and, on a
    database host, a dump of the app's database."""
    command = (f"readlink /srv/{app}/current; find /srv/{app} -printf '%p %s %T@ %m\\n' | sort | sha256sum; "
               f"sha256sum /var/log/{app}/deploy.log")
    if database:
        command += f"; {database_dump_digest(app)}"
    return host.check_output(command)


def assert_sandboxed(host, units: list[str]) -> None:
    """The units pass `systemd-analyze verify` and score at most 2 in `systemd-analyze security` on this
    host's systemd (roles/gunicorn's scenario checks the same on Ubuntu 22.04; the top-level scenarios
    check the app's real units on the other releases)."""
    res = host.run("systemd-analyze verify " + " ".join(f"/etc/systemd/system/{u.split('@')[0]}@.service"
                                                       if "@" in u else f"/etc/systemd/system/{u}" for u in units))
    assert res.rc == 0, res.stderr
    for unit in units:
        out = host.run(f"systemd-analyze security --no-pager {unit}").stdout
        found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", out)
        assert found, out
        print(f"systemd-analyze security exposure of {unit} on {host.backend.get_hostname()}: {found.group(1)}")
        assert float(found.group(1)) <= 2.0, out


def database_dump_digest(database: str) -> str:
    """A shell command printing a digest of the database's contents. pg_dump's plain output is the same for
    the same contents, but for the random key of its \\restrict lines (PostgreSQL's fix of CVE-2025-8714)."""
    return f"runuser -u postgres -- pg_dump {database} | grep -v '^\\\\\\(un\\)\\?restrict ' | sha256sum"


def pebble_root() -> str:
    """Pebble's root CA (it makes a new one each start), as PEM, from its management API: what the
    certificates it issues chain to."""
    import ssl
    import urllib.request

    env = json.loads(subprocess.run(["python3", str(TESTHOST), "pebble", "env"],
                                    capture_output=True, text=True, check=True).stdout)
    ctx = ssl.create_default_context(cafile=env["ca_bundle"])
    with urllib.request.urlopen(f"{env['management']}/roots/0", context=ctx, timeout=10) as r:
        return r.read().decode()


def trust_the_test_site(host, domain: str, address: str, ca_file: str) -> None:
    """What a real site has and the test network lacks, on HOST: DOMAIN in DNS (here HOST's /etc/hosts, at
    ADDRESS) and the CA of its certificate (Pebble's root) in CA_FILE, where roles/monitoring's HTTPS probe
    looks (monitoring_probe_ca_file)."""
    import shlex

    host.check_output(f"mkdir -p {shlex.quote(str(Path(ca_file).parent))} "
                      f"&& printf %s {shlex.quote(pebble_root())} > {shlex.quote(ca_file)}")
    host.check_output(f"grep -q ' {domain}$' /etc/hosts || echo '{address} {domain}' >> /etc/hosts")


def prometheus(host, path: str, port: int = 9090):
    """The JSON answer of Prometheus's HTTP API (or Alertmanager's, on its port) on HOST, which listens on
    loopback only (roles/monitoring)."""
    return json.loads(host.check_output(f"curl -sf --max-time 10 'http://127.0.0.1:{port}{path}'"))


def prometheus_query(host, expr: str) -> list:
    """The result of a PromQL query, asked of Prometheus on HOST."""
    import shlex

    return json.loads(host.check_output(
        f"curl -sfG --max-time 10 --data-urlencode {shlex.quote('query=' + expr)} "
        "http://127.0.0.1:9090/api/v1/query"))["data"]["result"]


# A release that is never ready on purpose fails its gate after this many attempts a second apart, not
# the default 30: the same path, without waiting out the default. The healthy releases those deploys
# switch to or back to pass the same gate within a few attempts (the time their workers take to boot).
SICK_GATE_RETRIES = 15


def host_now(host) -> str:
    """The host's clock, as journalctl's --since takes it."""
    return host.check_output("date '+%Y-%m-%d %H:%M:%S'")


def can_connect(source, address: str, port: int) -> bool:
    """Whether `source` gets a TCP connection to address:port within 3 seconds."""
    return connects(source, [(address, port)])[(address, port)]


def connects(source, targets) -> dict:
    """{(address, port): whether `source` (a testinfra host) gets a TCP connection to it within 3 s}, all
    tried at once in one command: a firewall that drops the packets costs 3 s in all, not 3 s a target."""
    tries = " ".join(f"(timeout 3 bash -c '</dev/tcp/{address}/{port}' 2>/dev/null && echo {address} {port} yes "
                     f"|| echo {address} {port} no) &" for address, port in targets)
    out = source.check_output(f"{tries} wait")
    answers = {(address, int(port)): said == "yes" for address, port, said in map(str.split, out.splitlines())}
    assert len(answers) == len(set(targets)), (targets, out)
    return answers


def wait_for(what: str, check, timeout: float, every: float = 2):
    """Call check() every EVERY seconds until it returns something true: (the seconds it took, that)."""
    import time

    start = time.monotonic()
    while not (found := check()):
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(every)
    return time.monotonic() - start, found


def https_connection(address: str, server_name: str, timeout: float = 60):
    """An HTTPS connection to ADDRESS that names SERVER_NAME in the TLS handshake (SNI), as a browser does:
    nginx's default server refuses a handshake without one of the site's names. Any certificate is
    accepted (the certificate has its own tests)."""
    import http.client
    import ssl

    class Connection(http.client.HTTPSConnection):
        def connect(self):
            http.client.HTTPConnection.connect(self)
            self.sock = self._context.wrap_socket(self.sock, server_hostname=server_name)

    return Connection(address, 443, timeout=timeout, context=ssl._create_unverified_context())


class Load:
    """Steady load from a second process's point of view: threads sending GET requests over HTTPS to one
    address (any certificate accepted: the load counts answers, the certificate has its own tests).
    A failure is an exception (refused, reset, timeout) or a 5xx answer. The client waits as long as nginx
    waits for the app (nginx_proxy_read_timeout, 60 s): a request held longer is nginx's 504 anyway, and
    one held less is slow, which the printed p99 and max show, not lost.

    Like a browser (and urllib3), a request on a reused keep-alive connection that the server closed
    before answering is sent again once on a new connection (RFC 9110, 9.2.2: GET is idempotent): nginx
    closes idle keep-alive connections when it reloads, which a deploy across several web hosts does. Such
    retries are counted and printed; a retry that fails too is a failure.

    Two threads with a pause of 50 ms keep requests flowing through every switch (a deploy sees hundreds)
    without taking the CPU the deploy under test needs; bench/run.py asks for more."""

    def __init__(self, address: str, host_header: str, path: str = "/", threads: int = 2, pause: float = 0.05):
        import threading

        self.address, self.host_header, self.path, self.pause = address, host_header, path, pause
        self.ok, self.failed, self.retried, self.latencies, self.errors = 0, 0, 0, [], []
        self.samples = []  # (seconds since the load began, latency, answered) per request
        self.began = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        import http.client
        import time

        conn = None
        while not self._stop.is_set():
            start = time.monotonic()
            retried = False
            while True:
                reused = conn is not None
                try:
                    if conn is None:
                        conn = https_connection(self.address, self.host_header)
                    conn.request("GET", self.path, headers={"Host": self.host_header})
                    response = conn.getresponse()
                    response.read()
                    good, detail = response.status < 500, f"HTTP {response.status}"
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                    conn = None
                    if reused and not retried:
                        retried = True
                        continue
                    good, detail = False, f"{exc.__class__.__name__}: {exc}"
                except (OSError, http.client.HTTPException) as exc:
                    good, detail = False, f"{exc.__class__.__name__}: {exc}"
                    conn = None
                break
            with self._lock:
                self.retried += retried
                self.latencies.append(time.monotonic() - start)
                self.samples.append((start - self.began, time.monotonic() - start, good))
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(detail)
            time.sleep(self.pause)

    def __enter__(self):
        import time

        self.began = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def p99(self) -> float:
        lat = sorted(self.latencies) or [0.0]
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))]

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = self.p99()
        return (f"{self.ok + self.failed} requests, {self.failed} failed, p99 {p99 * 1000:.0f} ms, "
                f"max {lat[-1] * 1000:.0f} ms"
                + (f", {self.retried} sent again on a new connection" if self.retried else "")
                + (f"; errors: {sorted(set(self.errors))[:5]}" if self.errors else ""))


MIGRATION_0003 = '''"""Add a table for note tags (an additive migration: the previous release keeps working).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("note_tags", sa.Column("note_id", sa.Integer, sa.ForeignKey("notes.id"), primary_key=True),
                    sa.Column("tag", sa.String(40), primary_key=True))


def downgrade():
    op.drop_table("note_tags")
'''


MIGRATION_0004 = '''"""Add a nullable summary column to notes (an expand-only migration).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("notes", sa.Column("summary", sa.Text(), nullable=True))


def downgrade():
    op.drop_column("notes", "summary")
'''


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def what_held_requests(host, load: Load) -> str:
    """For a load test's failure message: when the failed requests began (seconds into the load), and what
    PostgreSQL (log_lock_waits), nginx and the app logged about waiting then."""
    failed = [f"{start:.1f}s+{took:.1f}s" for start, took, good in load.samples if not good]
    logs = host.run("tail -n 15 /var/log/postgresql/postgresql-*-main.log; tail -n 5 /var/log/nginx/*error.log; "
                    "journalctl -q -n 20 --no-pager -u 'notesapp*' -p warning").stdout
    return f"failed requests began at {failed}; the logs' last lines:\n{logs}"


def make_app_history(repo: Path) -> dict[str, str]:
    """A git repository in `repo` with the reference app's history as a user's would grow: v1 (the app
    as committed here), v2 (a migration), v2b (a code-only change), broken (does not import), sick (never
    ready), sick-on-web2 (not ready on hosts whose name ends in web2) and sick-after-migrating (a
    migration, 0004, and code that is never ready). Returns tag -> commit."""
    import shlex

    history = {}
    subprocess.run(f"git -C {shlex.quote(str(REPO))} archive HEAD app | tar -x -C {shlex.quote(str(repo))}",
                   shell=True, check=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "tests@flask-deploy.test")
    git(repo, "config", "user.name", "tests")

    def commit(tag):
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", tag)
        git(repo, "tag", tag)
        history[tag] = git(repo, "rev-parse", "HEAD")

    commit("v1")
    (repo / "app/migrations/versions/0003_add_note_tags.py").write_text(MIGRATION_0003)
    commit("v2")
    views = repo / "app/notesapp/views.py"
    views.write_text(views.read_text() + "\n# v2b: a code-only change\n")
    commit("v2b")
    wsgi = repo / "app/wsgi.py"
    wsgi.write_text("import notesapp.this_module_does_not_exist  # noqa\n" + wsgi.read_text())
    commit("broken")
    health = repo / "app/notesapp/health.py"
    ready = 'return jsonify(status="ready", checks=checks)'
    for tag, condition in (("sick", "True"), ("sick-on-web2", 'socket.gethostname().endswith("web2")')):
        git(repo, "checkout", "-q", "v2b")
        text = health.read_text()
        assert ready in text
        health.write_text(text.replace(ready, f'if {condition}:\n        return jsonify(status="unavailable", '
                                              f'failing=["forced by the test"]), 503\n    {ready}'))
        commit(tag)
    git(repo, "checkout", "-q", "sick")
    (repo / "app/migrations/versions/0004_add_note_summary.py").write_text(MIGRATION_0004)
    commit("sick-after-migrating")
    git(repo, "checkout", "-q", "v2b")
    return history


def under_load(address: str, host_header: str, label: str, action, settle: float = 2):
    """Run `action()` while a Load runs against address (with `settle` seconds of load before and after),
    print the load's summary under `label`, and return (what action returned, the Load)."""
    import time

    with Load(address, host_header) as load:
        time.sleep(settle)
        result = action()
        time.sleep(settle)
    print(f"\n{label}: {load.summary()}")
    return result, load
