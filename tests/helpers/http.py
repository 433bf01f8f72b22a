"""The HTTP side of a worker in one process, for unit tests: a real EventLoop,
ConnectionPool and ``init_connection`` on loopback sockets, with a fake clock.

``Harness(locations, **settings)`` builds a server table with
``build_virtual_server`` (as a module that opens its own listening does);
``connect()`` gives a client socket and the server's Connection, ``spin``,
``advance`` and ``read`` drive the loop without ever blocking on real time.
"""

import re
import socket

from hypothesis import strategies as st

from ngxws.core.connection import ConnectionPool
from ngxws.core.log import DEBUG, ErrorLog
from ngxws.core.loop import Event, EventLoop
from ngxws.http.core_module import build_virtual_server
from ngxws.http.handler import init_connection

from ..unit.core.fakes import FakeClock, MemorySink

__all__ = ["FakeListening", "Harness", "plain_heads", "targets", "eols"]


class FakeListening:
    addr_text = "127.0.0.1:0"

    def __init__(self, servers):
        self.servers = servers


class Harness:
    def __init__(self, locations, **settings):
        self.sink = MemorySink()
        self.log = ErrorLog([(self.sink, DEBUG)])
        self.clock = FakeClock(ms=10 ** 6)
        self.loop = EventLoop(self.log, clock_ns=self.clock)
        self.pool = ConnectionPool(self.loop, self.log, 16)
        self.ls = FakeListening(build_virtual_server(locations, **settings))
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.clients = []
        self._nudge = Event(lambda ev: None)

    def connect(self):
        c = socket.create_connection(self.lsock.getsockname())
        c.settimeout(0)
        s, peer = self.lsock.accept()
        s.setblocking(False)
        conn = self.pool.get(s, peer, self.ls)
        init_connection(conn)
        self.clients.append(c)
        return c, conn

    def spin(self, cond, n=200):
        for _ in range(n):
            if cond():
                return True
            self._run_once()
        return cond()

    def _run_once(self):
        # never block: the clock is fake, so select must not wait for real time
        sel = self.loop.selector
        if sel is not None:
            ready = sel.select(0.01)
            for key, mask in ready:
                owner = key.data
                if owner.closed:
                    continue
                if mask & 1 and owner.read.active:
                    owner.read.handler(owner.read)
                if not owner.closed and mask & 2 and owner.write.active:
                    owner.write.handler(owner.write)
        self.loop.now_ms = self.clock() // 1_000_000
        timers = self.loop.timers
        ev = timers.pop_due(self.loop.now_ms)
        while ev is not None:
            ev.timedout = True
            ev.handler(ev)
            ev = timers.pop_due(self.loop.now_ms)

    def settle(self, limit=200):
        """Run the real loop, never waiting, until nothing is left to do: for answers that
        come at once, without spinning a fixed number of times.  The posted no-op keeps
        run_once from waiting; an iteration that found nothing ready is run once more, for
        what the last handlers posted.  (Epoll is level-triggered: the zero-timeout peek
        consumes nothing.)"""
        loop = self.loop
        idle = 0
        for _ in range(limit):
            loop.post(self._nudge)
            loop.run_once()
            idle = idle + 1 if not loop.selector.select(0) else 0
            if idle == 2:
                return

    def advance(self, ms):
        self.clock.advance(ms)
        self._run_once()

    def read(self, c, until, n=200):
        buf = bytearray()

        def got():
            try:
                data = c.recv(65536)
                if data == b"":
                    buf.extend(b"<EOF>")
                else:
                    buf.extend(data)
            except BlockingIOError:
                pass
            return until(bytes(buf))
        self.spin(got, n)
        return bytes(buf)

    def close(self):
        for c in self.clients:
            c.close()
        self.lsock.close()


# -- generated request heads, for the parsers' differential tests --------------------------------

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@"
_VCHAR = "".join(chr(c) for c in range(0x21, 0x7f))

methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "PROPFIND",
                           "M-_", "X"])
