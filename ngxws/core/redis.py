"""A non-blocking Redis client that runs on the worker's own EventLoop (no threads, no asyncio).

Theory of operation
-------------------
Two kinds of link, each one TCP (or unix) connection that lives as long as the worker:

- :class:`RedisClient` carries commands.  ``command(args, callback, data)`` encodes the command
  at once (core/resp.py) and queues it; every command queued during one loop iteration leaves in
  one ``send()`` from a posted event, so a burst is pipelined without the caller asking.  Replies
  come back in order and each pops the oldest callback: ``callback(reply, data)``.
- :class:`RedisSubscriber` holds a worker's pub/sub subscriptions.  It keeps the set of channels
  wanted (``subscribe``/``unsubscribe``), sends SUBSCRIBE/UNSUBSCRIBE for changes, batched per
  iteration, and calls ``message_handler(channel, data)`` for each message of a wanted channel and
  ``subscribed_handler(channel)`` when Redis confirms a subscription (from then on no message of
  that channel is missed, which is what a catch-up from a stream starts from).

Each link goes through these states::

    IDLE --start()--> CONNECTING --connected--> HANDSHAKE --replies OK--> READY
    CONNECTING / HANDSHAKE / READY --failure--> BACKOFF --timer--> CONNECTING
    any --close()--> CLOSED

HANDSHAKE sends what the URL asks for (``HELLO 3`` for RESP3, ``AUTH``, ``SELECT``) and waits
for every reply before any command leaves: a failed AUTH or SELECT must not let a command run
as the wrong user or in the wrong database.  A refused handshake is an outage like a refused
connect.

Failures never reach a callback from inside ``command()``: a command refused at once (link
down, queue full) gets its error from a posted event, in the same iteration.  Callbacks then
see a :class:`RedisUnavailable` instead of a reply:

- READY: commands are sent; CONNECTING and HANDSHAKE of the first connect: they wait in the
  queue (bounded), so that a worker's first commands need not race its first connect;
- during an outage (BACKOFF, and the retries' CONNECTING and HANDSHAKE): refused at once: Redis
  is down, and the caller should say so (a 503), not wait;
- a connection lost with commands in flight fails each of them: Redis may or may not have run
  them, which the error says;
- over ``max_pending`` commands or ``max_buffer_size`` unsent bytes, a command is refused at
  once: a slow or lost Redis never grows this worker's memory without bound.  A reply that stays
  away ``timeout`` ms while commands wait means Redis is lost: the link is reset.

Outages are logged once: the first failure is one ``error`` line; retries while it lasts are
``debug`` lines only; the link back is one ``notice`` line saying how long it was gone.  Retries
back off from ``backoff_min`` doubling to ``backoff_max`` ms, with up to 25% jitter so that the
workers of many nodes do not reconnect in step.

The subscriber's link is checked with a PING every ``ping_interval`` ms of silence: a PING that
stays unanswered another interval resets the link, so a peer gone without a FIN (a dead host)
is noticed.  After a reset every wanted channel is subscribed again, in batches, and confirmed
one by one through ``subscribed_handler``; messages published while the link was down are the
caller's to recover (from a stream, by id).  If the subscriber reads too slowly, Redis itself
closes the link (``client-output-buffer-limit pubsub``), which is a reset like any other.

Sockets take slots from the worker's ConnectionPool, as nginx's upstream connections do, so
``worker_connections`` bounds them too; the owning module closes its links when the worker
stops (``close()``), or the graceful exit would wait for them.
"""

import collections
import enum
import errno
import os
import random
import socket

from .loop import Event
from .resp import NEED_DATA, ProtocolError, ReplyError, encode_command, make_reader

__all__ = ["RedisURL", "RedisURLError", "parse_redis_url", "RedisClient", "RedisSubscriber",
           "RedisUnavailable", "ReplyError", "State"]

RECV_SIZE = 65536
#: SUBSCRIBE arguments per command when a whole set is subscribed again
SUBSCRIBE_BATCH = 1000

_CONNECT_PENDING = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EINTR)


