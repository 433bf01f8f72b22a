"""The websocket module end to end: the real ngxws, real clients over loopback."""

import base64
import http.client
import os
import random
import re
import selectors
import signal
import socket
import threading
import time

import pytest
import websocket  # websocket-client
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate

from tests.helpers.server import wait_for

URL_RX = re.compile(r"^http://([A-Za-z0-9_-]{22,})@(127\.0\.0\.1|\[::1\]):(\d+)(/\S*)$")


def ws_http(extra="", loc="/ws", args="", workers=1, main="", level="info", srv_extra=""):
    return dict(http="""
    server {
        listen 127.0.0.1:0;
        %s
        location %s { websocket %s; %s }
    }""" % (srv_extra, loc, args, extra), workers=workers, main=main, level=level)


class RawClient:
    """A WebSocket client over a plain socket and wsproto, for what websocket-client hides."""

    def __init__(self, port, path="/ws", headers=(), timeout=5, extensions=None):
        """`extensions(head) -> [wsproto extension]`: the client's, finalized from the 101's head."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16))
        lines = [b"GET %s HTTP/1.1" % path.encode(), b"Host: 127.0.0.1:%d" % port,
                 b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Key: " + key,
                 b"Sec-WebSocket-Version: 13"] + list(headers)
        self.sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = self.sock.recv(65536)
            if not data:
                break
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.head = head
        self.ws = Connection(ConnectionType.CLIENT, extensions(head) if extensions else None)
        self.pending = []
        if rest:
            self.ws.receive_data(rest)

    def events(self, want=1, timeout=5):
        deadline = time.monotonic() + timeout
        got = []
        while True:
            got.extend(self.ws.events())
            if len(got) >= want or time.monotonic() > deadline:
                return got
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return got
            except ConnectionResetError:
                data = b""
            if not data:
                self.ws.receive_data(None)
                got.extend(self.ws.events())
                return got
            self.ws.receive_data(data)

    def send(self, event):
        self.sock.sendall(self.ws.send(event))

    def eof(self, timeout=10):
        """True once the server closed the TCP connection."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def push(url, body, binary=False, via_query=False, method="POST", timeout=5):
    """POST like curl does with http://ID@host:port/path: the userinfo becomes Basic auth."""
    m = URL_RX.match(url)
    sid, host, port, path = m.groups()
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    headers = {}
    if via_query:
        path += "?id=" + sid
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(sid.encode() + b":").decode()
    if binary:
        headers["Content-Type"] = "application/octet-stream"
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def first_url(ws):
    return ws.recv().split(",")[0]


def test_push_url_format_text_and_binary(ngxws_server):
    srv = ngxws_server(**ws_http())
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), timeout=5)
    urls = ws.recv()
    url = urls.split(",")[0]
    m = URL_RX.match(url)
    assert m, urls
    sid = m.group(1)
    assert len(base64.urlsafe_b64decode(sid + "==")) >= 16
    assert m.group(4) == "/ws"
    assert int(m.group(3)) != srv.port()
    assert push(url, "héllo") == 204
    assert ws.recv() == "héllo"
    assert push(url, b"\x00\xffbin", binary=True) == 204
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY and data == b"\x00\xffbin"
    assert push(url, "by query", via_query=True) == 204
    assert ws.recv() == "by query"
    ws.send("echo me")
    assert ws.recv() == "echo me"
    ws.close()


