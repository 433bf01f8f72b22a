"""A small keep-alive HTTP/1.1 client that runs inside the worker's own EventLoop.

Theory of operation
-------------------
One :class:`HttpClient` exists per upstream per worker.  It owns a pool of idle keep-alive
connections (at most ``keepalive`` of them, LIFO so that the warmest socket is reused and the
others can time out) and starts requests on them, or on fresh connections when none is idle.

A request goes through these steps, each bounded by a timer on the connection's events:

1. connect: a non-blocking ``connect()`` to an address resolved when the configuration was read
   (:func:`parse_url`), so the loop never waits for DNS; writability means the connect finished,
   and ``SO_ERROR`` says how (``connect_timeout``);
2. send: the request, in one buffer, written as the socket accepts it.  The head is formatted
   here: its parts are checked once (``header_block``, or trusted bytes that the caller built
   from headers already parsed and checked), not on every request;
3. read: until the response ends (``read_timeout`` between two reads, as nginx's
   proxy_read_timeout).  The common answer (HTTP/1.1, a status line, well-formed headers, one
   Content-Length, no Transfer-Encoding) is parsed by ``parse_head`` below, a strict subset of
   what h11 accepts: a hypothesis differential test (tests/unit/http/test_client.py) checks that
   whatever it accepts, h11 accepts too, with the same status, headers, body and keep-alive.
   Anything else (chunked, 1xx, HTTP/1.0, obs-fold, odd spacing, bad bytes) is handed whole to
   h11, which decides, and that connection is not reused.  Measured here, h11 took about 70% of
   the client's CPU per request (45 instead of 160 µs without it), which is why the common case
   does without it;
4. the connection returns to the pool if both sides allow keep-alive, else it is closed.

The caller's ``handler(req)`` is called exactly once, with either ``req.status``/``headers``/``body``
or ``req.error`` set, unless the caller cancelled the request first.  ``req.retryable`` tells
whether the backend cannot have seen the request (the connection failed before any byte was sent),
which is what makes a retry safe.  A request that fails on a reused keep-alive connection before any
response byte arrives is retried once on a new connection here, transparently: that is the
ordinary race of a backend closing an idle connection just as it is picked up.

Upstream sockets take slots from the worker's ConnectionPool, as in nginx, so worker_connections
bounds them too.
"""

import errno
import os
import re
import socket

import h11

from ..core.loop import Event

__all__ = ["UpstreamURL", "parse_url", "HttpClient", "ClientRequest", "URLError", "Headers",
           "header_block", "parse_head", "FALLBACK"]

#: nginx's upstream keepalive_timeout default: an idle pooled connection is closed after this
KEEPALIVE_TIMEOUT = 60_000
#: a response body larger than this is an error (Pushpin's bound for the same protocol)
MAX_RESPONSE_SIZE = 1_000_000
RECV_SIZE = 65536

_CONNECT_PENDING = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EINTR)

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_EOM = h11.EndOfMessage()

#: Linux only; see _quickack
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-9][0-9][0-9]) [\t !-~\x80-\xff]*\r\n")
_HEADER_LINE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*"
    rb"((?:[!-~\x80-\xff](?:[\t !-~\x80-\xff]*[!-~\x80-\xff])?)?)[ \t]*\r\n")
#: the longest response head parse_head reads (h11's default limit)
MAX_HEAD_SIZE = 16384
#: parse_head's answer when the response is not the common kind: let h11 judge it
FALLBACK = "fallback"


class Headers(list):
    """Response headers: a list of (lower-case name, value); ``raw_items()`` keeps the spelling."""

    __slots__ = ("raw",)

    def raw_items(self):
        return self.raw


