"""The HTTP side of a worker in one process, for unit tests: a real EventLoop,
ConnectionPool and ``init_connection`` on loopback sockets, with a fake clock.

``Harness(locations, **settings)`` builds a server table with
``build_virtual_server`` (as a module that opens its own listening does);
``connect()`` gives a client socket and the server's Connection, ``spin``,
``advance`` and ``read`` drive the loop without ever blocking on real time.
"""

import socket

from ngxws.core.connection import ConnectionPool
from ngxws.core.log import DEBUG, ErrorLog
from ngxws.core.loop import EventLoop
from ngxws.http.core_module import build_virtual_server
from ngxws.http.handler import init_connection

from ..unit.core.fakes import FakeClock, MemorySink

__all__ = ["FakeListening", "Harness"]


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
