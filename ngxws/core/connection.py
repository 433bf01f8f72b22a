"""Connections and the per-worker pool that caps them (``worker_connections``).

Theory of operation
-------------------
nginx preallocates ``worker_connections`` structs and recycles them, guarding
stale events with an "instance" bit.  Here every accepted socket gets a fresh
Connection object and the pool only counts slots: a Session or a push registry
that still holds a closed Connection sees ``closed`` set, never a stranger
reusing the same object (or the same fd).

``close()`` is the only way out, and it undoes everything the loop knows about
the connection in one place: timers, selector interest, posted events, the pool
slot and the fd, in that order (the fd last, because the selector must forget
it while the number still means this socket).
"""

import itertools

from .loop import Event

__all__ = ["Connection", "ConnectionPool", "Event"]


class Connection:
    __slots__ = ("sock", "fd", "number", "addr_text", "peer", "_local", "listening", "read", "write",
                 "log", "data", "closed", "close_requested", "requests", "sent", "pool")

    def __init__(self, pool, sock, peer, listening, number):
        self.pool = pool
        self.sock = sock
        self.fd = sock.fileno()
        #: nginx's ``*N``, unique across the workers of one master
        self.number = number
        self.peer = peer
        #: the client address without the port, as nginx's c->addr_text
        self.addr_text = peer[0] if isinstance(peer, tuple) and peer else (peer or "unix:")
        self._local = None
        self.listening = listening
        self.read = Event(None, self)
        self.write = Event(None, self, True)
        self.log = None
        #: the module that owns the connection keeps its state here (a Request, a Session)
        self.data = None
        self.closed = False
        #: set by a graceful shutdown; handlers check it on entry
        self.close_requested = False
        self.requests = 0
        self.sent = 0

    @property
    def local(self):
        """The server-side address, asked of the kernel only when someone needs it."""
        if self._local is None:
            self._local = self.sock.getsockname()
        return self._local

    def close(self):
        if self.closed:
            self.log.alert("connection already closed")
            return
        self.closed = True
        if self.log.debug_enabled:
            self.log.debug("close connection: fd:%d", self.fd)
        loop = self.pool.loop
        rev = self.read
        wev = self.write
        if rev.timer_set:
            loop.del_timer(rev)
        if wev.timer_set:
            loop.del_timer(wev)
        if rev.active or wev.active:
            loop.update(self, False, False)
        if rev.posted:
            loop.delete_posted(rev)
        if wev.posted:
            loop.delete_posted(wev)
        self.pool.free(self)
        fd = self.fd
        self.fd = -1
        try:
            self.sock.close()
        except OSError as e:
            self.log.alert("close() socket %d failed (%d: %s)", fd, e.errno, e.strerror)

    def error_handler(self):
        """Called by the loop after one of this connection's handlers raised."""
        if not self.closed:
            self.close()


class ConnectionPool:
    """At most ``worker_connections`` open connections in this worker."""

    __slots__ = ("loop", "error_log", "worker_connections", "free_count", "_counter", "_log_factory",
                 "_waiting")

    def __init__(self, loop, error_log, worker_connections, counter=None, log_factory=None):
        self.loop = loop
        self.error_log = error_log
        self.worker_connections = worker_connections
        self.free_count = worker_connections
        #: returns the next connection number; the cycle passes one shared by all
        #: workers (nginx's ngx_connection_counter lives in shared memory)
        self._counter = counter or itertools.count(1).__next__
        if log_factory is None:
            from .log import ConnectionLog as log_factory
        self._log_factory = log_factory
        #: Listenings that stopped accepting because the pool ran dry
        self._waiting = []

    def get(self, sock, peer, listening=None):
        """A Connection for ``sock``, or None when every slot is taken."""
        if self.free_count <= 0:
            return None
        self.free_count -= 1
        conn = Connection(self, sock, peer, listening, self._counter())
        conn.log = self._log_factory(self.error_log, conn)
        return conn

    def free(self, conn):
        self.free_count += 1
        if self._waiting:
            waiting = self._waiting
            self._waiting = []
            for ls in waiting:
                ls.resume_accept()

    def wait_for_free(self, ls):
        """Have ``ls.resume_accept()`` called when a slot frees."""
        if ls not in self._waiting:
            self._waiting.append(ls)

    @property
    def used(self):
        return self.worker_connections - self.free_count