def parse_head(buf):
    """The head of a common HTTP/1.1 response at the start of ``buf`` (bytes-like).

    Returns None (incomplete), FALLBACK (not the common kind: let h11 judge), or
    ``(status, headers, content_length, keep_alive, head_size)``.
    """
    end = buf.find(b"\r\n\r\n")
    if end == -1:
        # not yet, unless h11 could already judge: another start, or bare LF line ends (which
        # h11 accepts, so its head may be complete)
        n = len(buf)
        if (n > MAX_HEAD_SIZE or buf[:9] != b"HTTP/1.1 "[:n]
                or buf.count(b"\n") != buf.count(b"\r\n")):
            return FALLBACK
        return None
    if end > MAX_HEAD_SIZE:
        return FALLBACK
    head = bytes(buf[:end + 4])
    m = _STATUS_LINE.match(head)
    if m is None:
        return FALLBACK
    status = int(m.group(1))
    if status < 200 or status == 204 or status == 304:
        return FALLBACK
    pos = m.end()
    stop = end + 2
    headers = Headers()
    raw = []
    length = None
    keep_alive = True
    match = _HEADER_LINE.match
    while pos < stop:
        m = match(head, pos)
        if m is None:
            return FALLBACK
        pos = m.end()
        name, value = m.group(1, 2)
        lname = name.lower()
        if lname == b"content-length":
            if length is not None or not value.isdigit() or len(value) > 18:
                return FALLBACK
            length = int(value)
        elif lname == b"transfer-encoding":
            return FALLBACK
        elif lname == b"connection":
            for token in value.split(b","):
                if token.strip().lower() == b"close":
                    keep_alive = False
        headers.append((lname, value))
        raw.append((name, value))
    if length is None:
        return FALLBACK
    headers.raw = raw
    return status, headers, length, keep_alive, end + 4


def header_block(headers):
    """``[(name, value)]`` as request header lines (bytes), or ValueError for a bad one."""
    out = bytearray()
    for name, value in headers:
        if not _TOKEN.match(name) or _BAD_VALUE.search(value):
            raise ValueError("invalid header %r" % name)
        out += name
        out += b": "
        out += value
        out += b"\r\n"
    return bytes(out)


class URLError(ValueError):
    """An upstream URL that cannot be used."""


class UpstreamURL:
    """A parsed, resolved upstream URL: where to connect and what to ask for."""

    __slots__ = ("url", "addrs", "host_header", "path", "name")

    def __init__(self, url, addrs, host_header, path, name):
        self.url = url
        #: [(family, sockaddr)], resolved once, at configuration time
        self.addrs = addrs
        self.host_header = host_header
        #: the request target, bytes, always starting with "/"
        self.path = path
        #: for log lines, as nginx's upstream: "http://127.0.0.1:8080/path"
        self.name = name


