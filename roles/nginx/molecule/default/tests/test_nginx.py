"""What roles/nginx must leave on every host: one site in front of the app, TLS per Mozilla's
intermediate profile, and a configuration nginx never sees broken."""

import json
import re

import pytest

import testhelpers

RESOLVE = "--resolve site.test:443:127.0.0.1 --resolve site.test:80:127.0.0.1"


def curl(host, url, *args):
    """Status line, headers and body of one request made on the host (the certificate is self-signed)."""
    return host.run(f"curl -sS -k -i --max-time 10 {RESOLVE} {' '.join(args)} '{url}'")


def status(response):
    return int(response.stdout.split()[1])


def headers(response):
    head = response.stdout.replace("\r\n", "\n").split("\n\n", 1)[0].splitlines()[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


def body(response):
    return response.stdout.split("\r\n\r\n", 1)[1]


def test_nginx_enabled_and_active(host):
    assert host.service("nginx").is_enabled and host.service("nginx").is_running


def test_default_site_gone_ours_enabled(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    assert host.file("/etc/nginx/sites-available/default").exists   # the packaged file stays
    assert host.file("/etc/nginx/sites-enabled/site.conf").linked_to == "/etc/nginx/sites-available/site.conf"


@pytest.mark.parametrize("path", ["/etc/nginx/sites-available/site.conf", "/etc/nginx/conf.d/00-site-http.conf",
                                  "/etc/nginx/snippets/site-headers.conf", "/etc/nginx/snippets/site-proxy.conf"])
def test_files_carry_ansible_managed_header(host, path):
    assert "Ansible managed" in "".join(host.file(path).content_string.splitlines()[:3])


def test_http_redirects_to_https_except_the_challenge(host):
    for path in ("/", "/api/notes", "/static/app.css", "/anything?x=1"):
        r = curl(host, f"http://site.test{path}")
        assert status(r) == 301 and headers(r)["location"] == f"https://site.test{path}", r.stdout
    host.run("echo token-content > /var/www/acme/.well-known/acme-challenge/probe-token")
    r = curl(host, "http://site.test/.well-known/acme-challenge/probe-token")
    assert status(r) == 200 and body(r).strip() == "token-content"


def test_other_names_get_no_answer(host):
    """From anywhere but loopback, the default server closes the connection for any other Host (curl: empty
    reply, 52) and any other TLS server name or none (a refused handshake, 35, where nginx has
    ssl_reject_handshake; else the connection closed after it: 52, or 92 over HTTP/2). No status comes
    back. The site's own names still get their answers."""
    address = host.ansible.get_variables()["ansible_host"]
    at = f"curl -sS -k --max-time 10 --resolve evil.test:80:{address} --resolve evil.test:443:{address} " \
         f"--resolve site.test:443:{address}"
    assert host.run(f"{at} http://evil.test/").rc == 52
    assert host.run(f"curl -sS --max-time 10 http://{address}/").rc == 52
    for tls in (host.run(f"{at} -o /dev/null -w '%{{http_code}}' https://evil.test/"),
                host.run(f"curl -sS -k --max-time 10 -o /dev/null -w '%{{http_code}}' https://{address}/"),
                # the site's server name in the handshake, another Host in the request: no answer either
                host.run(f"{at} -o /dev/null -w '%{{http_code}}' -H 'Host: evil.test' https://site.test/")):
        assert tls.rc in (35, 52, 92) and tls.stdout == "000", (tls.rc, tls.stdout, tls.stderr)
    assert host.run(f"{at} -o /dev/null -w '%{{http_code}}' https://site.test/").stdout == "200"


def test_internal_paths_answer_loopback_and_the_allowed_only(host):
    """/metrics and /health/ready: loopback and nginx_internal_allow (the controller here) get the app's
    answer; the host's own bridge address, like any other client, gets 403; other paths stay public."""
    address = host.ansible.get_variables()["ansible_host"]
    from_bridge = f"curl -sS -k -o /dev/null -w '%{{http_code}}' --max-time 10 --resolve site.test:443:{address}"
    for path in ("/metrics", "/health/ready"):
        assert status(curl(host, f"https://site.test{path}")) == 200
        assert host.check_output(f"{from_bridge} https://site.test{path}") == "403"
        assert controller_status(address, path) == 200
    assert host.check_output(f"{from_bridge} https://site.test/health") == "200"


def controller_status(address, path):
    conn = testhelpers.https_connection(address, "site.test", timeout=10)
    conn.request("GET", path, headers={"Host": "site.test"})
    return conn.getresponse().status


def test_the_maintenance_page_spares_loopback_and_answers_when_the_app_is_down(host):
    """While the flag file exists, a client that is not loopback gets 503 with Retry-After and the page,
    on every path; loopback still reaches the app. With the app down, everyone gets the page with 502."""
    address = host.ansible.get_variables()["ansible_host"]
    from_bridge = f"curl -sS -k -i --max-time 10 --resolve site.test:443:{address} https://site.test/api/x"
    flag = "/var/www/maintenance/site/on"
    assert host.file("/var/www/maintenance/site/index.html").contains("Back in a moment")
    host.check_output(f"touch {flag}")
    try:
        res = host.run(from_bridge)
        assert status(res) == 503 and headers(res)["retry-after"] == "300", res.stdout
        assert "Back in a moment" in body(res) and "strict-transport-security" in headers(res)
        assert controller_status(address, "/static/app.css") == 503
        assert status(curl(host, "https://site.test/")) == 200
    finally:
        host.check_output(f"rm -f {flag}")
    assert status(host.run(from_bridge)) == 200
    host.check_output("systemctl stop echo-upstream")
    try:
        res = curl(host, "https://site.test/")
        assert status(res) == 502 and "Back in a moment" in body(res), res.stdout
    finally:
        host.check_output("systemctl start echo-upstream")
        host.run("for i in $(seq 50); do curl -sk --fail -o /dev/null --resolve site.test:443:127.0.0.1 "
                 "https://site.test/ && break; sleep 0.2; done")


def test_upstream_entry_point_takes_a_server_out_and_back(host):
    """tasks_from: upstream (roles/app's drain): `down` on the server's line and a reload, so nginx stops
    sending it requests (its only server here: 502, with the maintenance page); `up` puts it back; a
    second `up` changes nothing; a server the site does not have, or another state, is refused unchanged."""
    site = "/etc/nginx/sites-available/site.conf"
    playbook = "roles/nginx/molecule/default/upstream.yml"

    def mark(server, state):
        return testhelpers.run_playbook(playbook, {"nginx_upstream_server": server, "nginx_upstream_state": state})

    before = host.file(site).content_string
    try:
        rc, out = mark("127.0.0.1:8001", "down")
        assert rc == 0, out[-3000:]
        assert "    server 127.0.0.1:8001 down max_fails=3 fail_timeout=10s;" in host.file(site).content_string
        res = curl(host, "https://site.test/")
        assert status(res) == 502 and "Back in a moment" in body(res), res.stdout
        rc, out = mark("127.0.0.1:8001", "up")
        assert rc == 0, out[-3000:]
        assert host.file(site).content_string == before
        assert status(curl(host, "https://site.test/")) == 200
        rc, out = mark("127.0.0.1:8001", "up")
        assert rc == 0 and re.search(r"^\S+\s+: ok=\d+\s+changed=0 ", out, re.MULTILINE), out[-3000:]
        rc, out = mark("127.0.0.1:8002", "down")
        assert rc != 0 and "has no upstream server 127.0.0.1:8002" in out, out[-3000:]
        rc, out = mark("127.0.0.1:8001", "drained")
        assert rc != 0 and "nginx_upstream_state" in out, out[-3000:]
        assert host.file(site).content_string == before
    finally:
        if host.file(site).content_string != before:
            mark("127.0.0.1:8001", "up")


def test_proxy_headers_for_proxyfix(host):
    r = curl(host, "https://site.test/hello?x=1")
    assert status(r) == 200
    seen = json.loads(body(r))
    assert seen["path"] == "/hello?x=1"
    assert seen["headers"]["host"] == "site.test"
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-host"] == "site.test"
    assert len(seen["headers"]["x-request-id"]) == 32


def test_access_log_is_json_with_the_request_id_the_upstream_got(host):
    """One JSON object per request in the site's access log, carrying the id the upstream received as
    X-Request-ID: one id finds the request in nginx's log and in the app's."""
    r = curl(host, "https://site.test/hello?logged=1", "-A 'agent \"quoted\"'")  # escaped in the JSON
    sent = json.loads(body(r))["headers"]["x-request-id"]
    lines = host.file("/var/log/nginx/site.access.log").content_string.splitlines()
    entries = [json.loads(line) for line in lines if sent in line]
    assert len(entries) == 1, lines[-5:]
    entry = entries[0]
    assert entry["request_id"] == sent and entry["uri"] == "/hello?logged=1" and entry["status"] == 200
    assert entry["agent"] == 'agent "quoted"' and entry["upstream_status"] == "200"


def test_security_headers_and_hsts_and_no_version(host):
    h = headers(curl(host, "https://site.test/"))
    assert h["strict-transport-security"] == "max-age=63072000"
    assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "strict-origin-when-cross-origin"
    assert h["server"] == "nginx"


def test_static_files_served_by_nginx_with_cache_headers_and_gzip(host):
    r = curl(host, "https://site.test/static/app.css", "-H 'Accept-Encoding: gzip'", "-o /dev/null -D -")
    h = headers(r)
    assert status(r) == 200 and h["content-type"] == "text/css"
    assert h["cache-control"] == "max-age=2592000"
    assert "expires" in h and h["content-encoding"] == "gzip"
    assert h["strict-transport-security"] == "max-age=63072000" and h["x-frame-options"] == "DENY"


def test_body_size_limit(host):
    r = host.run(f"head -c 2000000 /dev/zero | curl -sS -k -o /dev/null -w '%{{http_code}}' {RESOLVE} "
                 "--data-binary @- https://site.test/upload")
    assert r.stdout == "413"


def test_api_rate_limited_per_client(host):
    r = host.run(f"for i in $(seq 30); do curl -sS -k -o /dev/null -w '%{{http_code}}\\n' {RESOLVE} "
                 "https://site.test/api/notes; done")
    codes = r.stdout.split()
    assert "200" in codes and "429" in codes, codes
    r = host.run(f"for i in $(seq 30); do curl -sS -k -o /dev/null -w '%{{http_code}}\\n' {RESOLVE} "
                 "https://site.test/other; done")
    assert set(r.stdout.split()) == {"200"}


@pytest.mark.parametrize("version, accepted", [("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)])
def test_tls_protocols(host, version, accepted):
    r = host.run(f"echo | openssl s_client -connect 127.0.0.1:443 -servername site.test {version} 2>&1")
    assert ("BEGIN CERTIFICATE" in r.stdout or "Server certificate" in r.stdout) == accepted, r.stdout[-800:]


def test_no_ocsp_stapling(host):
    assert "ssl_stapling" not in host.file("/etc/nginx/sites-available/site.conf").content_string


def test_invalid_config_fails_with_nginx_error_and_keeps_the_old_one():
    """A value nginx rejects: the play fails with nginx's own message, the files go back, nginx serves on.
    (No `host` fixture: one converge covers all platforms.)"""
    hosts = testhelpers.all_hosts()
    before = [h.file("/etc/nginx/sites-available/site.conf").content_string for h in hosts]
    pids = [h.run("cat /run/nginx.pid").stdout for h in hosts]
    rc, output, _ = testhelpers.converge_with({"nginx_proxy_read_timeout": "forever"})
    assert rc != 0
    assert "nginx rejected the new configuration" in output and '"proxy_read_timeout" directive invalid value' in output, output[-3000:]
    for h, old, pid in zip(hosts, before, pids):
        assert h.file("/etc/nginx/sites-available/site.conf").content_string == old
        assert h.file("/etc/nginx/snippets/site-proxy.conf").content_string.count("forever") == 0
        assert h.run("nginx -t").rc == 0
        assert h.run("cat /run/nginx.pid").stdout == pid
        assert status(curl(h, "https://site.test/")) == 200


@pytest.mark.parametrize("extra, message", [
    ({"nginx_server_names": ["bad domain"]}, "not valid: bad domain"),
    ({"nginx_upstream_servers": ["127.0.0.1"]}, "nginx_upstream_servers entry 127.0.0.1 is neither"),
    ({"nginx_static_root": "/srv/site/static"}, 'must be an absolute directory ending in "/"'),
    ({"nginx_internal_allow": ["monitoring.example.com"]}, "nginx_internal_allow entries are addresses"),
])
def test_bad_input_stops_before_any_change(extra, message):
    testhelpers.assert_refused_before_any_change(extra, message)
