"""The push port's direct route (websocket/module.py _DirectRoute) against the HTTP path.

Each request goes, in one write, to a push server built as open_push_ports builds it, once
with the direct route installed and once without; the backend must get the same bytes back
(the Date line aside), the client the same frames, and stub_status the same request count.
"""

import re
import socket
from types import SimpleNamespace

import pytest

from ngxws.core.connection import ConnectionPool
from ngxws.core.log import DEBUG, INFO, ErrorLog
from ngxws.http.core_module import LocationConf
from ngxws.http.stub_status import REQUESTS, stats
from ngxws.websocket.module import _install_direct_route, _PushConfs, push_handler
from ngxws.websocket.session import REGISTRY, Location, Session

from ...helpers.http import Harness


def ws_conf():
    return SimpleNamespace(ping_interval=300000, idle_interval=360000, max_message_size=64,
                           send_buffer_size=64 * 1024, slow_client="reject")


class PushPort:
    def __init__(self, direct, keepalive_requests=1000):
        self.conf = ws_conf()
        #: requests that reached the HTTP path's content handler
        self.handled = []
        loc = LocationConf(handler=lambda r: (self.handled.append(r.method), push_handler(r)),
                           client_max_body_size=64,
                           keepalive_requests=keepalive_requests, keepalive_timeout=75000)
        self.http = Harness({"/ws": loc})
        # info, not debug: the route leaves debug-logged connections to the HTTP path
        h = self.http
        h.log = ErrorLog([(h.sink, INFO)])
        h.loop.log = h.log
        h.pool = ConnectionPool(h.loop, h.log, 16)
        loc.confs = _PushConfs(self.conf)
        #: requests the direct route ran
        self.routed = 0
        if direct:
            _install_direct_route(self.http.ls.servers, {"/ws": loc})
            srv = self.http.ls.servers.wildcard.default
            run = srv.direct

            def counted(hc, data):
                ran = run(hc, data)
                self.routed += ran
                return ran
            srv.direct = counted
        self.direct = direct
        h = self.http
        server_sock, self.peer = socket.socketpair()
        server_sock.setblocking(False)
        self.peer.settimeout(0)
        conn = h.pool.get(server_sock, ("127.0.0.1", 5555))
        self.session = Session(Location(self.conf, h.loop, h.log, "/ws"))
        self.session.attach(conn, b"", b"", None)
        self.frames = b""

    def client_bytes(self):
        try:
            while True:
                data = self.peer.recv(65536)
                if not data:
                    break
                self.frames += data
        except BlockingIOError:
            pass
        return self.frames

    def close(self):
        self.http.close()
        self.peer.close()


def exchange(direct, raws, keepalive_requests=1000):
    """Send each raw request in one write on one connection; the answers and the client's bytes."""
    REGISTRY.clear()
    port = PushPort(direct, keepalive_requests)
    try:
        sid = port.session.id
        c, conn = port.http.connect()
        before = stats.totals()[REQUESTS]
        answers = []
        for raw in raws:
            c.sendall(raw.replace(b"ID", sid.encode()).replace(
                b"BASIC", __import__("base64").b64encode(sid.encode() + b":")))
            out = port.http.read(c, lambda b: b.endswith((b"\r\n\r\n", b"</html>\r\n", b"<EOF>")),
                                 n=50)
            answers.append(re.sub(rb"Date: [^\r]*\r\n", b"", out))
        port.http.spin(lambda: False, 2)
        exchange.handled = port.handled
        exchange.routed = port.routed
        return answers, port.client_bytes(), stats.totals()[REQUESTS] - before, conn.requests
    finally:
        port.close()
        REGISTRY.clear()


PUSH = b"POST /ws HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nAuthorization: Basic BASIC\r\n"

