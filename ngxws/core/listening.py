"""Listening sockets: open, accept, and the two ways accepting stops for a while.

Theory of operation
-------------------
``open()`` follows ngx_open_listening_sockets: SO_REUSEADDR always (a restarted
server must not wait out TIME_WAIT), SO_REUSEPORT when asked, IPV6_V6ONLY on
every AF_INET6 socket (nginx's default ``ipv6only=on``, so ``[::]:80`` and
``0.0.0.0:80`` can both be bound), then bind, listen and non-blocking.  Errors
read as nginx's (``bind() to 127.0.0.1:8080 failed (98: Address already in
use)``).  A port range ``9000-9100`` takes the first free port; port 0 takes an
ephemeral one, read back into ``port`` and ``addr_text``.

The accept handler runs on level-triggered readiness and drains up to
``backlog`` connections per wakeup: the loop registers listening sockets with
EPOLLEXCLUSIVE (see loop.py), so one worker's wakeup may stand for several
pending connections, and no other worker was woken for them.  Each accepting
wakeup first requeues this worker behind the others (``requeue_accept``), so
that idle workers take turns.  Accept is switched on and off by registering
and unregistering only: the kernel refuses to modify an exclusive registration.

Two conditions would otherwise make the loop spin, because the listen socket
stays readable while they last:

* the descriptor table is full (EMFILE/ENFILE): accept is paused and the
  listening's own read event gets a 500 ms timer (nginx's accept_mutex_delay);
  when it fires the handler sees ``timedout``, resumes and tries again;
* the pool is out of slots: the connection just accepted is closed (the client
  sees a close rather than a hang) and accept is paused until ``close()`` of
  some connection frees a slot.

A pause is separate from ``disable_accept()``, which a graceful shutdown uses to
stop accepting for good: neither the timer nor a freed slot re-enables that.
"""

import errno
import socket

from .loop import Event

__all__ = ["Listening", "ListenError", "accept_handler", "ACCEPT_DELAY"]

#: ms without accept after EMFILE/ENFILE (nginx's accept_mutex_delay default)
ACCEPT_DELAY = 500


class ListenError(OSError):
    """Opening a listening socket failed; ``str()`` is nginx's message."""

    def __init__(self, msg, err=None):
        if err is not None:
            super().__init__(err.errno, err.strerror)
        else:
            super().__init__(msg)
        self.msg = msg

    def __str__(self):
        return self.msg


def _parse_ports(port):
    if isinstance(port, int):
        return port, port
    text = str(port)
    lo, sep, hi = text.partition("-")
    try:
        lo = int(lo)
        hi = int(hi) if sep else lo
    except ValueError:
        raise ListenError('invalid port in "%s"' % text) from None
    if not (0 <= lo <= hi <= 65535) or (sep and lo == 0):
        raise ListenError('invalid port in "%s"' % text)
    return lo, hi


def _peer_text(peer):
    if isinstance(peer, tuple) and len(peer) >= 2:
        return _addr_text(peer[0], peer[1])
    return peer or "unix:"


def _addr_text(host, port):
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