def parse_url(url, resolve=socket.getaddrinfo):
    """Parse ``http://HOST[:PORT][/PATH]``, ``http://[v6]:PORT/PATH`` or ``unix:/path[:/uri]``.

    Host names are resolved here, by ``resolve`` (getaddrinfo), which blocks: call this while the
    configuration is read, never from the loop.  Raises :class:`URLError` in nginx's words.
    """
    if url.startswith("unix:"):
        rest = url[5:]
        path, sep, uri = rest.partition(":")
        if not path or not path.startswith("/"):
            raise URLError('invalid URL prefix in "%s"' % url)
        if sep and not uri.startswith("/") or _BAD_TARGET.search(uri.encode("latin-1", "replace")):
            raise URLError('invalid URI in "%s"' % url)
        uri = uri or "/"
        return UpstreamURL(url, [(socket.AF_UNIX, path)], b"localhost", uri.encode("latin-1"),
                           "http://unix:" + path + ":" + uri)

    if not url.lower().startswith("http://"):
        raise URLError('invalid URL prefix in "%s"' % url)
    rest = url[7:]
    slash = rest.find("/")
    if slash == -1:
        hostport, uri = rest, "/"
    else:
        hostport, uri = rest[:slash], rest[slash:]
    if _BAD_TARGET.search(uri.encode("latin-1", "replace")):
        raise URLError('invalid URI in "%s"' % url)
    if "@" in hostport:
        raise URLError('invalid host in upstream "%s"' % rest)
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise URLError('invalid IPv6 address in upstream "%s"' % rest)
        host = hostport[1:close]
        tail = hostport[close + 1:]
        if tail and not tail.startswith(":"):
            raise URLError('invalid host in upstream "%s"' % rest)
        port_text = tail[1:] if tail else ""
        family = socket.AF_INET6
    else:
        host, sep, port_text = hostport.partition(":")
        if sep and not port_text:
            raise URLError('invalid port in upstream "%s"' % rest)
        family = socket.AF_UNSPEC
    if not host:
        raise URLError('no host in upstream "%s"' % rest)
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise URLError('invalid port in upstream "%s"' % rest)
        port = int(port_text)
    else:
        port = 80
    try:
        infos = resolve(host, port, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise URLError('host not found in upstream "%s"' % hostport) from None
    addrs = []
    for fam, _type, _proto, _canon, sockaddr in infos:
        if (fam, sockaddr) not in addrs:
            addrs.append((fam, sockaddr))
    if not addrs:
        raise URLError('host not found in upstream "%s"' % hostport)
    host_header = hostport if port_text else host if family != socket.AF_INET6 else "[" + host + "]"
    return UpstreamURL(url, addrs, host_header.encode("idna"), uri.encode("latin-1"),
                       "http://" + hostport + uri)


class ClientRequest:
    """One request: what was asked, then what came back (or why nothing did)."""

    __slots__ = ("client", "method", "target", "headers", "body", "handler", "data", "log",
                 "status", "response_headers", "response_body", "error", "retryable",
                 "_peer", "_done", "_reused_retry", "_addr_tries")

    def __init__(self, client, method, target, headers, body, handler, data, log):
        self.client = client
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.handler = handler
        #: the caller's own
        self.data = data
        self.log = log
        self.status = 0
        #: iterates as [(lower-case bytes name, bytes value)]; raw_items() keeps the spelling
        self.response_headers = None
        self.response_body = b""
        #: None, or what went wrong, in nginx's words ("connect() failed (111: ...) while ...")
        self.error = None
        #: the backend cannot have seen this request
        self.retryable = False
        self._peer = None
        self._done = False
        self._reused_retry = False
        #: addresses tried after the first failed, for this request
        self._addr_tries = 0

    def header(self, name):
        """The first response header ``name`` (lower-case bytes), or None."""
        for n, v in self.response_headers or ():
            if n == name:
                return v
        return None

    def cancel(self):
        """Forget the request: the handler will not be called and its connection is closed."""
        if self._done:
            return
        self._done = True
        peer = self._peer
        self._peer = None
        if peer is not None:
            peer.req = None
            self.client.active -= 1
            peer.close()


class _Peer:
    """The client's state for one upstream connection (the loop's Connection's ``data``)."""

    __slots__ = ("client", "conn", "h11", "req", "out", "sent_any", "got_any", "reused",
                 "body", "body_size", "status", "headers", "action", "addr", "quickack",
                 "buf", "length", "keep_alive")

    def __init__(self, client, conn, addr):
        self.client = client
        self.conn = conn
        self.addr = addr
        #: None on the common path; an h11 Connection once a response needed it
        self.h11 = None
        #: response bytes read so far, and the body length once the head is parsed (-1 before)
        self.buf = bytearray()
        self.length = -1
        self.keep_alive = False
        self.req = None
        self.out = None
        self.sent_any = False
        self.got_any = False
        self.reused = False
        self.body = None
        self.body_size = 0
        self.status = 0
        self.headers = None
        self.action = "connecting to upstream"
        self.quickack = _TCP_QUICKACK is not None and isinstance(addr, tuple)

    def close(self):
        conn = self.conn
        if not conn.closed:
            conn.close()


class HttpClient:
    """The pooled client of one upstream in one worker."""

    __slots__ = ("loop", "pool", "url", "keepalive", "connect_timeout", "read_timeout",
                 "max_response_size", "idle", "log", "_next_addr", "active", "_state_requests")

    def __init__(self, loop, pool, url, log, keepalive=16, connect_timeout=60_000,
                 read_timeout=60_000, max_response_size=MAX_RESPONSE_SIZE):
        self.loop = loop
        #: the worker's ConnectionPool
        self.pool = pool
        self.url = url
        self.log = log
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_response_size = max_response_size
        #: idle keep-alive connections, most recently used last
        self.idle = []
        self._next_addr = 0
        #: connections with a request on them
        self.active = 0
        self._state_requests = {}

    # -- the caller's side ------------------------------------------------------

    def request(self, method, target, headers, body, handler, data=None, log=None):
        """Start a request; ``handler(req)`` is called once when it ends (unless cancelled).

        ``headers``: a list of (bytes, bytes), checked here, or a ``bytes`` block of
        ``name: value\\r\\n`` lines that the caller vouches for (see ``header_block``); Host and
        Content-Length are added.  The handler is never called from inside this call: a failure
        to even start is reported from the loop, so the caller's state is consistent when it runs.
        """
        req = ClientRequest(self, method, target, headers, body, handler, data, log or self.log)
        if type(headers) is not bytes:
            try:
                req.headers = header_block(headers)
            except ValueError as e:
                self._fail_soon(req, "invalid request to upstream: %s" % e, False)
                return req
        if _BAD_TARGET.search(target):
            self._fail_soon(req, "invalid request to upstream: invalid target %r" % target, False)
            return req
        self._start(req)
        return req

    def close_idle(self):
        """Close every idle connection (worker exit)."""
        idle = self.idle
        self.idle = []
        for peer in idle:
            peer.close()

    # -- starting ---------------------------------------------------------------

    def _start(self, req):
        idle = self.idle
        while idle:
            peer = idle.pop()
            if peer.conn.closed:
                continue
            conn = peer.conn
            self.loop.del_timer(conn.read)
            conn.read.handler = _read_handler
            peer.reused = True
            self._attach(peer, req)
            self._send_request(peer)
            return
        self._connect(req)

    def _attach(self, peer, req):
        peer.req = req
        req._peer = peer
        peer.sent_any = False
        peer.got_any = False
        peer.body = None
        peer.body_size = 0
        peer.status = 0
        peer.headers = None
        peer.length = -1
        self.active += 1

    def _connect(self, req):
        addrs = self.url.addrs
        family, sockaddr = addrs[self._next_addr % len(addrs)]
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            self._fail_soon(req, "socket() failed (%d: %s) while connecting to upstream"
                            % (e.errno, e.strerror), True)
            return
        sock.setblocking(False)
        conn = self.pool.get(sock, sockaddr if family != socket.AF_UNIX else "unix:")
        if conn is None:
            sock.close()
            self._fail_soon(req, "%d worker_connections are not enough while connecting to upstream"
                            % self.pool.worker_connections, True)
            return
        if family != socket.AF_UNIX:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = _Peer(self, conn, sockaddr)
        conn.data = peer
        conn.log.action = "connecting to upstream"
        conn.read.handler = _read_handler
        conn.write.handler = _connect_handler
        self._attach(peer, req)
        try:
            rc = sock.connect_ex(sockaddr)
        except OSError as e:
            rc = e.errno
        if rc == 0:
            self._send_request(peer)
            return
        if rc not in _CONNECT_PENDING:
            # EAGAIN on a unix socket means a full backlog: as refused, and as retryable
            self._fail(peer, "connect() failed (%d: %s) while connecting to upstream"
                       % (rc, _strerror(rc)), True)
            return
        self.loop.update(conn, False, True)
        self.loop.add_timer(conn.write, self.connect_timeout)

    def _fail_soon(self, req, error, retryable):
        # failures reach the handler from the loop, never from inside request(), so that the
        # caller's state is consistent when it runs; they are rare enough for a timer each
        req.error = error
        req.retryable = retryable
        self.loop.add_timer(Event(_late_handler, req), 0)

    # -- sending ----------------------------------------------------------------

    def _send_request(self, peer):
        req = peer.req
        conn = peer.conn
        conn.write.handler = _write_handler
        conn.log.action = "sending request to upstream"
        peer.action = "sending request to upstream"
        body = req.body
        out = b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
            req.method, req.target, self.url.host_header, len(body), req.headers, body)
        peer.out = memoryview(out)
        self._write(peer)

    def _state_request(self, method):
        """The request h11 is told of: ours without its body and extra headers (cached)."""
        ev = self._state_requests.get(method)
        if ev is None:
            ev = h11.Request(method=method, target=b"/",
                             headers=[(b"host", self.url.host_header), (b"content-length", b"0")])
            self._state_requests[method] = ev
        return ev

    def _write(self, peer):
        conn = peer.conn
        out = peer.out
        try:
            n = conn.sock.send(out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self._io_error(peer, "send", e)
            return
        if n:
            peer.sent_any = True
        if n < len(out):
            peer.out = out[n:]
            self.loop.update(conn, False, True)
            self.loop.add_timer(conn.write, self.read_timeout)
            return
        peer.out = None
        if peer.quickack:
            _quickack(conn.sock)
        self.loop.del_timer(conn.write)
        conn.log.action = peer.action = "reading response header from upstream"
        self.loop.update(conn, True, False)
        self.loop.add_timer(conn.read, self.read_timeout)

    # -- reading ----------------------------------------------------------------

    def _read(self, peer):
        conn = peer.conn
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._io_error(peer, "recv", e)
            return
        if data:
            peer.got_any = True
            if peer.quickack:
                _quickack(conn.sock)
            self.loop.add_timer(conn.read, self.read_timeout)
        if peer.h11 is not None:
            self._read_h11(peer, data)
            return
        if not data:
            self._premature(peer)
            return
        buf = peer.buf
        buf += data
        if peer.length < 0:
            head = parse_head(buf)
            if head is None:
                return
            if head is FALLBACK:
                self._to_h11(peer)
                return
            peer.status, peer.headers, length, peer.keep_alive, size = head
            if length > self.max_response_size:
                self._fail(peer, "upstream sent too big body: over %d bytes"
                           % self.max_response_size, False)
                return
            peer.length = length
            del buf[:size]
            conn.log.action = peer.action = "reading upstream"
        length = peer.length
        if len(buf) < length:
            return
        if len(buf) > length:
            # bytes after the response: nothing was asked for them, so this connection is done
            peer.keep_alive = False
        peer.body = [bytes(buf[:length])]
        peer.buf = bytearray()
        self._finish(peer)

    def _to_h11(self, peer):
        """An uncommon response: h11 parses it from its first byte, and judges it."""
        h = h11.Connection(h11.CLIENT)
        h.send(self._state_request(peer.req.method))
        h.send(_EOM)
        peer.h11 = h
        data = bytes(peer.buf)
        peer.buf = bytearray()
        self._read_h11(peer, data)

    def _read_h11(self, peer, data):
        h = peer.h11
        conn = peer.conn
        h.receive_data(data)
        try:
            while True:
                ev = h.next_event()
                if ev is h11.NEED_DATA:
                    if not data:
                        self._premature(peer)
                    return
                t = type(ev)
                if t is h11.Response:
                    peer.status = ev.status_code
                    peer.headers = ev.headers
                    peer.body = []
                    conn.log.action = peer.action = "reading upstream"
                elif t is h11.Data:
                    peer.body_size += len(ev.data)
                    if peer.body_size > self.max_response_size:
                        self._fail(peer, "upstream sent too big body: over %d bytes"
                                   % self.max_response_size, False)
                        return
                    peer.body.append(ev.data)
                elif t is h11.EndOfMessage:
                    # this connection is not reused: the common path does not know h11's state
                    peer.keep_alive = False
                    self._finish(peer)
                    return
                elif t is h11.ConnectionClosed or ev is h11.PAUSED:
                    self._premature(peer)
                    return
                # an InformationalResponse (1xx) is skipped: the final response follows
        except h11.RemoteProtocolError as e:
            if not data:
                self._premature(peer)
            else:
                self._fail(peer, "upstream sent invalid response: %s" % e, False)

    def _premature(self, peer):
        if peer.status:
            msg = "upstream prematurely closed connection while reading upstream"
        else:
            msg = "upstream prematurely closed connection while reading response header from upstream"
        self._fail(peer, msg, False, stale=True)

    def _finish(self, peer):
        req = peer.req
        self.active -= 1
        peer.req = None
        req._peer = None
        conn = peer.conn
        loop = self.loop
        loop.del_timer(conn.read)
        loop.del_timer(conn.write)
        if peer.keep_alive and len(self.idle) < self.keepalive and not loop.exiting:
            conn.log.action = peer.action = "keepalive"
            conn.read.handler = _idle_handler
            loop.update(conn, True, False)
            loop.add_timer(conn.read, KEEPALIVE_TIMEOUT)
            self.idle.append(peer)
        else:
            peer.close()
        if req._done:
            return
        req._done = True
        req.status = peer.status
        req.response_headers = peer.headers
        body = peer.body
        req.response_body = body[0] if len(body) == 1 else b"".join(body)
        req.handler(req)

    # -- failures ---------------------------------------------------------------

    def _io_error(self, peer, call, e):
        if peer.action == "connecting to upstream":
            self._fail(peer, "connect() failed (%d: %s) while connecting to upstream"
                       % (e.errno, e.strerror), True)
        else:
            self._fail(peer, "%s() failed (%d: %s) while %s"
                       % (call, e.errno, e.strerror, peer.action), not peer.sent_any, stale=True)

    def _fail(self, peer, error, retryable, stale=False):
        """End ``peer``'s request with ``error``.

        ``stale``: the connection was closed or reset by the backend (not a timeout), which on a
        reused keep-alive connection with no response byte yet is the idle-close race.
        """
        req = peer.req
        peer.req = None
        connecting = peer.action == "connecting to upstream"
        peer.close()
        if req is None:
            return
        self.active -= 1
        req._peer = None
        if connecting:
            # the next connection tries the next address
            self._next_addr += 1
        if req._done:
            return
        if connecting and req._addr_tries + 1 < len(self.url.addrs):
            # a name with several addresses: try the next one now (nginx's next upstream)
            req._addr_tries += 1
            req.log.warn("%s, upstream: \"%s\", trying the next address", error, self.url.name)
            self._connect(req)
            return
        if stale and peer.reused and not peer.got_any and not req._reused_retry:
            # the backend closed an idle connection as we picked it: once more, on a new one
            req._reused_retry = True
            self._connect(req)
            return
        self._fail_soon(req, error, retryable)


def _late_handler(ev):
    req = ev.data
    if req._done:
        return
    req._done = True
    req.handler(req)


def _quickack(sock):
    """Ask Linux to acknowledge the next segments at once (the flag does not stick).

    Backends that write a response head and its body in two send() calls without TCP_NODELAY
    (Python's http.server is one) hold the body back until the head is acknowledged (Nagle),
    while our delayed ACK waits up to 40 ms for more data: every answer would take 40 ms.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
    except OSError:
        pass


def _strerror(code):
    try:
        return os.strerror(code)
    except ValueError:
        return "Unknown error %d" % code


# -- loop entry points ------------------------------------------------------------

def _connect_handler(ev):
    conn = ev.data
    peer = conn.data
    client = peer.client
    if ev.timedout:
        ev.timedout = False
        client._fail(peer, "upstream timed out (110: Connection timed out) while connecting to upstream",
                     True)
        return
    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        client._fail(peer, "connect() failed (%d: %s) while connecting to upstream"
                     % (err, _strerror(err)), True)
        return
    client.loop.del_timer(ev)
    client._send_request(peer)


def _write_handler(ev):
    conn = ev.data
    peer = conn.data
    if ev.timedout:
        ev.timedout = False
        peer.client._fail(peer, "upstream timed out (110: Connection timed out) while %s"
                          % peer.action, not peer.sent_any)
        return
    if peer.out is not None:
        peer.client._write(peer)


def _read_handler(ev):
    conn = ev.data
    peer = conn.data
    if ev.timedout:
        ev.timedout = False
        peer.client._fail(peer, "upstream timed out (110: Connection timed out) while %s"
                          % peer.action, False)
        return
    peer.client._read(peer)


def _idle_handler(ev):
    """An idle pooled connection became readable (the backend closed it) or timed out."""
    conn = ev.data
    peer = conn.data
    client = peer.client
    ev.timedout = False
    try:
        client.idle.remove(peer)
    except ValueError:
        pass
    peer.close()
