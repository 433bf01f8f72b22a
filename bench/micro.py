"""The Python cost of one push or one echo: the worker's own handlers, no system call.

    python -m bench.micro push [--n 100000] [--route direct|http] [--profile]
    python -m bench.micro echo [--n 100000] [--deflate] [--profile]

What the suite's "server µs per push" cannot show apart: how much of it is ngxws's Python and
how much the kernel (recv, two sends, epoll_wait; on loopback a send also runs the receiver's
TCP input). This runs the real handlers in one process on sockets that take every send and
return one prepared request (or frame) per recv: a real EventLoop, HttpConnection and Session,
a push server built as the websocket module builds its own (with its direct route, or without:
``--route http`` measures the HTTP module's path), 100 subscribers, the bench's push request
(Host, Basic-auth Authorization, 64-byte body). It checks that every push was answered and
every frame written. Numbers are per operation, from a warm process: a worker that sleeps
between pushes runs the same code with cold caches, two to three times slower.
``--deflate`` runs the echo with permessage-deflate negotiated (no context takeover, as ngxws
answers), so that every frame goes through wsproto instead of frames.py. ``--profile`` prints
cProfile's top functions after the timed run.
"""
from __future__ import annotations

import argparse
import base64
import sys
import time
from types import SimpleNamespace

from ngxws.core.connection import ConnectionPool
from ngxws.core.log import NOTICE, ErrorLog
from ngxws.core.loop import EventLoop
from ngxws.http.core_module import LocationConf, build_virtual_server
from ngxws.http.handler import init_connection
from ngxws.websocket.push import PushConfs, _install_direct_route, push_handler
from ngxws.websocket.session import Location, Session, ws_read_handler

SUBSCRIBERS = 100


class _Sink:
    def write(self, data):
        pass


class _Socket:
    """Takes every send; each recv returns the next prepared bytes, then EAGAIN."""

    def __init__(self, fd):
        self.fd = fd
        self.inbox = []

    def fileno(self):
        return self.fd

    def send(self, data):
        return len(data)

    def sendmsg(self, buffers):
        return sum(len(b) for b in buffers)

    def recv(self, size):
        if self.inbox:
            return self.inbox.pop()
        raise BlockingIOError

    def setblocking(self, flag):
        pass

    def getsockname(self):
        return ("127.0.0.1", 9000)

    def close(self):
        pass


class _Selector:
    def register(self, *args):
        pass

    modify = unregister = register

    def select(self, timeout):
        return []


def build(route: str, extensions=None):
    """`extensions`: None, or a function that returns each subscriber's wsproto extensions."""
    log = ErrorLog([(_Sink(), NOTICE)])
    loop = EventLoop(log, selector=_Selector())
    pool = ConnectionPool(loop, log, 10000)
    ws_conf = SimpleNamespace(ping_interval=300000, idle_interval=360000,
                              max_message_size=1 << 20, send_buffer_size=1 << 30,
                              slow_client="reject")
    loc = LocationConf(handler=push_handler, client_max_body_size=1 << 20,
                       keepalive_requests=1 << 60, keepalive_timeout=75000)
    servers = build_virtual_server({"/ws": loc})
    sessions = {}
    loc.confs = PushConfs(ws_conf, sessions)
    if route == "direct":
        _install_direct_route(servers, {"/ws": loc}, sessions)
    ws_loc = Location(ws_conf, loop, log, "/ws", sessions)
    subscribers = []
    for i in range(SUBSCRIBERS):
        conn = pool.get(_Socket(1000 + i), ("127.0.0.1", 20000 + i), None)
        session = Session(ws_loc)
        session.attach(conn, b"", b"", extensions() if extensions is not None else None)
        subscribers.append(session)
    listening = SimpleNamespace(servers=servers, addr_text="127.0.0.1:9000")
    backend = pool.get(_Socket(5), ("127.0.0.1", 30000), listening)
    init_connection(backend)
    return loop, subscribers, backend


def push_ops(route: str):
    loop, subscribers, backend = build(route)
    requests = [b"POST /ws HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nAuthorization: Basic %s\r\n"
                b"Content-Length: 64\r\n\r\n" % base64.b64encode(s.id.encode() + b":") + b"x" * 64
                for s in subscribers]
    inbox = backend.sock.inbox
    rev = backend.read

    def run(n):
        for i in range(n):
            inbox.append(requests[i % SUBSCRIBERS])
            rev.handler(rev)
            loop.run_once()

    def check(n):
        if backend.requests != n or backend.closed:
            raise SystemExit("push: %d requests answered of %d" % (backend.requests, n))
        framed = sum(s.conn.sent for s in subscribers)
        if framed != n * 66:    # 2-byte header + 64-byte text per push
            raise SystemExit("push: %d frame bytes written, %d expected" % (framed, n * 66))
    return run, check


def echo_ops(deflate: bool = False):
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage
    messages = ["m%030d" % i for i in range(SUBSCRIBERS)]
    if deflate:
        from wsproto.extensions import PerMessageDeflate
        from ngxws.websocket.handshake import negotiate_deflate
        offer = [(b"sec-websocket-extensions", b"permessage-deflate")]

        def extensions():
            return [negotiate_deflate(offer, 1 << 20)[0]]

        client_ext = PerMessageDeflate()
        client_ext.finalize(negotiate_deflate(offer, 1 << 20)[1].decode())
        client = Connection(ConnectionType.CLIENT, [client_ext])
        # no context takeover: each message compresses alone, to the same bytes every time
        server = Connection(ConnectionType.SERVER, extensions())
        sizes = [len(server.send(TextMessage(data=m))) for m in messages]
    else:
        extensions = None
        client = Connection(ConnectionType.CLIENT)
        sizes = [33] * SUBSCRIBERS    # 2-byte header + 31-byte text per echo
    loop, subscribers, _ = build("direct", extensions)
    frames = [client.send(TextMessage(data=m)) for m in messages]

    def run(n):
        for i in range(n):
            conn = subscribers[i % SUBSCRIBERS].conn
            conn.sock.inbox.append(frames[i % SUBSCRIBERS])
            ws_read_handler(conn.read)
            loop.run_once()

    def check(n):
        echoed = sum(s.conn.sent for s in subscribers)
        want = sum(sizes[i % SUBSCRIBERS] for i in range(n))
        if echoed != want:
            raise SystemExit("echo: %d bytes echoed, %d expected" % (echoed, want))
    return run, check


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("push", "echo"))
    ap.add_argument("--n", type=int, default=100000, help="operations timed (default 100000)")
    ap.add_argument("--route", choices=("direct", "http"), default="direct",
                    help="push: the push port's direct route (default) or the HTTP path")
    ap.add_argument("--deflate", action="store_true",
                    help="echo: with permessage-deflate, every frame through wsproto")
    ap.add_argument("--profile", action="store_true", help="then cProfile another run")
    args = ap.parse_args(argv)
    warm = min(1000, args.n)
    run, check = push_ops(args.route) if args.what == "push" else echo_ops(args.deflate)
    run(warm)
    t = time.perf_counter()
    run(args.n)
    elapsed = time.perf_counter() - t
    check(warm + args.n)
    if args.what == "push":
        label = "push (%s)" % args.route
    else:
        label = "echo (deflate)" if args.deflate else "echo"
    print("%s: %.2f us of Python per operation, %d operations" % (label, elapsed / args.n * 1e6,
                                                                   args.n))
    if args.profile:
        import cProfile
        import pstats
        profiler = cProfile.Profile()
        profiler.runcall(run, args.n)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