class State(enum.Enum):
    IDLE = "idle"              #: not started
    CONNECTING = "connecting"  #: connect() in progress
    HANDSHAKE = "handshake"    #: connected; HELLO/AUTH/SELECT sent, their replies awaited
    READY = "ready"            #: commands flow
    BACKOFF = "backoff"        #: down; a timer retries the connect
    CLOSED = "closed"          #: closed by its owner, for good


class RedisUnavailable(Exception):
    """What a callback gets instead of a reply when Redis could not answer."""


class RedisURLError(ValueError):
    """A Redis URL that cannot be used, in nginx's words."""


class RedisURL:
    """Where Redis is and how to log in: ``redis://[user:password@]HOST[:PORT][/DB]`` or
    ``unix:[user:password@]/PATH[?db=N]`` (``unix:///PATH`` too)."""

    __slots__ = ("url", "addrs", "user", "password", "db", "name", "resp3")

    def __init__(self, url, addrs, user, password, db, name, resp3=False):
        self.url = url
        #: [(family, sockaddr)], resolved when the configuration was read
        self.addrs = addrs
        self.user = user
        self.password = password
        self.db = db
        #: for log lines: the URL without its password
        self.name = name
        #: speak RESP3 (HELLO 3) instead of RESP2
        self.resp3 = resp3


def _unquote(text):
    import urllib.parse
    return urllib.parse.unquote(text)