def test_push_statuses(ngxws_server):
    srv = ngxws_server(**ws_http("websocket_max_message_size 100;"))
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), timeout=5)
    url = first_url(ws)
    sid, host, port, path = URL_RX.match(url).groups()
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    auth = {"Authorization": "Basic " + base64.b64encode(sid.encode() + b":").decode()}

    def req(method, body=None, headers=None, target=path):
        c.request(method, target, body=body, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("Allow")

    # many pushes on one keep-alive connection
    for i in range(20):
        assert req("POST", b"m%d" % i, auth) == (204, None)
    for i in range(20):
        assert ws.recv() == "m%d" % i
    assert req("OPTIONS") == (204, "POST, OPTIONS")
    assert req("GET", None, auth)[0] == 405
    assert req("POST", b"no id")[0] == 400
    assert req("POST", b"x", {"Authorization": "Basic " + base64.b64encode(b"nobody:").decode()})[0] == 404
    c.close()
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    assert req("POST", b"x" * 101, auth)[0] == 413
    c.close()
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    assert req("POST", b"\xff\xfe", auth)[0] == 400       # text must be UTF-8

    # chunked body
    c.putrequest("POST", path)
    c.putheader("Authorization", auth["Authorization"])
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    c.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    r = c.getresponse()
    r.read()
    assert r.status == 204
    assert ws.recv() == "abcde"
    c.close()
    ws.close()


def _handshake_many(port, n):
    """Open n connections at once and return the push URL text each got."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16))
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        socks.append(s)
    out = []
    for s in socks:
        buf = b""
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep and len(rest) >= 2 and len(rest) >= 2 + (rest[1] & 0x7f):
                n = rest[1] & 0x7f
                if n == 126:
                    if len(rest) < 4:
                        buf += s.recv(65536)
                        continue
                    n = int.from_bytes(rest[2:4], "big")
                    if len(rest) >= 4 + n:
                        out.append(rest[4:4 + n].decode())
                        break
                else:
                    out.append(rest[2:2 + n].decode())
                    break
            data = s.recv(65536)
            assert data, "connection closed during the handshake"
            buf += data
    for s in socks:
        s.close()
    return out


def test_push_urls_unique_over_10000_connections(ngxws_server):
    srv = ngxws_server(**ws_http(workers=2, main="worker_rlimit_nofile 4096;"))
    port = srv.port()
    seen = set()
    for _ in range(50):
        for text in _handshake_many(port, 200):
            for url in text.split(","):
                m = URL_RX.match(url)
                assert m, url
                seen.add(m.group(1))
    assert len(seen) == 10000


def test_closed_id_is_404_never_a_newer_client(ngxws_server):
    srv = ngxws_server(**ws_http())
    a = websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), timeout=5)
    url_a = first_url(a)
    a.close()
    wait_for(lambda: push(url_a, "late") == 404, 5, what="404 for a gone client")
    # a newer client very likely gets the same fd; it must not see A's pushes
    b = websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), timeout=5)
    url_b = first_url(b)
    assert URL_RX.match(url_b).group(1) != URL_RX.match(url_a).group(1)
    assert push(url_a, "for A") == 404
    assert push(url_b, "for B") == 204
    assert b.recv() == "for B"
    b.close()


def test_each_worker_serves_its_own_push_port(ngxws_server):
    srv = ngxws_server(**ws_http(workers=2))
    srv.wait_log(r"websocket push port", count=2)
    by_port = {}
    clients = []
    for _ in range(200):
        ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), timeout=5)
        clients.append(ws)
        url = first_url(ws)
        by_port.setdefault(URL_RX.match(url).group(3), (ws, url))
        if len(by_port) == 2:
            break
    assert len(by_port) == 2, "all 200 connections went to one worker"
    for port, (ws, url) in by_port.items():
        assert push(url, "to " + port) == 204
        assert ws.recv() == "to " + port
    for ws in clients:
        ws.close()


def test_ping_then_idle_close(ngxws_server):
    srv = ngxws_server(**ws_http(args="pingintvl=300 idleintvl=1200", level="debug"))
    # before the handshake: the server's clock for this client starts later than ours
    start = time.monotonic()
    c = RawClient(srv.port())
    assert c.status == 101
    (url,) = c.events(1)
    assert url.data.startswith("http://")
    (ping,) = c.events(1, timeout=5)
    assert isinstance(ping, Ping)
    # not before pingintvl (the loop's clock counts whole ms: 1 ms of slack)
    assert time.monotonic() - start >= 0.3 - 0.001
    # no PONG from us: after idleintvl without a frame received, 1001; only pings before it
    evs = c.events(1, timeout=5)
    while evs and isinstance(evs[0], Ping):
        evs = evs[1:] or c.events(1, timeout=5)
    assert isinstance(evs[0], CloseConnection) and evs[0].code == 1001
    assert time.monotonic() - start >= 1.2 - 0.001
    # and the TCP connection is dropped although we never answer the close
    assert c.eof(timeout=10)
    c.close()
    srv.wait_log(r"\*\d+ websocket close code=1001")
    log = srv.log_text()
    ping_at = log.index("websocket ping sent")
    idle_at = log.index("websocket idle timeout")
    assert ping_at < idle_at < log.index("websocket close code=1001")


def test_pong_keeps_client(ngxws_server):
    srv = ngxws_server(**ws_http(args="pingintvl=200 idleintvl=600"))
    start = time.monotonic()
    c = RawClient(srv.port())
    url = c.events(1)[0].data.split(",")[0]
    # eight pings, each answered: nothing else comes (no close), each wait bounded
    for _ in range(8):
        (ev,) = c.events(1, timeout=5)
        assert isinstance(ev, Ping), ev
        c.send(ev.response())
    # pings come pingintvl apart at least: idleintvl passed twice over, yet the client stayed
    assert time.monotonic() - start >= 8 * 0.2 - 0.001
    assert push(url, "still here") == 204
    evs = [e for e in c.events(1) if not isinstance(e, Ping)] or c.events(1)
    assert evs[0].data == "still here"
    c.close()


def test_origin(ngxws_server):
    srv = ngxws_server(**ws_http("websocket_allow_origin https://good.example ~^https://.*\\.ok\\.example$;"))
    srv.allow(r"refused origin")
    bad = RawClient(srv.port(), headers=[b"Origin: https://evil.example"])
    assert bad.status == 403
    good = RawClient(srv.port(), headers=[b"Origin: https://good.example"])
    assert good.status == 101
    sub = RawClient(srv.port(), headers=[b"Origin: https://a.ok.example"])
    assert sub.status == 101
    for c in (bad, good, sub):
        c.close()


def test_bad_handshakes(ngxws_server):
    srv = ngxws_server(**ws_http())
    port = srv.port()

    def status(raw):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(raw)
        data = s.recv(65536)
        s.close()
        return data

    plain = status(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert plain.startswith(b"HTTP/1.1 400 ")
    v8 = status(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    assert v8.startswith(b"HTTP/1.1 426 ") and b"\r\nSec-WebSocket-Version: 13\r\n" in v8
    nokey = status(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert nokey.startswith(b"HTTP/1.1 400 ")


def test_oversize_message_closed_1009(ngxws_server):
    srv = ngxws_server(**ws_http("websocket_max_message_size 1k;"))
    c = RawClient(srv.port())
    c.events(1)
    c.send(TextMessage("x" * 1000))
    (ev,) = c.events(1)
    assert ev.data == "x" * 1000
    c.send(BytesMessage(b"y" * 1025))
    (ev,) = c.events(1)
    assert isinstance(ev, CloseConnection) and ev.code == 1009
    c.close()


def frame_head(opcode, length, fin=True, rsv1=False):
    """A masked client frame header, mask key included, announcing `length` payload bytes."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        out = bytes((b0, 0x80 | length))
    elif length < 65536:
        out = bytes((b0, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        out = bytes((b0, 0x80 | 127)) + length.to_bytes(8, "big")
    return out + os.urandom(4)


def masked(opcode, payload, fin=True):
    head = frame_head(opcode, len(payload), fin)
    key = head[-4:]
    return head + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


@pytest.mark.parametrize("case", ["2^63-1", "limit+1", "continuation", "deflate"])
def test_frame_over_message_limit_closed_at_its_header(ngxws_server, case):
    # websocket_max_frame_size at its default (0): the message limit alone refuses the frame,
    # from its header; the client sends no byte of the payload it announced.
    extra = "websocket_max_message_size 1m;"
    headers = ()
    extensions = None
    if case == "deflate":
        extra += " websocket_deflate on;"
        headers = (b"Sec-WebSocket-Extensions: permessage-deflate",)

        def extensions(head):
            ext = PerMessageDeflate()
            m = re.search(rb"Sec-WebSocket-Extensions: ([^\r]*)", head)
            if m:
                ext.finalize(m.group(1).decode())
            return [ext]
    srv = ngxws_server(**ws_http(extra))
    port = srv.port()
    c = RawClient(port, headers=headers, extensions=extensions)
    assert c.status == 101
    (urls,) = c.events(1)
    limit = 1 << 20
    if case == "2^63-1":
        c.sock.sendall(frame_head(0x2, (1 << 63) - 1))
    elif case == "limit+1":
        c.sock.sendall(frame_head(0x2, limit + 1))
    elif case == "continuation":
        c.sock.sendall(masked(0x2, b"x" * (limit - 10), fin=False))
        c.sock.sendall(frame_head(0x0, 11))
    else:
        # compressed: refused once the compressed bytes are past what deflate could make
        c.sock.sendall(frame_head(0x2, (1 << 63) - 1, rsv1=True))
    events = c.events(1, timeout=5)
    assert events and isinstance(events[-1], CloseConnection), events
    assert events[-1].code == 1009
    assert c.eof()
    c.close()
    # the worker goes on serving others
    other = websocket.create_connection("ws://127.0.0.1:%d/ws" % port, timeout=5)
    url = first_url(other)
    other.send("still here")
    assert other.recv() == "still here"
    assert push(url, "pushed") == 204
    assert other.recv() == "pushed"
    other.close()
    srv.wait_log(r"\[info\].*websocket message over websocket_max_message_size 1048576")


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_client_that_never_reads_stays_bounded(ngxws_server):
    srv = ngxws_server(**ws_http("websocket_send_buffer 256k; websocket_max_message_size 128k;"))
    (worker,) = srv.wait_workers(1)
    c = RawClient(srv.port())
    url = c.events(1)[0].data.split(",")[0]
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = b"z" * 65536
    sid, host, port, path = URL_RX.match(url).groups()
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    auth = {"Authorization": "Basic " + base64.b64encode(sid.encode() + b":").decode()}
    before = _rss_kb(worker)
    statuses = []
    for _ in range(1000):
        conn.request("POST", path, body=body, headers=auth)
        r = conn.getresponse()
        r.read()
        statuses.append(r.status)
    after = _rss_kb(worker)
    conn.close()
    assert set(statuses) <= {204, 429}
    assert statuses.count(429) > 900
    # 1000 x 64 KiB would be 64 MiB; the queue holds at most 256 KiB + one message
    assert after - before < 16 * 1024, (before, after)
    c.close()


def test_deflate_echo(ngxws_server):
    srv = ngxws_server(**ws_http("websocket_deflate on;"))
    from wsproto.extensions import PerMessageDeflate

    def deflate(head):
        ext = PerMessageDeflate()
        m = re.search(rb"Sec-WebSocket-Extensions: ([^\r]*)", head)
        if m:
            ext.finalize(m.group(1).decode())
        return [ext]

    c = RawClient(srv.port(), headers=[b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
                  extensions=deflate)
    assert c.status == 101
    assert b"permessage-deflate" in c.head and b"server_no_context_takeover" in c.head
    (url,) = c.events(1)
    assert url.data.startswith("http://")
    for i in range(5):
        c.send(TextMessage("deflate me %d " % i * 50))
        (ev,) = c.events(1)
        assert ev.data == "deflate me %d " % i * 50
    c.close()


class Listener(threading.Thread):
    """Reads 200 clients' sockets in one thread and records each client's messages."""

    def __init__(self, clients):
        super().__init__(daemon=True)
        self.clients = clients
        self.received = {c: [] for c in clients}
        self.closed = []
        self.stop = False
        self.sel = selectors.DefaultSelector()
        for c in clients:
            c.sock.setblocking(False)
            self.sel.register(c.sock, selectors.EVENT_READ, c)

    def run(self):
        while not self.stop:
            for key, _ in self.sel.select(0.1):
                c = key.data
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed.append(c)
                    self.sel.unregister(c.sock)
                    continue
                c.ws.receive_data(data)
                for ev in c.ws.events():
                    if isinstance(ev, TextMessage):
                        self.received[c].append(ev.data)
                    elif isinstance(ev, CloseConnection):
                        self.closed.append(c)


def test_reload_under_pushes_keeps_clients_and_pushes(ngxws_server):
    srv = ngxws_server(**ws_http(workers=2))
    port = srv.port()
    clients = []
    urls = {}
    for _ in range(200):
        c = RawClient(port)
        assert c.status == 101
        (ev,) = c.events(1)
        urls[c] = ev.data.split(",")[0]
        clients.append(c)
    listener = Listener(clients)
    listener.start()
    sent = {c: [] for c in clients}
    failures = []
    old_workers = srv.workers()

    def pusher(stop_at):
        i = 0
        while time.monotonic() < stop_at:
            c = random.choice(clients)
            msg = "p%d" % i
            i += 1
            status = push(urls[c], msg)
            if status != 204:
                failures.append((msg, status))
            else:
                sent[c].append(msg)

    t0 = time.monotonic()
    threads = [threading.Thread(target=pusher, args=(t0 + 6,)) for _ in range(4)]
    for t in threads:
        t.start()
    # pushes are flowing (the pushers check their own statuses)
    wait_for(lambda: sum(len(v) for v in sent.values()) > 100, 10, what="pushes flowing")
    srv.signal(signal.SIGHUP)
    wait_for(lambda: len(set(srv.workers()) - set(old_workers)) >= 2, 15, what="new workers")
    for t in threads:
        t.join(30)
    # after the reload, new clients land on new workers, old ones still get pushes
    # four pushers may push to one client at once, so compare each client's messages as sets
    wait_for(lambda: all(sorted(listener.received[c]) == sorted(sent[c]) for c in clients), 15,
             what="every push delivered")
    listener.stop = True
    listener.join(5)
    assert not failures
    assert not listener.closed
    assert sum(len(v) for v in sent.values()) > 200
    assert set(old_workers) & set(srv.workers()), "old workers left with clients still connected"
    for c in clients:
        c.close()


def test_quit_sends_1001(ngxws_server):
    srv = ngxws_server(**ws_http())
    c = RawClient(srv.port())
    c.events(1)
    srv.signal(signal.SIGQUIT)
    (ev,) = c.events(1, timeout=10)
    assert isinstance(ev, CloseConnection) and ev.code == 1001
    c.send(CloseConnection(code=1001))
    assert c.eof(timeout=10)
    c.close()
    srv.proc.wait(15)


def test_ipv6_push_url_in_brackets(ngxws_server):
    srv = ngxws_server(http="""
    server {
        listen [::1]:0;
        location /ws { websocket; }
    }""")
    port = int(srv.listening()[0].rsplit(":", 1)[1])
    ws = websocket.create_connection("ws://[::1]:%d/ws" % port, timeout=5)
    url = ws.recv()
    m = URL_RX.match(url)
    assert m and m.group(2) == "[::1]", url
    assert push(url, "over v6") == 204
    assert ws.recv() == "over v6"
    ws.close()


def test_push_host_and_wildcard_listen(ngxws_server):
    srv = ngxws_server(http="""
    server {
        listen 127.0.0.1:0;
        websocket_push_listen 0.0.0.0:0;
        location /all { websocket; }
    }
    server {
        listen 127.0.0.2:0;
        websocket_push_host push.example;
        location /named { websocket; }
    }""")
    ws = websocket.create_connection("ws://127.0.0.1:%d/all" % srv.port(0), timeout=5)
    urls = ws.recv().split(",")
    hosts = [re.match(r"http://[^@]+@([^/]+):\d+/all$", u).group(1) for u in urls]
    assert "127.0.0.1" in hosts and len(hosts) == len(set(hosts))
    loopback = [u for u in urls if "@127.0.0.1:" in u][0]
    assert push(loopback, "via wildcard") == 204
    assert ws.recv() == "via wildcard"
    ws.close()
    ws = websocket.create_connection("ws://127.0.0.2:%d/named" % srv.port(1), timeout=5)
    (url,) = ws.recv().split(",")
    assert re.match(r"^http://[A-Za-z0-9_-]{22}@push\.example:\d+/named$", url), url
    ws.close()


def test_frame_sent_with_the_request_head_is_echoed(ngxws_server):
    srv = ngxws_server(**ws_http())
    s = socket.create_connection(("127.0.0.1", srv.port()), timeout=5)
    client = Connection(ConnectionType.CLIENT)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
              + client.send(TextMessage("early bird")))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        assert data
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    client.receive_data(rest)
    got = list(client.events())
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        data = s.recv(65536)
        assert data
        client.receive_data(data)
        got.extend(client.events())
    assert got[0].data.startswith("http://")
    assert got[1].data == "early bird"
    s.close()