pct = st.sampled_from(["%20", "%2F", "%2f", "%41", "%e2%82%ac", "%C3%A9", "%00", "%zz", "%4", "%%"])
segment = st.lists(st.text(_PCHAR, min_size=1, max_size=6) | pct | st.sampled_from([".", "..", ""]),
                   max_size=3).map("".join)
path = st.lists(segment, min_size=1, max_size=5).map(lambda segs: "/" + "/".join(segs))
query = st.none() | st.text(_PCHAR + "/?%", max_size=12)
hostnames = st.sampled_from(["127.0.0.1", "example.com", "[::1]", "[2001:db8::1]", "a.b-c.d", "", "X"])
ports = st.sampled_from(["", ":80", ":8080", ":65535", ":"])


@st.composite
def targets(draw):
    t = draw(path)
    q = draw(query)
    if q is not None:
        t += "?" + q
    kind = draw(st.sampled_from(["origin", "origin", "origin", "absolute"]))
    if kind == "absolute":
        scheme = draw(st.sampled_from(["http://", "https://", "HTTP://", "Https://"]))
        authority = draw(hostnames) + draw(ports)
        t = scheme + authority + draw(st.sampled_from([t, "", "?x=1"]))
    return t


names = st.sampled_from(["Accept", "User-Agent", "Cookie", "X-Forwarded-For", "Authorization",
                         "Cache-Control", "Sec-WebSocket-Key", "Upgrade", "accept-encoding"]) | \
    st.text(_TCHAR, min_size=1, max_size=10)
values = st.text(_VCHAR + " \t", max_size=30).map(str.encode) | \
    st.binary(max_size=12).filter(lambda b: not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", b)) | \
    st.sampled_from([b"\xc3\xa9t\xc3\xa9", b"a\tb", b"Basic dXNlcjpwYXNz", b"*/*", b""])
ows = st.sampled_from(["", " ", "  ", "\t", " \t"])
eols = st.sampled_from([b"\r\n", b"\n"])


versions = st.sampled_from(["1.1", "1.0"])
content_lengths = st.from_regex(r"\A[0-9]{1,20}\Z").map(str.encode)


@st.composite
def plain_heads(draw, special=True, method=methods, target=None, lengths=content_lengths,
                extra=(), version=versions, eol=eols):
    """Heads the fast path is meant to take (and a few more kinds when ``special``).

    ``method``, ``target``, ``lengths`` (Content-Length values), ``version`` ("1.1" or
    "1.0") and ``eol`` (each line's end) replace the default strategies; ``extra`` adds
    (name, values strategy) pairs, each field present or not.
    """
    version = draw(version)
    lines = [("%s %s HTTP/%s" % (draw(method), draw(target if target is not None else targets()),
                                 version)).encode()]
    fields = [(n.encode(), draw(ows).encode() + v + draw(ows).encode())
              for n, v in draw(st.lists(st.tuples(names, values), max_size=6))]
    host = draw(st.none() | (hostnames.map(str.encode) if version == "1.0" else st.nothing()))
    if version == "1.1" or host is not None:
        fields.insert(draw(st.integers(0, len(fields))),
                      (draw(st.sampled_from([b"Host", b"host", b"HOST"])),
                       (host if host is not None else (draw(hostnames) + draw(ports)).encode())))
    optional = [
        (b"Content-Length", lengths),
        (b"Connection", st.sampled_from([b"keep-alive", b"close", b"Keep-Alive", b"CLOSE",
                                         b"Upgrade", b"keep-alive, Upgrade", b"x"])),
        (b"Expect", st.sampled_from([b"100-continue", b"100-Continue", b"200-ok"])),
    ] + list(extra)
    if special:
        optional.append((b"Transfer-Encoding", st.sampled_from([b"chunked", b"gzip, chunked", b"x"])))
    for name, vals in optional:
        if draw(st.booleans()):
            fields.insert(draw(st.integers(0, len(fields))), (name, draw(vals)))
    lines += [n + b":" + v for n, v in fields]
    return b"".join(line + draw(eol) for line in lines) + draw(eol)
