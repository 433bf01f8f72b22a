import http.server
import socket
import socketserver
import threading
import time

import pytest

from ngxws.core.connection import ConnectionPool
from ngxws.core.log import DEBUG, ErrorLog
from ngxws.core.loop import Event, EventLoop
from ngxws.http.client import HttpClient, URLError, parse_url

from ..core.fakes import MemorySink


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        srv = self.server
        srv.peers.append(self.client_address)
        srv.requests.append((self.path, self.headers, body))
        if self.path == "/slow":
            time.sleep(float(self.headers.get("X-Delay", "1")))
        if self.path == "/big":
            body = b"x" * 5000
        self.send_response(201 if self.path == "/created" else 200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-Echo", self.headers.get("X-Test", ""))
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TCPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout tests) is expected

    def __init__(self, addr, family=socket.AF_INET):
        self.address_family = family
        self.peers = []
        self.requests = []
        super().__init__(addr, Handler)


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path):
        self.peers = []
        self.requests = []
        super().__init__(path, Handler)


def serve(srv):
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    return srv


@pytest.fixture
def server():
    srv = serve(TCPServer(("127.0.0.1", 0)))
    yield srv
    srv.shutdown()
    srv.server_close()


class Env:
    def __init__(self):
        self.sink = MemorySink()
        self.log = ErrorLog([(self.sink, DEBUG)])
        self.loop = EventLoop(self.log)
        self.pool = ConnectionPool(self.loop, self.log, 100)
        # a heartbeat so that run_once never sleeps longer than 20 ms in these tests
        self.tick = Event(self._tick, None)
        self.loop.add_timer(self.tick, 20)

    def _tick(self, ev):
        ev.timedout = False
        self.loop.add_timer(ev, 20)

    def client(self, url, **kw):
        return HttpClient(self.loop, self.pool, parse_url(url), self.log, **kw)

    def run_until(self, cond, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, "condition not met in time"
            self.loop.run_once()


@pytest.fixture
def env():
    return Env()


def collect():
    done = []
    return done, done.append


def test_post_and_response(env, server):
    client = env.client("http://127.0.0.1:%d/base" % server.server_address[1])
    done, handler = collect()
    req = client.request(b"POST", b"/echo?x=1", [(b"x-test", b"hello")], b"payload", handler)
    assert done == []
    env.run_until(lambda: done)
    assert done == [req]
    assert req.error is None
    assert req.status == 200
    assert req.response_body == b"payload"
    assert req.header(b"x-echo") == b"hello"
    path, headers, body = server.requests[0]
    assert path == "/echo?x=1"
    assert headers["Host"] == "127.0.0.1:%d" % server.server_address[1]
    assert headers["Content-Length"] == "7"
    assert body == b"payload"


def test_keepalive_reuses_connection(env, server):
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1], keepalive=4)
    for i in range(3):
        done, handler = collect()
        client.request(b"POST", b"/", [], b"%d" % i, handler)
        env.run_until(lambda: done)
        assert done[0].status == 200 and done[0].response_body == b"%d" % i
    assert len(set(server.peers)) == 1
    assert len(client.idle) == 1


def test_quick_acks_after_each_send_and_read(env, server, monkeypatch):
    # Linux's quick-ACK mode does not stick, so it is asked for again after the request is sent
    # and after every read: a backend that writes head and body apart without TCP_NODELAY
    # (http.server) would otherwise wait for our delayed ACK of the head, ~40 ms per answer.
    from ngxws.http import client as client_mod
    real = client_mod._quickack
    calls = []

    def quickack(sock):
        real(sock)
        # getsockopt(TCP_QUICKACK) is 1 while the socket is in quick-ACK mode
        calls.append((sock.fileno(), sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK)))

    monkeypatch.setattr(client_mod, "_quickack", quickack)
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1], keepalive=4)
    for i in range(3):
        done, handler = collect()
        client.request(b"POST", b"/", [], b"%d" % i, handler)
        env.run_until(lambda: done)
        assert done[0].status == 200 and done[0].response_body == b"%d" % i
    assert calls, "TCP_QUICKACK never set"
    assert len({fd for fd, _ in calls}) == 1, "one keep-alive connection"
    assert all(on == 1 for _, on in calls)
    # one after each request sent, at least one after each answer read
    assert len(calls) >= 6


