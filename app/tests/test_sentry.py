"""SENTRY_DSN set (the deploy passes vault_sentry_dsn into the service's environment): an unhandled error
reaches the error tracker, named with the release, here a stand-in on loopback that records what it gets."""

from __future__ import annotations

import gzip
import http.server
import json
import threading

import pytest


class StandIn(http.server.BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        StandIn.received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    StandIn.received = []
    yield server.server_address[1]
    server.shutdown()
    import sentry_sdk

    sentry_sdk.init()  # no DSN: the other tests report nowhere


def test_an_unhandled_error_reaches_the_error_tracker_with_the_release(make_app, stand_in):
    import sentry_sdk

    app = make_app(SENTRY_DSN=f"http://public@127.0.0.1:{stand_in}/1", RELEASE_ID="20261130T120000Z-abcdef12")

    @app.get("/boom")
    def boom():
        raise RuntimeError("the error the tracker must get")

    with pytest.raises(RuntimeError):  # testing mode propagates it after the app has reported it
        app.test_client().get("/boom")
    sentry_sdk.flush(timeout=10)
    events = [json.loads(line) for body in StandIn.received for line in body.splitlines()
              if line.startswith(b"{") and b'"exception"' in line]
    assert len(events) == 1, StandIn.received
    assert events[0]["release"] == "20261130T120000Z-abcdef12"
    assert events[0]["exception"]["values"][-1]["value"] == "the error the tracker must get"