def parse_redis_url(url, resolve=socket.getaddrinfo):
    """Parse a Redis URL (see :class:`RedisURL`); the host is resolved here, by ``resolve``,
    which blocks: call this while the configuration is read, never from the loop."""
    user = password = None
    db = 0
    if url.startswith("unix:"):
        rest = url[5:]
        if rest.startswith("//"):
            rest = rest[2:]
        rest, _, query = rest.partition("?")
        at = rest.rfind("@")
        if at != -1:
            user, password = _userinfo(rest[:at], url)
            rest = rest[at + 1:]
        if not rest.startswith("/") or len(rest) < 2:
            raise RedisURLError('invalid unix socket path in "%s"' % url)
        for part in query.split("&") if query else ():
            key, _, value = part.partition("=")
            if key != "db" or not value.isdigit():
                raise RedisURLError('invalid parameter "%s" in "%s"' % (part, url))
            db = int(value)
        name = "unix:" + rest + ("?db=%d" % db if db else "")
        return RedisURL(url, [(socket.AF_UNIX, rest)], user, password, db, name)

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "redis":
        raise RedisURLError('invalid URL prefix in "%s"' % url)
    hostport, slash, path = rest.partition("/")
    at = hostport.rfind("@")
    if at != -1:
        user, password = _userinfo(hostport[:at], url)
        hostport = hostport[at + 1:]
    if slash and path:
        if not path.isdigit():
            raise RedisURLError('invalid database number "%s" in "%s"' % (path, url))
        db = int(path)
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise RedisURLError('invalid IPv6 address in "%s"' % url)
        host = hostport[1:close]
        tail = hostport[close + 1:]
        if tail and not tail.startswith(":"):
            raise RedisURLError('invalid host in "%s"' % url)
        port_text = tail[1:]
        family = socket.AF_INET6
        shown = "[" + host + "]"
    else:
        host, _, port_text = hostport.partition(":")
        family = socket.AF_UNSPEC
        shown = host
    if not host:
        raise RedisURLError('no host in "%s"' % url)
    if port_text or hostport.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise RedisURLError('invalid port in "%s"' % url)
        port = int(port_text)
    else:
        port = 6379
    try:
        infos = resolve(host, port, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise RedisURLError('host not found in "%s"' % url) from None
    addrs = []
    for fam, _type, _proto, _canon, sockaddr in infos:
        if (fam, sockaddr) not in addrs:
            addrs.append((fam, sockaddr))
    if not addrs:
        raise RedisURLError('host not found in "%s"' % url)
    name = "redis://%s:%d" % (shown, port) + ("/%d" % db if db else "")
    return RedisURL(url, addrs, user, password, db, name)


def _userinfo(text, url):
    user, sep, password = text.partition(":")
    if not sep:
        # redis://password@host, as redis-cli -u reads it? No: a lone name is a user without
        # a password, which AUTH cannot take
        raise RedisURLError('no password in "%s"' % url)
    return (_unquote(user) or None), _unquote(password)


def _strerror(code):
    try:
        return os.strerror(code)
    except ValueError:
        return "Unknown error %d" % code


class _Link:
    """What both kinds of link share: the connection, its handshake, backoff, the outage log."""

    def __init__(self, loop, pool, url, log, timeout=5000, connect_timeout=5000, backoff_min=100,
                 backoff_max=5000, max_buffer_size=1 << 20, reader_factory=make_reader,
                 state_handler=None, what="redis"):
        self.loop = loop
        self.pool = pool
        self.url = url
        self.log = log
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.max_buffer_size = max_buffer_size
        self.reader_factory = reader_factory
        #: called as ``state_handler(link, up)`` when the link becomes READY (up) or leaves it
        self.state_handler = state_handler
        #: "redis" or "redis subscriber", for the log
        self.what = what
        self.state = State.IDLE
        self.conn = None
        self.reader = None
        #: unsent bytes: chunks, and their total size; ``_sending`` is what a partial send left
        self._out = []
        self._out_size = 0
        self._sending = None
        #: replies the handshake still waits for
        self._handshake_left = 0
        self._addr = 0
        self._delay = 0
        #: loop ms when the current outage began (None: no outage)
        self._down_since = None
        self._attempts = 0
        self.timer = Event(_link_timer_handler, self)
        self._flush_ev = Event(_flush_handler, self)
        self.closed = False

    # -- the owner's side -----------------------------------------------------------

    @property
    def ready(self):
        return self.state is State.READY

    def start(self):
        if self.state is State.IDLE:
            self._connect()

    def close(self):
        """Close for good (worker exit); whatever waits fails with RedisUnavailable."""
        if self.state is State.CLOSED:
            return
        was_ready = self.state is State.READY
        self.state = State.CLOSED
        self.loop.del_timer(self.timer)
        self._drop_conn()
        self._fail_in_flight("redis client closed")
        self._failed_all("redis client closed")
        if was_ready:
            self._state_changed(False)

    def error_handler(self):
        """A handler of this link raised (logged at alert by the loop): start afresh."""
        if self.state is not State.CLOSED:
            self._lost("an internal error")

    # -- connecting -----------------------------------------------------------------

    def _connect(self):
        self.state = State.CONNECTING
        self._attempts += 1
        family, sockaddr = self.url.addrs[self._addr % len(self.url.addrs)]
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            self._failure("socket() failed (%d: %s)" % (e.errno, e.strerror))
            return
        sock.setblocking(False)
        conn = self.pool.get(sock, sockaddr if family != socket.AF_UNIX else "unix:")
        if conn is None:
            sock.close()
            self._failure("%d worker_connections are not enough" % self.pool.worker_connections)
            return
        if family != socket.AF_UNIX:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        conn.data = self
        # the loop hands a failed handler's event to its ``data``: this link resets itself
        conn.read.data = self
        conn.write.data = self
        conn.log.action = "connecting to " + self.what
        conn.read.handler = _read_handler
        conn.write.handler = _connect_handler
        self.conn = conn
        self.reader = self.reader_factory()
        try:
            rc = sock.connect_ex(sockaddr)
        except OSError as e:
            rc = e.errno
        if rc == 0:
            self._connected()
            return
        if rc not in _CONNECT_PENDING:
            self._failure("connect() to %s failed (%d: %s)" % (self.url.name, rc, _strerror(rc)))
            return
        self.loop.update(conn, False, True)
        self.loop.add_timer(self.timer, self.connect_timeout)

    def _connected(self):
        conn = self.conn
        conn.write.handler = _write_handler
        conn.log.action = self.what
        self.state = State.HANDSHAKE
        url = self.url
        hello = []
        if url.resp3:
            cmd = ["HELLO", "3"]
            if url.password is not None:
                cmd += ["AUTH", url.user or "default", url.password]
            hello.append(cmd)
        elif url.password is not None:
            hello.append(["AUTH", url.user, url.password] if url.user else ["AUTH", url.password])
        if url.db:
            hello.append(["SELECT", url.db])
        self._handshake_left = len(hello)
        self.loop.update(conn, True, False)
        if not hello:
            self._ready()
            return
        # only the handshake's own commands: what was queued meanwhile waits for its replies
        self.loop.add_timer(self.timer, self.connect_timeout)
        self._send(b"".join(encode_command(c) for c in hello))

    def _handshake_reply(self, reply):
        if isinstance(reply, ReplyError):
            self._failure("%s refused the connection: %s" % (self.url.name, reply), refused=True)
            return
        self._handshake_left -= 1
        if self._handshake_left == 0:
            self._ready()

    def _ready(self):
        self.state = State.READY
        self.loop.del_timer(self.timer)
        self._delay = 0
        if self._down_since is not None:
            self.log.notice("%s connection to %s is back after %.1fs and %d attempts",
                            self.what, self.url.name, (self.loop.now_ms - self._down_since) / 1000,
                            self._attempts)
            self._down_since = None
        elif self.log.debug_enabled:
            self.log.debug("%s connected to %s", self.what, self.url.name)
        self._attempts = 0
        self._on_ready()
        self._state_changed(True)
        if self._out:
            self.loop.post(self._flush_ev)

    def _state_changed(self, up):
        if self.state_handler is not None:
            self.state_handler(self, up)

    # -- failures -------------------------------------------------------------------

    def _failure(self, why, refused=False):
        """This connect or link failed: log it if an outage starts now, then back off."""
        was_ready = self.state is State.READY
        self._drop_conn()
        if not refused and not was_ready:
            # the next attempt tries the next address
            self._addr += 1
        if self._down_since is None:
            self._down_since = self.loop.now_ms
            self.log.error("%s: %s, retrying with backoff", self.what, why)
        elif self.log.debug_enabled:
            self.log.debug("%s: %s (attempt %d)", self.what, why, self._attempts)
        self.state = State.BACKOFF
        self._fail_in_flight(why)
        self._failed_all("redis is unavailable: %s" % why)
        if was_ready:
            self._state_changed(False)
        delay = self._delay = min(self.backoff_max, self._delay * 2 or self.backoff_min)
        self.loop.add_timer(self.timer, delay + random.randint(0, delay // 4))

    def _lost(self, why):
        self._failure("connection to %s lost: %s" % (self.url.name, why))

    def _drop_conn(self):
        conn = self.conn
        self.conn = None
        self.reader = None
        self._sending = None
        self.loop.delete_posted(self._flush_ev)
        if conn is not None and not conn.closed:
            conn.close()

    # -- writing --------------------------------------------------------------------

    def _queue(self, data):
        self._out.append(data)
        self._out_size += len(data)
        if self.state is State.READY:
            self.loop.post(self._flush_ev)

    def _append(self, data):
        self._out.append(data)
        self._out_size += len(data)

    def _flush(self):
        if self.state is not State.READY or self._sending is not None or not self._out:
            return
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_size = 0
        self._send(data)

    def _send(self, data):
        conn = self.conn
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self._lost("send() failed (%d: %s)" % (e.errno, e.strerror))
            return
        self._sent(len(data))
        if n < len(data):
            self._sending = memoryview(data)[n:]
            self.loop.update(conn, True, True)

    def _write_more(self):
        data = self._sending
        conn = self.conn
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost("send() failed (%d: %s)" % (e.errno, e.strerror))
            return
        if n < len(data):
            self._sending = data[n:]
            return
        self._sending = None
        self.loop.update(conn, True, False)
        if self._out:
            self._flush()

    @property
    def unsent_size(self):
        return self._out_size + (len(self._sending) if self._sending is not None else 0)

    # -- reading --------------------------------------------------------------------

    def _read(self):
        conn = self.conn
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost("recv() failed (%d: %s)" % (e.errno, e.strerror))
            return
        if not data:
            self._lost("closed by redis")
            return
        reader = self.reader
        try:
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is NEED_DATA:
                    break
                if self._handshake_left:
                    self._handshake_reply(reply)
                else:
                    self._reply(reply)
                if self.reader is not reader:
                    # the link was reset by that reply (or its callback)
                    return
        except ProtocolError as e:
            self._lost("invalid reply: %s" % e)
            return
        self._replies_read()

    # -- the kinds' own parts -------------------------------------------------------

    def _sent(self, size):
        pass

    def _on_ready(self):
        pass

    def _reply(self, reply):
        raise NotImplementedError

    def _replies_read(self):
        pass

    def _fail_in_flight(self, why):
        pass

    def _failed_all(self, why):
        pass

    def _timer(self):
        if self.state is State.BACKOFF:
            self._connect()
        elif self.state is State.CONNECTING:
            self._failure("connect() to %s timed out" % self.url.name)
        elif self.state is State.HANDSHAKE:
            self._failure("%s did not answer the handshake in time" % self.url.name)


class RedisClient(_Link):
    """Commands with callbacks, pipelined; see the module's docstring."""

    def __init__(self, loop, pool, url, log, max_pending=10000, **kw):
        super().__init__(loop, pool, url, log, **kw)
        #: at most this many commands queued or in flight
        self.max_pending = max_pending
        #: (callback, data) of the commands sent, oldest first
        self._inflight = collections.deque()
        #: (callback, data) of the commands queued but not sent, oldest first
        self._waiting = collections.deque()
        self._refused = collections.deque()
        self._refused_ev = Event(_refused_handler, self)

    def command(self, args, callback=None, data=None):
        """Queue ``args`` (a sequence of bytes/str/int); ``callback(reply, data)`` follows.

        Returns False when the command was refused at once (Redis down, queue full): the
        callback still gets a RedisUnavailable, from the loop, in this iteration.
        """
        state = self.state
        if state is State.READY or (self._down_since is None
                                    and (state is State.CONNECTING or state is State.HANDSHAKE)):
            if (len(self._inflight) + len(self._waiting) >= self.max_pending
                    or self.unsent_size >= self.max_buffer_size):
                self._refuse(callback, data, "redis queue is full (%d commands, %d bytes unsent)"
                             % (len(self._inflight) + len(self._waiting), self.unsent_size))
                return False
            self._waiting.append((callback, data))
            self._queue(encode_command(args))
            return True
        if state is State.IDLE:
            self._refuse(callback, data, "redis client is not started")
        elif state is State.CLOSED:
            self._refuse(callback, data, "redis client closed")
        else:
            self._refuse(callback, data, "redis is unavailable")
        return False

    @property
    def pending(self):
        return len(self._inflight) + len(self._waiting)

    def _refuse(self, callback, data, why):
        if callback is not None:
            self._refused.append((callback, data, why))
            self.loop.post(self._refused_ev)

    def _run_refused(self):
        refused = self._refused
        while refused:
            callback, data, why = refused.popleft()
            callback(RedisUnavailable(why), data)

    def _sent(self, size):
        # everything queued so far left with this send (or a handshake, which queued nothing)
        if self.state is State.READY and self._waiting:
            was_idle = not self._inflight
            self._inflight.extend(self._waiting)
            self._waiting.clear()
            if was_idle:
                self.loop.add_timer(self.timer, self.timeout)

    def _reply(self, reply):
        try:
            callback, data = self._inflight.popleft()
        except IndexError:
            self._lost("a reply to no command")
            return
        if callback is not None:
            callback(reply, data)

    def _replies_read(self):
        if self.state is State.READY:
            if self._inflight:
                # progress: the oldest waiting command gets a fresh timeout
                self.loop.add_timer(self.timer, self.timeout)
            else:
                self.loop.del_timer(self.timer)

    def _fail_in_flight(self, why):
        inflight = self._inflight
        self._inflight = collections.deque()
        err = RedisUnavailable("redis connection lost, the command may or may not have run: %s" % why)
        for callback, data in inflight:
            if callback is not None:
                callback(err, data)

    def _failed_all(self, why):
        self._out = []
        self._out_size = 0
        waiting = self._waiting
        self._waiting = collections.deque()
        for callback, data in waiting:
            self._refuse(callback, data, why)

    def _timer(self):
        if self.state is State.READY:
            if self._inflight:
                self._lost("no reply in %d ms" % self.timeout)
            return
        super()._timer()


class RedisSubscriber(_Link):
    """One worker's pub/sub link; see the module's docstring."""

    def __init__(self, loop, pool, url, log, message_handler, subscribed_handler=None,
                 ping_interval=30000, **kw):
        kw.setdefault("what", "redis subscriber")
        super().__init__(loop, pool, url, log, **kw)
        self.message_handler = message_handler
        self.subscribed_handler = subscribed_handler
        self.ping_interval = ping_interval
        #: the channels wanted (bytes)
        self.channels = set()
        #: changes not sent yet: channel -> True (subscribe) / False (unsubscribe)
        self._changes = {}
        self._ping_out = False
        self._heard = False
        self.ping_ev = Event(_ping_handler, self)

    def subscribe(self, channel):
        if channel in self.channels:
            return
        self.channels.add(channel)
        self._change(channel, True)

    def unsubscribe(self, channel):
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        self._change(channel, False)

    def _change(self, channel, on):
        if self.state is not State.READY:
            # the whole set is subscribed when the link is ready
            return
        self._changes[channel] = on
        self.loop.post(self._flush_ev)

    def _flush(self):
        changes = self._changes
        if changes and self.state is State.READY:
            self._changes = {}
            sub = [ch for ch, on in changes.items() if on and ch in self.channels]
            unsub = [ch for ch, on in changes.items() if not on and ch not in self.channels]
            for i in range(0, len(sub), SUBSCRIBE_BATCH):
                self._append(encode_command(["SUBSCRIBE"] + sub[i:i + SUBSCRIBE_BATCH]))
            for i in range(0, len(unsub), SUBSCRIBE_BATCH):
                self._append(encode_command(["UNSUBSCRIBE"] + unsub[i:i + SUBSCRIBE_BATCH]))
            if self.unsent_size > self.max_buffer_size:
                # Redis does not read what we send: start afresh (the set is sent again)
                self._lost("over %d bytes unsent" % self.max_buffer_size)
                return
        super()._flush()

    def _on_ready(self):
        self._changes = {ch: True for ch in self.channels}
        self._ping_out = False
        self._heard = False
        self.loop.add_timer(self.ping_ev, self.ping_interval)
        if self._changes:
            self.loop.post(self._flush_ev)

    def _failed_all(self, why):
        self._out = []
        self._out_size = 0
        self._changes = {}
        self.loop.del_timer(self.ping_ev)

    def _reply(self, reply):
        self._heard = True
        if isinstance(reply, list) and len(reply) >= 2:
            kind = reply[0]
            if kind == b"message" and len(reply) == 3:
                if reply[1] in self.channels:
                    self.message_handler(reply[1], reply[2])
                return
            if kind == b"subscribe":
                if reply[1] in self.channels and self.subscribed_handler is not None:
                    self.subscribed_handler(reply[1])
                return
            if kind == b"unsubscribe" or kind == b"pong":
                return
        if reply == b"PONG":
            return
        if isinstance(reply, ReplyError):
            self.log.error("%s: %s answered: %s", self.what, self.url.name, reply)
            return
        self._lost("unexpected reply %r" % (reply,))

    def _ping(self):
        if self.state is not State.READY:
            return
        if self._heard:
            self._heard = False
            self._ping_out = False
        elif self._ping_out:
            self._lost("no answer to PING in %d ms" % self.ping_interval)
            return
        else:
            self._ping_out = True
            self._append(b"*1\r\n$4\r\nPING\r\n")
            self.loop.post(self._flush_ev)
        self.loop.add_timer(self.ping_ev, self.ping_interval)


# -- loop entry points -----------------------------------------------------------------

def _connect_handler(ev):
    link = ev.data
    err = link.conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        link._failure("connect() to %s failed (%d: %s)" % (link.url.name, err, _strerror(err)))
        return
    link.loop.del_timer(link.timer)
    link._connected()


def _write_handler(ev):
    link = ev.data
    if link._sending is not None:
        link._write_more()


def _read_handler(ev):
    ev.data._read()


def _flush_handler(ev):
    ev.data._flush()


def _link_timer_handler(ev):
    ev.timedout = False
    ev.data._timer()


def _ping_handler(ev):
    ev.timedout = False
    ev.data._ping()


def _refused_handler(ev):
    ev.data._run_refused()