def test_pool_is_bounded_by_keepalive(env, server):
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1], keepalive=1)
    done, handler = collect()
    for i in range(4):
        client.request(b"POST", b"/", [], b"x", handler)
    env.run_until(lambda: len(done) == 4)
    assert all(r.status == 200 for r in done)
    assert len(set(server.peers)) == 4
    assert len(client.idle) == 1
    assert client.active == 0
    assert env.pool.used == 1


def test_connection_close_is_honoured(env, server):
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1])
    done, handler = collect()
    client.request(b"POST", b"/close", [], b"", handler)
    env.run_until(lambda: done)
    assert done[0].status == 200
    assert client.idle == []
    assert env.pool.used == 0


def test_connect_refused_is_retryable_and_reported_from_the_loop(env):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    client = env.client("http://127.0.0.1:%d/" % port)
    done, handler = collect()
    client.request(b"POST", b"/", [], b"", handler)
    assert done == []
    env.run_until(lambda: done)
    req = done[0]
    assert req.error == "connect() failed (111: Connection refused) while connecting to upstream"
    assert req.retryable is True
    assert env.pool.used == 0


def test_read_timeout(env, server):
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1], read_timeout=200)
    done, handler = collect()
    started = time.monotonic()
    client.request(b"POST", b"/slow", [(b"x-delay", b"1")], b"", handler)
    env.run_until(lambda: done)
    assert time.monotonic() - started < 0.9
    req = done[0]
    assert req.error == ("upstream timed out (110: Connection timed out) while reading response "
                         "header from upstream")
    assert req.retryable is False
    assert env.pool.used == 0


def test_slow_request_does_not_block_the_loop(env, server):
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1])
    slow, fast = [], []
    client.request(b"POST", b"/slow", [(b"x-delay", b"0.5")], b"", slow.append)
    started = time.monotonic()
    client.request(b"POST", b"/", [], b"quick", fast.append)
    env.run_until(lambda: fast)
    assert time.monotonic() - started < 0.4
    assert slow == []
    env.run_until(lambda: slow)
    assert slow[0].status == 200


def test_cancel(env, server):
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1])
    done, handler = collect()
    req = client.request(b"POST", b"/slow", [(b"x-delay", b"0.2")], b"", handler)
    env.run_until(lambda: server.requests)
    req.cancel()
    assert env.pool.used == 0 and client.active == 0
    deadline = time.monotonic() + 0.5
    env.run_until(lambda: time.monotonic() > deadline)
    assert done == []


def test_too_big_body(env, server):
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1], max_response_size=1000)
    done, handler = collect()
    client.request(b"POST", b"/big", [], b"", handler)
    env.run_until(lambda: done)
    assert done[0].error == "upstream sent too big body: over 1000 bytes"


