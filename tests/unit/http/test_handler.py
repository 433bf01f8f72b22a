"""The HTTP connection handler on a real EventLoop, with loopback sockets and a fake clock.

The server side is what a worker runs: a ConnectionPool connection handed to
``init_connection``, with a server table made by ``build_virtual_server`` (the
helper other modules use for listenings they open from code).
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ...helpers.http import Harness


@pytest.fixture
def harness():
    hs = []

    def make(locations, **settings):
        h = Harness(locations, **settings)
        hs.append(h)
        return h
    yield make
    for h in hs:
        h.close()


def echo(r):
    r.send_response(200, [(b"Content-Type", b"text/plain"), (b"X-Len", b"%d" % len(r.body))], r.body)


def test_body_read_before_handler_and_keepalive(harness):
    h = harness({"/echo": echo})
    c, conn = h.connect()
    c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel")
    h.spin(lambda: False, 3)
    c.sendall(b"lo")
    out = h.read(c, lambda b: b.endswith(b"hello"))
    assert out.startswith(b"HTTP/1.1 200 OK\r\nServer: ngxws/0.1.0\r\nDate: ")
    assert b"\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX-Len: 5\r\n\r\nhello" in out
    c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    out = h.read(c, lambda b: b.endswith(b"abcde"))
    assert b"X-Len: 5" in out
    assert conn.requests == 2 and not conn.closed


def test_pipelined_handler_responses_in_order(harness):
    h = harness({"/echo": echo})
    c, _ = h.connect()
    c.sendall(b"".join(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n%02d" % i for i in range(20)))
    out = h.read(c, lambda b: b.endswith(b"19"))
    assert [int(x) for x in __import__("re").findall(rb"\r\n\r\n(\d\d)", out)] == list(range(20))


def test_expect_100_continue(harness):
    h = harness({"/echo": echo})
    c, _ = h.connect()
    c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert h.read(c, lambda b: b.endswith(b"\r\n\r\n")) == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.sendall(b"abc")
    assert h.read(c, lambda b: b.endswith(b"abc")).startswith(b"HTTP/1.1 200 OK")


def test_max_body_size_413_and_close(harness):
    h = harness({"/echo": echo}, client_max_body_size=4)
    c, conn = h.connect()
    c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    out = h.read(c, lambda b: b.endswith(b"<EOF>"))
    assert out.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"Connection: close" in out
    assert "[error]" in h.sink.text() and "client intended to send too large body: 5 bytes" in h.sink.text()
    # lingering close: the write side is shut, what the client still sends is read and dropped
    assert not conn.closed
    c.sendall(b"more body")
    h.advance(4000)
    assert not conn.closed
    h.advance(6000)
    assert conn.closed


def test_detach_hands_over_socket_and_trailing(harness):
    taken = []

    def upgrade(r):
        r.send_response(101, [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")])
        taken.append(r.detach())
    h = harness({"/ws": upgrade})
    c, conn = h.connect()
    c.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    h.spin(lambda: taken)
    sock, trailing, unsent = taken[0]
    assert sock is conn.sock and trailing == b"\x81\x05hello" and unsent == b""
    assert not conn.read.active and not conn.read.timer_set and not conn.write.timer_set
    out = h.read(c, lambda b: b.endswith(b"\r\n\r\n"))
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and b"Content-Length" not in out
    # the HTTP side no longer reacts to anything on it
    c.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n")
    h.advance(120000)
    assert not conn.closed


def test_client_body_timeout(harness):
    h = harness({"/echo": echo}, client_body_timeout=5000)
    c, conn = h.connect()
    c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    h.spin(lambda: conn.read.timer_set and conn.data.state == 2)
    h.advance(4000)
    assert not conn.closed
    h.advance(1500)
    assert conn.closed
    assert "client timed out (110: Connection timed out) while reading client request body" in h.sink.text()


def test_client_header_timeout_and_keepalive_timeout(harness):
    h = harness({"/echo": echo}, client_header_timeout=2000, keepalive_timeout=3000)
    idle, idle_conn = h.connect()
    c, conn = h.connect()
    c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
    h.read(c, lambda b: b.endswith(b"x"))
    h.advance(2100)
    assert idle_conn.closed and not conn.closed
    assert "client timed out (110: Connection timed out) while waiting for request" in h.sink.text()
    h.advance(1000)
    assert conn.closed


def test_keepalive_requests(harness):
    h = harness({"/echo": echo}, keepalive_requests=2)
    c, conn = h.connect()
    c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx" * 3)
    out = h.read(c, lambda b: b.endswith(b"<EOF>"))
    assert out.count(b"HTTP/1.1 200") == 2
    assert b"Connection: keep-alive" in out and b"Connection: close" in out


def test_bad_request_closes_without_traceback(harness):
    h = harness({"/echo": echo})
    c, conn = h.connect()
    c.sendall(b"\x00\x01\x02 garbage\r\n\r\n")
    out = h.read(c, lambda b: b.endswith(b"<EOF>"))
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert "Traceback" not in h.sink.text()
    assert conn.closed


def test_send_timeout_closes_a_client_that_does_not_read(harness):
    big = b"x" * (32 << 20)

    def flood(r):
        r.send_response(200, [(b"Content-Type", b"application/octet-stream")], big)
    h = harness({"/big": flood}, send_timeout=3000)
    c, conn = h.connect()
    c.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    h.spin(lambda: conn.write.timer_set)
    assert conn.write.active and conn.data.out
    h.advance(2000)
    assert not conn.closed
    h.advance(1500)
    assert conn.closed
    assert "client timed out (110: Connection timed out) while sending response to client" in h.sink.text()


REQS = [
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /echo HTTP/1.0\nConnection: keep-alive\nContent-Length: 1\n\nz",
]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(range(len(REQS))), min_size=1, max_size=5), st.data())
def test_requests_split_anywhere_answered_in_order(which, data):
    stream = b"".join(REQS[i] for i in which)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=6))))
    expected = [{0: b"abc", 1: b"de", 2: b"", 3: b"z"}[i] for i in which]
    h = Harness({"/echo": echo})
    try:
        c, conn = h.connect()
        last = 0
        for cut in cuts + [len(stream)]:
            c.sendall(stream[last:cut])
            last = cut
            h.spin(lambda: False, 2)
        out = h.read(c, lambda b: b.count(b"HTTP/1.1 200") == len(which) and b.endswith(expected[-1]))
        bodies = [part.split(b"\r\n\r\n", 1)[1] for part in out.split(b"HTTP/1.1 200 OK\r\n")[1:]]
        assert bodies == expected
        assert not conn.closed
    finally:
        h.close()


def test_reading_stops_while_a_slow_handler_holds_the_request(harness):
    pending = []

    def later(r):
        pending.append(r)      # answered from another event, as a backend would
    h = harness({"/later": later, "/echo": echo})
    c, conn = h.connect()
    c.sendall(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
    h.spin(lambda: pending)
    c.setblocking(False)
    sent = 0
    for _ in range(400):
        try:
            sent += c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx" * 200)
        except BlockingIOError:
            pass
        h.spin(lambda: False, 1)
    parser = conn.data.parser
    assert not conn.read.active
    assert parser.buffered <= parser.max_head + 2 * 65536
    assert sent > parser.buffered + 65536     # the rest waits in the kernel: TCP flow control
    pending[0].send_response(200, (), b"done")
    assert conn.read.active
    out = h.read(c, lambda b: b.count(b"\r\n\r\nx") >= 50, n=500)
    assert out.startswith(b"HTTP/1.1 200 OK") and b"\r\n\r\ndone" in out


# -- whole_request: a request that came whole in one read, run without the buffer ----------------

def _deny_all(r):
    r.send_response(200, [], b"never")


WHOLE_CASES = [
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",      # the lane's case
    b"GET /echo?x=1 HTTP/1.1\r\nHost: a:80\r\n\r\n",                           # no body
    b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",                     # HTTP/1.0: close
    b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel",        # body still coming
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /echo HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\ntoo large",   # over 8: 413
    b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    b"POST /echo HTTP/1.1\r\nHost: -a\r\nContent-Length: 1\r\n\r\nx",          # invalid host: 400
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"POST /echo HTTP/1.1\r\nHost: a\r\n Content-Length: 1\r\n\r\nx",         # obs-fold: 400
    b"POST /ret HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",           # return
    b"POST /deny HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",          # deny all: 403
    b"GET /none HTTP/1.1\r\nHost: a\r\n\r\n",                                  # static: 404
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n",            # body in the next read
]


def _answer(harness, raw, lane):
    from ngxws.http.core_module import LocationConf
    ret = LocationConf(return_=(200, b"returned\n"))
    deny = LocationConf(handler=_deny_all, access=[(None, False)])
    h = harness({"/echo": echo, "/ret": ret, "/deny": deny}, client_max_body_size=8)
    c, conn = h.connect()
    conn.data.one_server = lane
    c.sendall(raw)
    if raw.endswith(b"\r\n\r\n") and b"POST" in raw and b"Content-Length: 1\r\n" in raw \
            and b"Expect" not in raw:
        h.spin(lambda: False, 3)
        c.sendall(b"y")
    out = h.read(c, lambda b: b.endswith(b"<EOF>"), n=15)
    import re
    # the Date line is the only part that may differ between the two runs
    return re.sub(rb"Date: [^\r]*\r\n", b"", out), conn.requests


@pytest.mark.parametrize("raw", WHOLE_CASES)
def test_whole_request_lane_answers_as_the_general_path(harness, raw):
    assert _answer(harness, raw, True) == _answer(harness, raw, False)


def test_whole_request_lane_keeps_the_buffer_unused(harness, monkeypatch):
    from ngxws.http.handler import HttpConnection
    h = harness({"/echo": echo})
    c, conn = h.connect()
    assert conn.data.one_server
    fed = []
    process = HttpConnection.process
    monkeypatch.setattr(HttpConnection, "process", lambda hc: (fed.append(1), process(hc)))
    for i in range(3):
        c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n%02d" % i)
        assert h.read(c, lambda b: b.endswith(b"%02d" % i)).startswith(b"HTTP/1.1 200 OK")
    assert fed == [] and conn.requests == 3 and not conn.closed


def test_timeouts_without_a_request_come_from_the_server_conf(harness):
    # a write that waits with no Request (the direct route's answer, say) and the lingering
    # bound take the server level's send_timeout and lingering_timeout, not a literal
    h = harness({"/echo": echo}, send_timeout=1234, lingering_timeout=4321)
    c, conn = h.connect()
    hc = conn.data
    assert hc.request is None and hc.current_loc() is hc.srv.loc
    hc.wait_write()
    assert conn.write.timer_set and conn.write.deadline == h.loop.now_ms + 1234
    hc.lingering_deadline = h.loop.now_ms + 60000
    hc.linger_read()
    assert hc.deadline == h.loop.now_ms + 4321


def test_date_line_and_204_head_follow_the_clock(monkeypatch):
    import time as time_module

    from ngxws.http import handler
    from ngxws.http.core_module import build_virtual_server
    loc = build_virtual_server({"/": echo}).wildcard.default.locations.find("/")[0]
    now = [1795651200.25]           # 2026-11-26 00:00:00 GMT
    monkeypatch.setattr(time_module, "time", lambda: now[0])
    monkeypatch.setattr(handler, "_date", handler._DateCache())
    first = handler.head_204(loc, True)
    assert b"\r\nDate: Thu, 26 Nov 2026 00:00:00 GMT\r\n" in first and b"keep-alive" in first
    now[0] += 0.7                   # the same second: the same bytes, from the location's cache
    assert handler.head_204(loc, True) is first
    now[0] += 0.1                   # the next second
    assert b"Date: Thu, 26 Nov 2026 00:00:01 GMT" in handler.head_204(loc, True)
    now[0] -= 3600                  # the clock went back: the line follows it
    assert b"Date: Wed, 25 Nov 2026 23:00:01 GMT" in handler.head_204(loc, True)
    closing = handler.head_204(loc, False)
    assert b"Connection: close\r\n" in closing and b"23:00:01 GMT" in closing