class Listening:
    __slots__ = ("host", "port", "ports", "family", "sock", "fd", "backlog", "reuseport", "ipv6only",
                 "addr_text", "handler", "servers", "pool", "loop", "read", "write", "closed",
                 "accepting", "paused", "_accepted")

    def __init__(self, host, port, handler=None, servers=None, backlog=511, reuseport=False,
                 ipv6only=True, pool=None):
        host = host.strip("[]") if host.startswith("[") else host
        if host in ("", "*"):
            host = "0.0.0.0"
        self.host = host
        self.ports = _parse_ports(port)
        self.port = self.ports[0]
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = None
        self.fd = -1
        self.backlog = backlog
        self.reuseport = reuseport
        self.ipv6only = ipv6only
        lo, hi = self.ports
        self.addr_text = _addr_text(host, lo if lo == hi else "%d-%d" % (lo, hi))
        #: called with each accepted Connection (http: init_connection)
        self.handler = handler
        #: the owning module's data for this address (http: its server confs)
        self.servers = servers
        self.pool = pool
        self.loop = None
        self.read = Event(accept_handler, self)
        # an expired EMFILE pause must not hold up a graceful exit
        self.read.cancelable = True
        self.write = Event(None, self, True)
        self.closed = False
        #: cleared by disable_accept() (graceful shutdown)
        self.accepting = True
        #: set while EMFILE or a full pool holds accept off
        self.paused = False
        self._accepted = None

    # opening

    def open(self):
        lo, hi = self.ports
        for port in range(lo, hi + 1):
            try:
                self._open_port(port)
                return
            except _BindInUse as e:
                if port == hi:
                    raise ListenError("bind() to %s failed (%d: %s)" % (self.addr_text, e.err.errno,
                                                                         e.err.strerror), e.err) from None

    def _open_port(self, port):
        addr = _addr_text(self.host, port)
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as e:
            raise _fail("socket() %s failed", addr, e) from None
        try:
            self._setup(sock, addr, port)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.fd = sock.fileno()
        self.port = sock.getsockname()[1]
        self.addr_text = _addr_text(self.host, self.port)

    def _setup(self, sock, addr, port):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except OSError as e:
            raise _fail("setsockopt(SO_REUSEADDR) %s failed", addr, e) from None
        if self.reuseport:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            except (OSError, AttributeError) as e:
                raise _fail("setsockopt(SO_REUSEPORT) %s failed", addr, e) from None
        if self.family == socket.AF_INET6:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if self.ipv6only else 0)
            except OSError:
                # nginx logs this and goes on: the bind below still says what matters
                pass
        try:
            sock.bind((self.host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                # open() tries the next port of a range, or reports the whole range
                raise _BindInUse(e) from None
            raise _fail("bind() to %s failed", addr, e) from None
        try:
            sock.listen(self.backlog)
        except OSError as e:
            raise ListenError("listen() to %s, backlog %d failed (%d: %s)"
                              % (addr, self.backlog, e.errno, e.strerror), e) from None
        try:
            sock.setblocking(False)
        except OSError as e:
            raise _fail("ioctl(FIONBIO) %s failed", addr, e) from None

    def close(self):
        """Stop accepting and close the socket (this process's copy of it)."""
        if self.closed:
            return
        self.accepting = False
        self._watch(False)
        if self.loop is not None and self.read.timer_set:
            self.loop.del_timer(self.read)
        self.closed = True
        if self.sock is not None:
            self.sock.close()
        self.fd = -1

    # accept on/off

    def enable_accept(self):
        self.accepting = True
        self._watch(not self.paused)

    def disable_accept(self):
        """Stop accepting until enable_accept(); a pause ending does not undo it."""
        self.accepting = False
        self._watch(False)
        if self.loop is not None and self.read.timer_set:
            self.loop.del_timer(self.read)

    def pause_accept(self):
        self.paused = True
        self._watch(False)

    def resume_accept(self):
        self.paused = False
        self._watch(self.accepting)

    def _watch(self, on):
        if self.loop is not None and self.sock is not None and not self.closed:
            self.loop.update_accept(self, on)

    def error_handler(self):
        """The loop's hook after a handler raised: drop the connection being handed over."""
        conn = self._accepted
        self._accepted = None
        if conn is not None and not conn.closed:
            conn.close()


class _BindInUse(Exception):
    def __init__(self, err):
        self.err = err


def _fail(fmt, addr, e):
    return ListenError((fmt % addr) + " (%s: %s)" % (e.errno, e.strerror), e)


_ACCEPT_SUFFIX = " while accepting new connection on %s"


def accept_handler(ev):
    ls = ev.data
    if ev.timedout:
        ev.timedout = False
        ls.resume_accept()
    if not ls.accepting or ls.paused:
        return
    ls.loop.requeue_accept(ls)
    pool = ls.pool
    log = pool.error_log
    lsock = ls.sock
    tcp = ls.family != socket.AF_UNIX
    for _ in range(ls.backlog):
        try:
            sock, peer = lsock.accept()
        except BlockingIOError:
            return
        except OSError as e:
            err = e.errno
            if err == errno.ECONNABORTED:
                log.error("accept4() failed (%d: %s)" + _ACCEPT_SUFFIX, err, e.strerror, ls.addr_text)
                continue
            if err == errno.EMFILE or err == errno.ENFILE:
                log.crit("accept4() failed (%d: %s)" + _ACCEPT_SUFFIX, err, e.strerror, ls.addr_text)
                ls.pause_accept()
                ls.loop.add_timer(ev, ACCEPT_DELAY)
                return
            log.alert("accept4() failed (%d: %s)" + _ACCEPT_SUFFIX, err, e.strerror, ls.addr_text)
            return

        conn = pool.get(sock, peer, ls)
        if conn is None:
            log.alert("%d worker_connections are not enough" + _ACCEPT_SUFFIX,
                      pool.worker_connections, ls.addr_text)
            sock.close()
            ls.pause_accept()
            pool.wait_for_free(ls)
            return

        try:
            sock.setblocking(False)
        except OSError as e:
            conn.log.alert("ioctl(FIONBIO) failed (%d: %s)", e.errno, e.strerror)
            conn.close()
            continue
        if tcp:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as e:
                # a peer that reset already: nothing to serve
                conn.log.info("setsockopt(TCP_NODELAY) failed (%d: %s)", e.errno, e.strerror)
                conn.close()
                continue

        if conn.log.debug_enabled:
            conn.log.debug("accept: %s fd:%d on %s", _peer_text(peer), conn.fd, ls.addr_text)
        ls._accepted = conn
        ls.handler(conn)
        ls._accepted = None