def raw_server(script):
    """A one-thread TCP server: for each accepted connection, call script(sock)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(5)

    def run():
        while True:
            try:
                s, _ = ls.accept()
            except OSError:
                return
            with s:
                script(s)

    threading.Thread(target=run, daemon=True).start()
    return ls


def read_request(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data


def test_invalid_response(env):
    def script(s):
        read_request(s)
        s.sendall(b"HTTP/1.1 2000 What\r\n\r\n")

    ls = raw_server(script)
    client = env.client("http://127.0.0.1:%d/" % ls.getsockname()[1])
    done, handler = collect()
    client.request(b"POST", b"/", [], b"", handler)
    env.run_until(lambda: done)
    assert done[0].error.startswith("upstream sent invalid response: ")
    ls.close()


def test_premature_close(env):
    def script(s):
        read_request(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    ls = raw_server(script)
    client = env.client("http://127.0.0.1:%d/" % ls.getsockname()[1])
    done, handler = collect()
    client.request(b"POST", b"/", [], b"", handler)
    env.run_until(lambda: done)
    assert done[0].error == "upstream prematurely closed connection while reading upstream"
    ls.close()


def test_stale_keepalive_connection_is_retried_once(env):
    served = []

    def script(s):
        read_request(s)
        served.append(1)
        # keep-alive by the protocol, but the server closes at once anyway
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    ls = raw_server(script)
    client = env.client("http://127.0.0.1:%d/" % ls.getsockname()[1])
    done, handler = collect()

    def first(req):
        done.append(req)
        # same loop iteration: the pooled connection's EOF has not been seen yet
        client.request(b"POST", b"/", [], b"", handler)

    client.request(b"POST", b"/", [], b"", first)
    env.run_until(lambda: len(done) == 2)
    assert [r.status for r in done] == [200, 200]
    assert [r.error for r in done] == [None, None]
    assert len(served) == 2
    assert done[1]._reused_retry, "the second request went out on the dead pooled connection first"
    ls.close()


def test_unix_socket(env, tmp_path):
    path = str(tmp_path / "backend.sock")
    srv = serve(UnixServer(path))
    try:
        client = env.client("unix:%s:/ws" % path)
        done, handler = collect()
        client.request(b"POST", client.url.path, [], b"over unix", handler)
        env.run_until(lambda: done)
        assert done[0].status == 200 and done[0].response_body == b"over unix"
        assert srv.requests[0][0] == "/ws"
    finally:
        srv.shutdown()
        srv.server_close()


def test_ipv6(env):
    try:
        srv = serve(TCPServer(("::1", 0), socket.AF_INET6))
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        client = env.client("http://[::1]:%d/" % srv.server_address[1])
        done, handler = collect()
        client.request(b"POST", b"/created", [], b"six", handler)
        env.run_until(lambda: done)
        assert done[0].status == 201 and done[0].response_body == b"six"
        assert srv.requests[0][1]["Host"] == "[::1]:%d" % srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def test_parse_url():
    u = parse_url("http://127.0.0.1:8080/app/ws")
    assert u.addrs == [(socket.AF_INET, ("127.0.0.1", 8080))]
    assert u.host_header == b"127.0.0.1:8080" and u.path == b"/app/ws"
    assert u.name == "http://127.0.0.1:8080/app/ws"
    u = parse_url("http://127.0.0.1")
    assert u.addrs[0][1] == ("127.0.0.1", 80) and u.path == b"/" and u.host_header == b"127.0.0.1"
    u = parse_url("http://[::1]:9000/x")
    assert u.addrs[0][0] == socket.AF_INET6 and u.addrs[0][1][:2] == ("::1", 9000)
    assert u.host_header == b"[::1]:9000"
    u = parse_url("unix:/tmp/app.sock:/events")
    assert u.addrs == [(socket.AF_UNIX, "/tmp/app.sock")] and u.path == b"/events"
    assert parse_url("unix:/tmp/app.sock").path == b"/"
    calls = []

    def resolver(host, port, family, type_):
        calls.append(host)
        return [(socket.AF_INET, type_, 6, "", ("10.0.0.1", port)),
                (socket.AF_INET, type_, 6, "", ("10.0.0.1", port)),
                (socket.AF_INET, type_, 6, "", ("10.0.0.2", port))]

    u = parse_url("http://backend:81/", resolve=resolver)
    assert calls == ["backend"]
    assert [a[1] for a in u.addrs] == [("10.0.0.1", 81), ("10.0.0.2", 81)]


@pytest.mark.parametrize("url, message", [
    ("ftp://x/", 'invalid URL prefix in "ftp://x/"'),
    ("http:///x", 'no host in upstream "/x"'),
    ("http://a:/", 'invalid port in upstream "a:/"'),
    ("http://a:0/", 'invalid port in upstream "a:0/"'),
    ("http://a:70000/", 'invalid port in upstream "a:70000/"'),
    ("http://a:x/", 'invalid port in upstream "a:x/"'),
    ("http://[::1/", 'invalid IPv6 address in upstream "[::1/"'),
    ("http://u@a/", 'invalid host in upstream "u@a/"'),
    ("unix:", 'invalid URL prefix in "unix:"'),
    ("unix:/s:x", 'invalid URI in "unix:/s:x"'),
    ("http://no-such-host.invalid:81/", 'host not found in upstream "no-such-host.invalid:81"'),
])
def test_parse_url_errors(url, message):
    def resolver(host, port, family, type_):
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(URLError) as exc:
        parse_url(url, resolve=resolver)
    assert str(exc.value) == message


def test_header_block():
    from ngxws.http.client import header_block
    assert header_block([(b"x-a", b"1"), (b"cookie", b"a=b; c=d")]) == b"x-a: 1\r\ncookie: a=b; c=d\r\n"
    for bad in [(b"x a", b"1"), (b"x:a", b"1"), (b"", b"1"), (b"x", b"a\r\nb"), (b"x", b"\x00")]:
        with pytest.raises(ValueError):
            header_block([bad])


def test_bad_header_or_target_is_reported_not_sent(env, server):
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1])
    done, handler = collect()
    client.request(b"POST", b"/", [(b"x", b"a\r\nInjected: 1")], b"", handler)
    client.request(b"POST", b"/a b", [], b"", handler)
    assert done == []
    env.run_until(lambda: len(done) == 2)
    assert [r.error.split(":")[0] for r in done] == ["invalid request to upstream"] * 2
    assert server.requests == []


def test_trusted_header_block(env, server):
    client = env.client("http://127.0.0.1:%d/" % server.server_address[1])
    done, handler = collect()
    client.request(b"POST", b"/", b"x-test: block\r\n", b"b", handler)
    env.run_until(lambda: done)
    assert done[0].header(b"x-echo") == b"block"


# -- parse_head against h11, the oracle ----------------------------------------------------------

import h11  # noqa: E402
from hypothesis import HealthCheck, example, given, settings, strategies as st  # noqa: E402

from ngxws.http.client import FALLBACK, MAX_HEAD_SIZE, parse_head  # noqa: E402


def h11_parse(data):
    """What h11 makes of ``data`` as the answer to a POST: "error", "incomplete" or a tuple."""
    h = h11.Connection(h11.CLIENT)
    h.send(h11.Request(method=b"POST", target=b"/", headers=[(b"host", b"x"), (b"content-length", b"0")]))
    h.send(h11.EndOfMessage())
    if data:  # an empty receive_data() means EOF to h11
        h.receive_data(data)
    status = headers = None
    body = b""
    try:
        while True:
            ev = h.next_event()
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return "incomplete"
            if type(ev) is h11.Response:
                status, headers = ev.status_code, list(ev.headers)
            elif type(ev) is h11.Data:
                body += ev.data
            elif type(ev) is h11.EndOfMessage:
                return status, headers, body, h.their_state is h11.DONE
    except h11.RemoteProtocolError:
        return "error"


def ours(data):
    head = parse_head(data)
    if head is None or head is FALLBACK:
        return head
    status, headers, length, keep_alive, size = head
    assert headers.raw_items() and len(headers.raw_items()) == len(headers) or not headers
    if len(data) < size + length:
        return "incomplete"
    return status, list(headers), data[size:size + length], keep_alive, len(data) > size + length


def check_against_h11(data):
    mine = ours(data)
    if mine is FALLBACK:
        return
    theirs = h11_parse(data)
    if mine is None or mine == "incomplete":
        assert theirs == "incomplete", (data, theirs)
        return
    status, headers, body, keep_alive, extra = mine
    assert theirs not in ("error", "incomplete"), (data, theirs)
    assert (status, headers, body) == theirs[:3], data
    if not extra:
        assert keep_alive == theirs[3], data
    # whatever part of it arrives first, the answer is "not yet", never another response
    complete = len(data) - (len(data) - parse_head(data)[4] - parse_head(data)[2])
    for cut in range(complete):
        assert ours(data[:cut]) in (None, "incomplete"), (data, cut)


names = st.sampled_from([b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection",
                         b"X-A", b"Set-Meta-User", b"X A", b"", b"X:A", b"X\x7fA", b"\xe9"])
values = st.sampled_from([b"close", b"keep-alive", b"Keep-Alive, close", b"0", b"5", b"005", b" 5 ",
                          b"5, 5", b"-1", b"chunked", b"", b"a  b", b"\tx\t", b"\x80\xff", b"a\x7fb",
                          b"a\x00b", b"99999999999999999999"]) | st.binary(max_size=8)
seps = st.sampled_from([b":", b": ", b":\t", b" :", b":  "])
eols = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"])
header = st.tuples(names, seps, values, eols).map(lambda t: t[0] + t[1] + t[2] + t[3])
status_line = st.tuples(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "]),
    st.sampled_from([b" "] * 5 + [b"", b"  ", b"\t"]),
    st.sampled_from([b"200", b"201", b"403", b"500", b"204", b"304", b"100", b"101", b"999", b"099",
                     b"20", b"2000"]),
    st.sampled_from([b" OK", b" ", b"", b" Not\tFound", b" \x80\xff", b" a\x7f", b" x\x00"]),
    eols,
).map(b"".join)
response = st.tuples(status_line, st.lists(header, max_size=5), eols, st.binary(max_size=12)).map(
    lambda t: t[0] + b"".join(t[1]) + t[2] + t[3])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response)
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
@example(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nConnection: close\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A:  a b \r\n\r\nhiEXTRA")
def test_parse_head_agrees_with_h11(data):
    check_against_h11(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_parse_head_agrees_with_h11_on_any_bytes(data):
    check_against_h11(b"HTTP/1.1 200 OK\r\n" + data)
    check_against_h11(data)


def test_parse_head_common_and_fallback_cases():
    status, headers, length, keep, size = parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/websocket-events\r\nSet-Meta-User: al ice\r\n"
        b"Content-Length: 6\r\n\r\nOPEN\r\n")
    assert (status, length, keep) == (200, 6, True)
    assert list(headers) == [(b"content-type", b"application/websocket-events"),
                             (b"set-meta-user", b"al ice"), (b"content-length", b"6")]
    assert headers.raw_items()[1] == (b"Set-Meta-User", b"al ice")
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")[3] is False
    for head in [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                 b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                 b"HTTP/1.1 100 Continue\r\n\r\n",
                 b"HTTP/1.1 204 No Content\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                 b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * MAX_HEAD_SIZE + b"\r\n\r\n"]:
        assert parse_head(head) is FALLBACK, head
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Le") is None


def test_chunked_response_goes_through_h11(env):
    def script(s):
        read_request(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")

    ls = raw_server(script)
    client = env.client("http://127.0.0.1:%d/" % ls.getsockname()[1])
    done, handler = collect()
    client.request(b"POST", b"/", [], b"", handler)
    env.run_until(lambda: done)
    assert done[0].status == 200 and done[0].response_body == b"abc"
    assert client.idle == [], "a connection h11 read is not reused"
    ls.close()


def test_next_address_is_tried_at_once(env, server):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    port = server.server_address[1]

    def resolver(host, p, family, type_):
        return [(socket.AF_INET, type_, 6, "", ("127.0.0.1", dead)),
                (socket.AF_INET, type_, 6, "", ("127.0.0.1", port))]

    client = HttpClient(env.loop, env.pool, parse_url("http://backend/", resolve=resolver), env.log)
    done, handler = collect()
    client.request(b"POST", b"/", [], b"ok", handler)
    env.run_until(lambda: done)
    assert done[0].status == 200 and done[0].response_body == b"ok"
    assert any("[warn]" in line and "trying the next address" in line for line in env.sink.lines)
    done.clear()
    client.request(b"POST", b"/", [], b"again", handler)
    env.run_until(lambda: done)
    assert done[0].status == 200
