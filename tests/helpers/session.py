"""A Session over a real socketpair, driven by the real EventLoop on a FakeClock.

    h = Harness(send_buffer_size=3000)   # the websocket conf's fields as keywords
    h.events()                           # the push URL message
    h.send(TextMessage("hi"))            # a client frame, then a few loop iterations
    h.advance(1000)                      # the clock moves, timers fire
"""

import socket
from types import SimpleNamespace

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from ngxws.core.connection import ConnectionPool
from ngxws.core.log import DEBUG, ErrorLog
from ngxws.core.loop import Event, EventLoop
from ngxws.websocket.session import Location, Session

from tests.unit.core.fakes import FakeClock, MemorySink


def conf(**kw):
    base = dict(ping_interval=300000, idle_interval=360000, max_message_size=1 << 20,
                send_buffer_size=64 * 1024, slow_client="reject")
    base.update(kw)
    return SimpleNamespace(**base)


class Harness:
    def __init__(self, extensions=None, trailing=b"", **kw):
        self.sink = MemorySink()
        self.log = ErrorLog([(self.sink, DEBUG)])
        self.clock = FakeClock(1_000_000)
        self.loop = EventLoop(self.log, clock_ns=self.clock)
        self.nudge = Event(lambda ev: None)
        self.pool = ConnectionPool(self.loop, self.log, 100)
        server_sock, self.peer = socket.socketpair()
        server_sock.setblocking(False)
        self.peer.settimeout(2)
        self.conn = self.pool.get(server_sock, ("127.0.0.1", 5555))
        self.loc = Location(conf(**kw), self.loop, self.log, "/ws")
        self.loc.push_prefixes = ("127.0.0.1:9000", "[::1]:9000")
        self.session = Session(self.loc)
        client_ext = kw.pop("client_ext", None)
        self.client = Connection(ConnectionType.CLIENT, client_ext)
        self.session.attach(self.conn, b"HTTP/1.1 101 Switching Protocols\r\n\r\n", trailing,
                            extensions)
        self.head = b""

    def spin(self, n=3):
        for _ in range(n):
            # A posted no-op keeps select() from blocking: the clock is ours.
            self.loop.post(self.nudge)
            self.loop.run_once()

    def send(self, event):
        self.peer.sendall(self.client.send(event))
        self.spin()

    def advance(self, ms):
        self.clock.advance(ms)
        self.spin()

    def events(self, want=1):
        """Read from the peer until `want` whole events have arrived (or EOF)."""
        got = []
        partial = []
        while len(got) < want:
            self.spin(1)
            try:
                data = self.peer.recv(1 << 20)
            except socket.timeout:
                break
            if not self.head:
                head, _, data = data.partition(b"\r\n\r\n")
                self.head = head + b"\r\n\r\n"
            if not data:
                self.client.receive_data(None)
                got.extend(self.client.events())
                break
            self.client.receive_data(data)
            for ev in self.client.events():
                if isinstance(ev, (TextMessage, BytesMessage)) and not ev.message_finished:
                    partial.append(ev.data)
                    continue
                if partial:
                    partial.append(ev.data)
                    ev = type(ev)("".join(partial) if isinstance(ev.data, str) else b"".join(partial))
                    partial = []
                got.append(ev)
        return got