CASES = {
    "text": PUSH + b"Content-Length: 5\r\n\r\nhello",
    "binary": PUSH + b"Content-Type: application/octet-stream\r\nContent-Length: 2\r\n\r\n\xff\x00",
    "utf8": PUSH + b"Content-Length: 6\r\n\r\nh\xc3\xa9llo",
    "bad utf8": PUSH + b"Content-Length: 2\r\n\r\n\xff\xfe",
    "unknown id": PUSH.replace(b"BASIC", b"eHl6Og==") + b"Content-Length: 1\r\n\r\nx",
    "bad basic": PUSH.replace(b"BASIC", b"!!!") + b"Content-Length: 1\r\n\r\nx",
    "query id": b"POST /ws?id=ID HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
    "get": b"GET /ws HTTP/1.1\r\nHost: a\r\nAuthorization: Basic BASIC\r\n\r\n",
    "options": b"OPTIONS /ws HTTP/1.1\r\nHost: a\r\n\r\n",
    "http/1.0": PUSH.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Content-Length: 1\r\n\r\nx",
    "close": PUSH + b"Connection: close\r\nContent-Length: 1\r\n\r\nx",
    "keep-alive": PUSH + b"Connection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx",
    "two lengths": PUSH + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "two hosts": PUSH + b"Host: b\r\nContent-Length: 1\r\n\r\nx",
    "two auths": PUSH + b"Authorization: Basic eHl6Og==\r\nContent-Length: 1\r\n\r\nx",
    "expect": PUSH + b"Expect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    "too large": PUSH + b"Content-Length: 65\r\n\r\n" + b"x" * 65,
    "no host": b"POST /ws HTTP/1.1\r\nAuthorization: Basic BASIC\r\nContent-Length: 1\r\n\r\nx",
    "bad host": PUSH.replace(b"127.0.0.1:9000", b"a..b") + b"Content-Length: 1\r\n\r\nx",
    "bare lf": PUSH.replace(b"\r\n", b"\n") + b"Content-Length: 1\n\nx",
    "chunked": PUSH + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    "prefix": b"POST /ws/x HTTP/1.1\r\nHost: a\r\nAuthorization: Basic BASIC\r\nContent-Length: 1\r\n\r\nx",
    "other path": b"POST /other HTTP/1.1\r\nHost: a\r\nAuthorization: Basic BASIC\r\nContent-Length: 1\r\n\r\nx",
    "no length": PUSH + b"\r\n",
    "empty body": PUSH + b"Content-Length: 0\r\n\r\n",
    "spaces": b"POST /ws HTTP/1.1\r\nHost:  a \r\nAuthorization:  Basic BASIC \r\nContent-Length:  1 \r\n\r\nx",
    "obs-fold": PUSH + b"X: a\r\n b\r\nContent-Length: 1\r\n\r\nx",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_direct_route_answers_as_the_http_path(name):
    raws = [CASES[name], CASES["text"]]
    direct = exchange(True, raws)
    routed = exchange.routed
    assert direct == exchange(False, raws)
    # the shapes the route is for are run by it, the rest by the HTTP path (which closes the
    # connection after some of them, so that the second push never comes)
    taken = name in ("text", "binary", "utf8", "keep-alive", "spaces", "empty body")
    closes = b"Connection: close" in direct[0][0]
    assert routed == taken + (not closes)


def test_direct_route_runs_the_common_push():
    answers, frames, counted, requests = exchange(True, [CASES["text"], CASES["binary"]])
    assert exchange.handled == [] and exchange.routed == 2 and counted == 2 and requests == 2
    assert all(a.startswith(b"HTTP/1.1 204 No Content\r\n") for a in answers)
    assert b"Connection: keep-alive\r\n" in answers[1]
    assert frames.endswith(b"\x81\x05hello\x82\x02\xff\x00")
    # and without it, the same through the content handler
    assert exchange(False, [CASES["text"], CASES["binary"]])[1] == frames
    assert exchange.handled == ["POST", "POST"]


def test_keepalive_requests_closes_as_the_http_path():
    raws = [CASES["text"]] * 3
    direct = exchange(True, raws, keepalive_requests=3)
    assert direct == exchange(False, raws, keepalive_requests=3)
    assert b"Connection: keep-alive" in direct[0][1] and b"Connection: close" in direct[0][2]
    assert direct[3] == 3


def test_debug_log_goes_the_http_path():
    # a connection with debug logging gets the HTTP path's whole story in its log
    REGISTRY.clear()
    port = PushPort(True)
    try:
        h = port.http
        h.log = ErrorLog([(h.sink, DEBUG)])
        h.pool = ConnectionPool(h.loop, h.log, 16)
        c, _ = h.connect()
        c.sendall(CASES["text"].replace(b"BASIC", __import__("base64").b64encode(
            port.session.id.encode() + b":")))
        assert h.read(c, lambda b: b.endswith(b"\r\n\r\n")).startswith(b"HTTP/1.1 204 ")
        assert port.handled == ["POST"] and "websocket push id=" in h.sink.text()
    finally:
        port.close()
        REGISTRY.clear()


def test_slow_client_goes_the_http_path():
    # a client over its send buffer: the route leaves the push to push_handler (429)
    REGISTRY.clear()
    port = PushPort(True)
    try:
        port.session.queued = port.conf.send_buffer_size + 1
        port.session.out = [b""]
        c, _ = port.http.connect()
        c.sendall(CASES["text"].replace(b"BASIC", __import__("base64").b64encode(
            port.session.id.encode() + b":")))
        out = port.http.read(c, lambda b: b"</html>" in b)
        assert out.startswith(b"HTTP/1.1 429 ")
    finally:
        port.close()
        REGISTRY.clear()
