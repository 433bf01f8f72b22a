"""UpstreamSession against a real backend (stdlib http.server in a thread) and a real EventLoop,
with a stand-in for the websocket Session (the end-to-end tests are in tests/integration)."""

import http.server
import socket
import socketserver
import threading
import time

import pytest
from wsproto.events import BytesMessage, TextMessage

from ngxws.core.connection import ConnectionPool
from ngxws.core.log import DEBUG, ErrorLog
from ngxws.core.loop import Event, EventLoop
from ngxws.http.client import parse_url
from ngxws.websocket import upstream as up, wsoh
from ngxws.websocket.upstream import UpstreamConf, UpstreamModule
from ..core.fakes import MemorySink


class Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        srv = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        events = wsoh.decode(body)
        srv.seen.append((self.path, self.headers, events))
        if srv.delay:
            time.sleep(srv.delay)
        if srv.script is not None and not (len(events) == 1 and events[0][0] == "OPEN"
                                           and not srv.script_open):
            status, headers, data = srv.script
            self.send_response(status)
            for n, v in headers:
                self.send_header(n, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        out = []
        headers = [("Content-Type", wsoh.CONTENT_TYPE)]
        status = 200
        for name, content in events:
            if name == "OPEN":
                cookie = self.headers.get("Cookie", "")
                if "user=" not in cookie:
                    status = 403
                    break
                user = cookie.split("user=", 1)[1]
                headers.append(("Set-Meta-User", user))
                headers.append(("Sec-WebSocket-Protocol", "chat"))
                headers.append(("X-Backend", "yes"))
                out += [("OPEN", None), ("TEXT", b"welcome " + user.encode())]
            elif name == "TEXT":
                if content == b"who":
                    out.append(("TEXT", self.headers.get("Meta-User", "-").encode()))
                elif content == b"bye":
                    out.append(("CLOSE", wsoh.close_content(4001, "bye")))
                elif content == b"drop":
                    out.append(("DISCONNECT", None))
                elif content == b"500":
                    status = 500
                else:
                    out.append(("TEXT", b"echo:" + content))
            elif name == "BINARY":
                out.append(("BINARY", content[::-1]))
        if status != 200:
            data = b"forbidden"
            headers = [("Content-Type", "text/plain")]
        else:
            data = wsoh.encode(out)
        self.send_response(status)
        for n, v in headers:
            self.send_header(n, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class BackendServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout tests) is expected

    def __init__(self):
        self.seen = []
        self.delay = 0
        #: (status, headers, body) to answer instead, after OPEN (or to OPEN too: script_open)
        self.script = None
        self.script_open = False
        super().__init__(("127.0.0.1", 0), Backend)


@pytest.fixture
def backend():
    srv = BackendServer()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


class FakeSession:
    """The part of websocket.session.Session that the upstream uses."""

    def __init__(self, conn, sid="sid-1"):
        self.id = sid
        self.conn = conn
        self.push_urls = "http://%s@127.0.0.1:9999/ws" % sid
        self.sent = []
        self.closed = None
        self.finished = False
        self.upstream = None

    def send_message(self, data):
        self.sent.append(data)

    def close(self, code=1000, reason=""):
        if self.closed is None:
            self.closed = (code, reason)

    def _finish(self, code=None, reason="", by=None):
        self.finished = True


class FakeRequest:
    def __init__(self, conn, conf, headers, args=""):
        self.conn = conn
        self._conf = conf
        self.headers = headers
        self.args = args

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def loc_conf(self, module):
        assert module == up.MODULE_NAME
        return self._conf


class Env:
    def __init__(self):
        self.sink = MemorySink()
        self.log = ErrorLog([(self.sink, DEBUG)])
        self.loop = EventLoop(self.log)
        self.pool = ConnectionPool(self.loop, self.log, 100)
        self.tick = Event(self._tick, None)
        self.loop.add_timer(self.tick, 20)
        self.socks = []

    def _tick(self, ev):
        ev.timedout = False
        self.loop.add_timer(ev, 20)

    def conn(self):
        a, b = socket.socketpair()
        self.socks += [a, b]
        return self.pool.get(a, ("127.0.0.1", 5555))

    def run_until(self, cond, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, "condition not met in time"
            self.loop.run_once()

    def errors(self):
        return [line for line in self.sink.lines if "[error]" in line]


@pytest.fixture
def env():
    e = Env()
    yield e
    for s in e.socks:
        s.close()


def make_conf(url, **kw):
    conf = UpstreamConf(url=parse_url(url))
    UpstreamModule().merge_loc_conf(UpstreamConf(), conf)
    for k, v in kw.items():
        setattr(conf, k, v)
    return conf


HEADERS = [(b"host", b"example.com"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
           (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13"),
           (b"sec-websocket-protocol", b"chat, superchat"), (b"cookie", b"user=alice"),
           (b"meta-user", b"mallory"), (b"x-custom", b"1")]


def open_session(env, conf, headers=HEADERS, args="room=1"):
    conn = env.conn()
    session = FakeSession(conn)
    us = up.create(session, FakeRequest(conn, conf, headers, args))
    session.upstream = us
    result = []
    us.open(lambda h, p: result.append(("accept", h, p)),
            lambda s, h, b: result.append(("refuse", s, h, b)))
    env.run_until(lambda: result)
    return session, us, result[0]


def test_open_accepted(env, backend):
    conf = make_conf("http://127.0.0.1:%d/app" % backend.server_address[1],
                     headers=[(b"x-secret", b"s3")])
    session, us, result = open_session(env, conf)
    kind, headers, subprotocol = result
    assert kind == "accept"
    assert subprotocol == b"chat"
    assert (b"X-Backend", b"yes") in headers
    names = [n.lower() for n, _ in headers]
    assert b"set-meta-user" not in names and b"content-type" not in names
    assert session.sent == ["welcome alice"]
    assert us.state is up.ACTIVE
    path, h, events = backend.seen[0]
    assert path == "/app?room=1"
    assert events == [("OPEN", None)]
    assert h["Connection-Id"] == "sid-1"
    assert h["Content-Type"] == "application/websocket-events"
    assert h["Push-Url"] == "http://sid-1@127.0.0.1:9999/ws"
    assert h["Cookie"] == "user=alice"
    assert h["X-Secret"] == "s3"
    assert h["X-Custom"] == "1"
    assert h["Sec-WebSocket-Protocol"] == "chat, superchat"
    assert h.get("Meta-User") is None, "a client's Meta-* header must never be relayed"
    assert h.get("Upgrade") is None


def test_open_refused(env, backend):
    conf = make_conf("http://127.0.0.1:%d/app" % backend.server_address[1])
    headers = [(n, v) for n, v in HEADERS if n != b"cookie"]
    session, us, result = open_session(env, conf, headers)
    assert result[0] == "refuse"
    assert result[1] == 403
    assert result[3] == b"forbidden"
    assert (b"Content-Type", b"text/plain") in result[2]
    assert us.state is up.DONE


def test_meta_round_trip_and_replies(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    us.on_message(session, TextMessage(data="who"))
    env.run_until(lambda: len(session.sent) == 2)
    assert session.sent[1] == "alice"
    assert backend.seen[1][1]["Meta-User"] == "alice"
    us.on_message(session, BytesMessage(data=b"\x01\x02"))
    env.run_until(lambda: len(session.sent) == 3)
    assert session.sent[2] == b"\x02\x01"


def test_burst_is_batched_in_order(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    for i in range(1000):
        us.on_message(session, TextMessage(data="m%d" % i))
    env.run_until(lambda: len(session.sent) == 1001)
    assert session.sent[1:] == ["echo:m%d" % i for i in range(1000)]
    texts = [c for _, _, events in backend.seen[1:] for n, c in events]
    assert texts == [b"m%d" % i for i in range(1000)]
    assert len(backend.seen) - 1 < 1000
    assert len(backend.seen) - 1 <= 3


def test_close_forwarded_with_code(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    us.on_message(session, TextMessage(data="last"))
    us.on_close(session, 4002, "leaving")
    env.run_until(lambda: us.state is up.DONE)
    events = [e for _, _, evs in backend.seen for e in evs]
    assert events[-2:] == [("TEXT", b"last"), ("CLOSE", b"\x0f\xa2leaving")]
    assert session.sent == ["welcome alice"], "nothing is delivered to a client that left"


def test_unclean_leave_sends_disconnect(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    us.on_close(session, 1006, "")
    env.run_until(lambda: us.state is up.DONE)
    assert backend.seen[-1][2] == [("DISCONNECT", None)]


def test_backend_close_and_disconnect_events(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    us.on_message(session, TextMessage(data="bye"))
    env.run_until(lambda: session.closed)
    assert session.closed == (4001, "bye")
    session2, us2, _ = open_session(env, conf)
    us2.on_message(session2, TextMessage(data="drop"))
    env.run_until(lambda: session2.finished)
    assert us2.state is up.DONE


def test_backend_5xx_closes_1011(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    us.on_message(session, TextMessage(data="500"))
    env.run_until(lambda: session.closed)
    assert session.closed[0] == 1011
    assert any("websocket upstream failed: upstream answered 500" in line for line in env.errors())


def test_backend_down_retries_then_refuses_and_closes(env):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    conf = make_conf("http://127.0.0.1:%d/" % port)
    started = time.monotonic()
    session, us, result = open_session(env, conf)
    assert result[:2] == ("refuse", 502)
    # the first attempt and 3 retries, after backoffs of 100 + 200 + 400 ms (less jitter)
    assert time.monotonic() - started > 0.6
    assert any("connect() failed (111: Connection refused)" in line for line in env.errors())


def test_backend_goes_away_after_open(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    backend.shutdown()
    backend.server_close()
    conf.client.close_idle()
    us.on_message(session, TextMessage(data="anyone?"))
    env.run_until(lambda: session.closed, timeout=5)
    assert session.closed[0] == 1011
    assert any("Connection refused" in line for line in env.errors())


def test_queue_overflow_closes_1008(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1], queue_size=1000)
    session, us, _ = open_session(env, conf)
    backend.delay = 0.3
    us.on_message(session, TextMessage(data="first"))
    for i in range(50):
        us.on_message(session, TextMessage(data="x" * 100))
    assert session.closed == (1008, "upstream queue full")
    assert any("websocket_pass_queue_size 1000" in line for line in env.errors())
    env.run_until(lambda: us.state is up.DONE)
    events = [e for _, _, evs in backend.seen for e in evs]
    assert events[-1] == ("CLOSE", wsoh.close_content(1008, "queue full"))


def test_conf_merge_defaults():
    parent = UpstreamConf()
    child = UpstreamConf()
    UpstreamModule().merge_loc_conf(parent, child)
    assert child.url is None
    assert child.connect_timeout == 60_000 and child.read_timeout == 60_000
    assert child.keepalive == 64 and child.queue_size == 256 * 1024 and child.headers == []


EV = [("Content-Type", "application/websocket-events")]


@pytest.mark.parametrize("script, error", [
    ((200, EV, b"TEXT 2\r\nhi\r\n"), "upstream accepted the handshake without an OPEN event"),
    ((200, EV, b""), "upstream accepted the handshake without an OPEN event"),
    ((200, [("Content-Type", "text/html")], b"<p>hi"),
     'upstream sent "Content-Type: text/html", expected "application/websocket-events"'),
    ((200, EV, b"OPEN\r\nBOGUS\r\n"), 'upstream sent invalid events: unknown event "BOGUS" at byte 6'),
    ((200, EV + [("Sec-WebSocket-Protocol", "other")], b"OPEN\r\n"),
     'upstream chose subprotocol "other" the client did not offer'),
])
def test_bad_open_answers_refuse_502(env, backend, script, error):
    backend.script = script
    backend.script_open = True
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, result = open_session(env, conf)
    assert result[:2] == ("refuse", 502)
    assert any(error in line for line in env.errors()), env.errors()


@pytest.mark.parametrize("script, code, error", [
    ((403, [], b"no"), 1008, "upstream answered 403"),
    ((503, [], b""), 1011, "upstream answered 503"),
    ((200, EV, b"TEXT 5\r\nhi\r\n"), 1011, "upstream sent invalid events: truncated TEXT event"),
    ((200, EV, b"TEXT 1\r\n\xff\r\n"), 1011, "upstream sent a TEXT event that is not UTF-8"),
    ((200, EV, b"CLOSE 1\r\n\x03\r\n"), 1011, "CLOSE event content of 1 byte"),
])
def test_bad_answers_close_the_client(env, backend, script, code, error):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    backend.script = script
    us.on_message(session, TextMessage(data="x"))
    env.run_until(lambda: session.closed)
    assert session.closed[0] == code
    assert any(error in line for line in env.errors()), env.errors()
    assert us.state is up.DONE


def test_empty_2xx_answer_is_fine_after_open(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    backend.script = (204, [], b"")
    us.on_message(session, TextMessage(data="x"))
    env.run_until(lambda: us.req is None)
    assert session.closed is None and us.state is up.ACTIVE


def test_read_timeout_closes_1011(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1], read_timeout=200)
    session, us, _ = open_session(env, conf)
    conf.client.read_timeout = 200
    backend.delay = 1
    us.on_message(session, TextMessage(data="x"))
    env.run_until(lambda: session.closed)
    assert session.closed[0] == 1011
    assert len([s for s in backend.seen if s[2] == [("TEXT", b"x")]]) == 1, "never replayed"
    assert any("upstream timed out" in line for line in env.errors())


def test_cancel_during_open_sends_disconnect(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    conn = env.conn()
    session = FakeSession(conn)
    us = up.create(session, FakeRequest(conn, conf, HEADERS))
    called = []
    us.open(lambda *a: called.append(a), lambda *a: called.append(a))
    us.cancel()
    env.run_until(lambda: us.state is up.DONE)
    assert called == []
    assert [e for _, _, evs in backend.seen for e in evs] == [("OPEN", None), ("DISCONNECT", None)]


def test_shutdown_closes_idle_and_waits_for_busy(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    session, us, _ = open_session(env, conf)
    up._CLIENTS[:] = [conf.client]  # this worker's clients: only this test's
    assert len(conf.client.idle) == 1 and env.pool.used == 2
    module = UpstreamModule()
    assert module.shutdown(None, True) is False
    assert conf.client.idle == [] and env.pool.used == 1
    backend.delay = 0.3
    us.on_message(session, TextMessage(data="x"))
    assert module.shutdown(None, True) is True
    env.run_until(lambda: len(session.sent) == 2)
    assert module.shutdown(None, True) is False


def test_client_that_does_not_read_holds_requests_back(env, backend):
    class Loc:
        send_buffer_size = 100

    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1], queue_size=2000)
    session, us, _ = open_session(env, conf)
    session.loc = Loc()
    session.queued = 500           # the client is not reading
    us.on_message(session, TextMessage(data="a"))
    us.on_message(session, TextMessage(data="b"))
    env.run_until(lambda: len(session.sent) == 2)    # "a" was in flight already
    deadline = time.monotonic() + 0.3
    env.run_until(lambda: time.monotonic() > deadline)
    assert len(backend.seen) == 2, "no request while the client does not read"
    session.queued = 0
    env.run_until(lambda: len(session.sent) == 3)
    assert session.sent[1:] == ["echo:a", "echo:b"]
    session.queued = 500
    for i in range(30):
        us.on_message(session, TextMessage(data="x" * 100))
    assert session.closed is None or session.closed[0] == 1008
    env.run_until(lambda: session.closed)
    assert session.closed == (1008, "upstream queue full")


@pytest.mark.parametrize("value, prefix", [
    (b"grip", b"m:"),
    (b"grip; message-prefix=\"\"", b""),
    (b"permessage-deflate, grip; message-prefix=\"x-\"", b"x-"),
    (b"GRIP;message-prefix=p", b"p"),
    (b"permessage-deflate", None),
])
def test_grip_prefix(value, prefix):
    assert up._grip_prefix(value) == prefix


def test_grip_extension_strips_prefix_and_ignores_control(env, backend):
    conf = make_conf("http://127.0.0.1:%d/" % backend.server_address[1])
    backend.script_open = True
    backend.script = (200, EV + [("Sec-WebSocket-Extensions", "grip")],
                      wsoh.encode([("OPEN", None), ("TEXT", b"m:hello"),
                                   ("TEXT", b'c:{"type": "subscribe", "channel": "x"}'),
                                   ("TEXT", b"unprefixed"), ("BINARY", b"m:\x00\x01")]))
    session, us, result = open_session(env, conf)
    assert result[0] == "accept"
    assert all(n.lower() != b"sec-websocket-extensions" for n, _ in result[1])
    assert session.sent == ["hello", b"\x00\x01"]
    assert backend.seen[0][1]["Sec-WebSocket-Extensions"] == "grip"
