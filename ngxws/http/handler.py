"""The HTTP connection on the worker's loop: nginx's ngx_http_request.c phases.

Theory of operation
-------------------
``init_connection`` is the Listening handler.  A connection then lives in one
``HttpConnection`` (``conn.data``) and goes through, for each request:

    wait (client_header_timeout, or keepalive_timeout after a response)
    -> read the head (one client_header_timeout for the whole head, as nginx:
       a client that drips one byte a second is still cut off on time)
    -> find the server (Host) and the location (uri)
    -> server-level then location-level ``return`` (nginx's rewrite phases run
       before access), 413 for a Content-Length over client_max_body_size
    -> allow/deny (403)
    -> content: the location's handler (its body read first, client_body_timeout
       between reads, ``100 Continue`` when asked), else static files
    -> the response is queued; once it is on the wire the request is logged and
       either the connection waits for the next one or it is closed, lingering
       when the client may still be sending.

Requests are handled one at a time: the next pipelined head is parsed only after
the response of the previous one is written, so responses go out in order and a
client that pipelines cannot make the worker buffer more than one response.
While a request is being answered the socket is not read, so a client that
sends faster than it reads meets TCP's flow control, not a growing buffer.

``Request.detach()`` hands the socket to another owner (WebSocket): the HTTP
side drops its timers and selector interest and never touches it again.  What
the kernel has not taken yet of the 101 head goes with it, for the new owner
to send first: a worker never waits for one client's socket.
"""

import errno
import os
import socket
import time
from email.utils import formatdate

from .. import NGINX_VER
from . import gzip, stub_status
from .errors import CLOSE_WITHOUT_RESPONSE, KEEPALIVE_BREAKING, error_page, \
    status_line
from .locations import normalize_host, plain_host
from .parser import Head, parse_head
from .request import ERROR, HttpError, HttpParser, Request
from .static import static_handler

from .log_module import log_request

__all__ = ["init_connection", "HttpConnection", "http_read_handler", "http_write_handler"]

#: bytes asked of recv() at a time
RECV_SIZE = 65536

_stats = stub_status.stats

_SERVER_ON = b"Server: " + NGINX_VER.encode() + b"\r\n"
_SERVER_OFF = b"Server: ngxws\r\n"
_KEEPALIVE = b"Connection: keep-alive\r\n"
_CLOSE = b"Connection: close\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: statuses add_header applies to without "always"
_ADD_HEADER_STATUSES = frozenset((200, 201, 204, 206, 301, 302, 303, 304, 307, 308))


class _DateCache:
    __slots__ = ("next", "value")

    def __init__(self):
        #: when the line goes stale: the next second of the wall clock
        self.next = 0.0
        self.value = b""

    def get(self):
        now = time.time()
        if now >= self.next or now < self.next - 1.0:     # (or the clock went back)
            sec = int(now)
            self.next = sec + 1.0
            self.value = b"Date: " + formatdate(sec, usegmt=True).encode() + b"\r\n"
        return self.value


_date = _DateCache()

#: server_tokens -> (Date line, head) of a 204 with "Connection: close" (the keep-alive one is
#: cached on its location)
_HEADS_204_CLOSE = {}


def _connection_lines(parts, loc, keep_alive):
    if keep_alive:
        parts.append(_KEEPALIVE)
        if loc.keepalive_header:
            parts.append(b"Keep-Alive: timeout=%d\r\n" % loc.keepalive_header)
    else:
        parts.append(_CLOSE)


def head_204(loc, keep_alive):
    """The head of a 204 without extra headers (a push's answer) for ``loc``: the same bytes
    until the Date changes.  Nothing in it depends on the request but keep-alive."""
    date = _date.get()
    hit = loc.head_204 if keep_alive else _HEADS_204_CLOSE.get(loc.server_tokens)
    if hit is not None and hit[0] is date:
        return hit[1]
    parts = [status_line(204), _SERVER_ON if loc.server_tokens else _SERVER_OFF, date]
    _connection_lines(parts, loc, keep_alive)
    parts.append(b"\r\n")
    data = b"".join(parts)
    if keep_alive:
        loc.head_204 = (date, data)
    else:
        _HEADS_204_CLOSE[loc.server_tokens] = (date, data)
    return data


def http_date(ts):
    return formatdate(ts, usegmt=True).encode()


# states of an HttpConnection
WAITING = 0       #: no byte of a request yet (first request, or keep-alive)
READING = 1       #: a head has started
BODY = 2          #: reading the body for the content handler
BUSY = 3          #: the content handler has the request (response pending or being written)
LINGERING = 4     #: response sent, draining what the client still sends
DETACHED = 5      #: handed over (WebSocket)


class HttpConnection:
    __slots__ = ("conn", "loop", "vs", "srv", "parser", "request", "state", "out", "out_file",
                 "processing", "lingering_deadline", "keepalive", "after_write", "deadline",
                 "one_server", "direct")

    def __init__(self, conn, vs):
        self.conn = conn
        self.loop = conn.pool.loop
        self.vs = vs
        self.srv = vs.default
        large_num, large_size = self.srv.large_client_header_buffers
        self.parser = HttpParser(large_size, large_num)
        self.request = None
        self.state = WAITING
        #: queued output: list of bytes/memoryview; out_file: (fd, offset, left) after it
        self.out = None
        self.out_file = None
        self.processing = False
        self.lingering_deadline = 0
        self.keepalive = False
        self.after_write = None
        #: when the current read timeout (header, body, keep-alive, lingering) expires, ms;
        #: 0: none.  The read event's timer may be armed earlier: it re-checks this.
        self.deadline = 0
        #: the Host header cannot pick another server here (see whole_request)
        self.one_server = len(vs.servers) == 1
        #: the server's own route for whole requests (ServerConf.direct), tried first
        self.direct = self.srv.direct if self.one_server else None

    def current_loc(self):
        """The LocationConf whose timeouts apply now: the request's, else (no request, or one
        the server's direct route ran without a Request) the server level's."""
        r = self.request
        return r.loc if r is not None else self.srv.loc

    def set_deadline(self, ms):
        """Move the read timeout; costs a timer operation only when it comes earlier."""
        loop = self.loop
        d = loop.now_ms + ms
        self.deadline = d
        rev = self.conn.read
        if not rev.timer_set or rev.deadline > d:
            loop.add_timer(rev, ms)

    # -- logging context -----------------------------------------------------

    def log_context(self):
        r = self.request
        if r is None or r.head is None or not r.head.request_line:
            if self.state == WAITING:
                return ", server: " + self.conn.listening.addr_text if self.conn.listening else ""
            parser = self.parser
            if self.state == READING and not parser.in_request_line and parser.last_line:
                return ', server: %s, request: "%s"' % (self.srv.name, parser.last_line)
            return ", server: " + self.srv.name
        text = ', server: %s, request: "%s"' % (r.srv_conf.name, r.head.request_line)
        if r.head.host:
            text += ', host: "%s"' % r.head.host
        return text

    # -- reading -------------------------------------------------------------

    def recv(self):
        """Bytes from the socket, b"" at EOF, None when nothing is ready (or the connection died)."""
        conn = self.conn
        try:
            return conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            conn.log.info("recv() failed (%d: %s)", e.errno, e.strerror)
            self.close()
            return None

    def read_ready(self, ev):
        if ev.timedout:
            ev.timedout = False
            d = self.deadline
            if d == 0:
                return
            now = self.loop.now_ms
            if now < d:
                # the deadline moved since the timer was armed (nginx would have re-armed)
                self.loop.add_timer(ev, d - now)
                return
            self.deadline = 0
            self.timed_out()
            return
        state = self.state
        if state == LINGERING:
            self.linger_read()
            return
        data = self.recv()
        if data is None:
            return
        if not data:
            self.eof()
            return
        if state == WAITING and self.one_server and not self.parser.buf:
            direct = self.direct
            if direct is not None and direct(self, data):
                return
            if self.whole_request(data):
                return
        self.parser.feed(data)
        if state == WAITING:
            self.state = READING
            self.conn.log.action = "reading client request line"
            # nginx counts a request at its first byte
            _stats.on_request()
            _stats.set_state(self.conn, "reading")
            # nginx: one client_header_timeout for the whole head
            self.set_deadline(self.srv.client_header_timeout)
        if state == BODY:
            self.body_progress()
            return
        if state == BUSY:
            # a request is being answered (perhaps later, by a backend): keep what comes
            # (pipelined requests, a WebSocket's first frames) but only so much of it
            parser = self.parser
            if parser.buffered > parser.max_head + RECV_SIZE:
                self.loop.update(self.conn, False, self.conn.write.active)
            return
        self.process()

    def eof(self):
        conn = self.conn
        state = self.state
        if state == WAITING:
            if self.keepalive:
                conn.log.info("client %s closed keepalive connection", conn.addr_text)
            self.close()
        elif state == READING:
            conn.log.action = ("reading client request line" if b"\n" not in self.parser.buf
                               else "reading client request headers")
            conn.log.info("client prematurely closed connection")
            self.log_bare(400)
            self.close()
        elif state == BODY:
            conn.log.info("client prematurely closed connection")
            r = self.request
            r.status = 400
            self.log(r)
            self.close()
        else:
            self.close()

    def timed_out(self):
        conn = self.conn
        state = self.state
        if state == WAITING:
            if not self.keepalive:
                conn.log.action = "waiting for request"
                conn.log.info("client timed out (110: Connection timed out)")
            self.close()
        elif state == READING:
            conn.log.action = ("reading client request line" if b"\n" not in self.parser.buf
                               else "reading client request headers")
            conn.log.info("client timed out (110: Connection timed out)")
            self.log_bare(408)
            self.close()
        elif state == BODY:
            conn.log.action = "reading client request body"
            conn.log.info("client timed out (110: Connection timed out)")
            r = self.request
            r.status = 408
            self.log(r)
            self.close()
        elif state == LINGERING:
            self.close()

    def process(self):
        """Parse and run buffered requests, one at a time, until one has to wait."""
        if self.processing:
            return
        self.processing = True
        try:
            parser = self.parser
            while self.state in (WAITING, READING) and not self.conn.closed:
                if parser.body_pending:
                    # the body of an answered request that nobody wanted
                    try:
                        done = parser.read_body(0)
                    except HttpError as e:
                        # the request was answered already: nothing to say but goodbye
                        self.conn.log.log(e.level, "%s", e.message)
                        self.close()
                        return
                    if done is None:
                        self.state = READING
                        self.set_deadline(self.srv.client_header_timeout)
                        return
                    continue
                try:
                    head = parser.next_head()
                except HttpError as e:
                    self.fail(e)
                    return
                if head is None:
                    if parser.buffered and self.state == WAITING:
                        self.state = READING
                        _stats.on_request()
                        _stats.set_state(self.conn, "reading")
                        self.set_deadline(self.srv.client_header_timeout)
                    return
                self.run(head)
        finally:
            self.processing = False

    # -- a request -----------------------------------------------------------

    def whole_request(self, data):
        """Run the request in ``data`` without buffering it, when that is all it holds.

        The common case of a keep-alive backend (a push): one read brings one plain
        head (http/parser.py) and exactly its Content-Length body, nothing after it,
        for a location whose content handler takes it as it is (no ``return``, no
        allow/deny, no ``Expect``, no body over the limit).  Then the steps of
        ``process()``, ``run()`` and ``body_progress()`` that can make a difference
        here are done in one go: no copy into the buffer, no search in it, no
        header timer.  Anything else returns False with ``data`` untouched, and the
        general path takes it, errors and all.
        """
        end = data.find(b"\r\n\r\n") + 4
        if end == 3:
            return False
        parser = self.parser
        h = parse_head(data[:end] if end < len(data) else data, parser.large_size)
        if h is None or h.expect_continue:
            return False
        cl = h.content_length or 0
        if len(data) - end != cl:
            return False
        srv = self.srv
        loc = srv.locations.find(h.uri)[0] or srv.loc
        handler = loc.handler
        if handler is None or loc.return_ is not None or srv.loc.return_ is not None or loc.access:
            return False
        limit = loc.client_max_body_size
        if limit and cl > limit:
            return False
        host = h.host
        if host and not plain_host(host) and normalize_host(host) is None:
            return False
        # what HttpParser._parse leaves behind for the next head's error messages
        parser.last_line = h.request_line
        parser.in_request_line = False
        _stats.on_request()
        self.begin()
        r = self.new_request(h, srv)
        if cl:
            r.body = data[end:]
        handler(r)
        return True

    def begin(self):
        """A complete head is here: the connection is busy with it until it is answered."""
        conn = self.conn
        self.deadline = 0
        conn.requests += 1
        _stats.set_state(conn, "writing")
        self.state = BUSY
        self.keepalive = False

    def new_request(self, head, srv):
        """The Request of ``head`` once its server is known: its location chosen, its
        keep-alive decided (the location's keepalive_timeout and _requests, a shutdown)."""
        conn = self.conn
        r = Request(self, conn, head, srv)
        r.start_ms = self.loop.now_ms
        r.start_time = time.time()
        self.request = r
        conn.log.action = None
        loc, r.match = srv.locations.find(head.uri)
        if loc is None:
            loc = srv.loc
        r.loc = loc
        if r.keep_alive and (loc.keepalive_timeout == 0 or conn.requests >= loc.keepalive_requests
                             or conn.close_requested):
            r.keep_alive = False
        return r

    def run(self, head):
        conn = self.conn
        self.begin()
        host = head.host
        srv = self.srv
        if host:
            name = normalize_host(host)
            if name is None:
                r = Request(self, conn, head, srv)
                r.loc = srv.loc
                self.request = r
                self.fail(HttpError(400, "client sent invalid host header"))
                return
            srv = self.vs.find(name)
        r = self.new_request(head, srv)
        loc = r.loc

        cl = head.content_length
        limit = loc.client_max_body_size
        if cl is not None and limit and cl > limit:
            # nginx checks this when it finds the location, before any rewrite
            conn.log.error("client intended to send too large body: %d bytes", cl)
            self.finalize(r, 413)
            return

        ret = srv.loc.return_ or loc.return_
        if ret is not None:
            if self.discard_now(r):
                self.do_return(r, ret)
            return

        access = loc.access
        if access and not self.allowed(access):
            conn.log.error("access forbidden by rule")
            self.finalize(r, 403)
            return

        handler = loc.handler
        if handler is None:
            if self.discard_now(r):
                static_handler(r)
            return
        if self.parser.body_pending:
            if head.expect_continue and head.http_version == b"1.1" and not self.parser.buffered:
                try:
                    conn.sock.send(_CONTINUE)
                except OSError:
                    pass
            self.state = BODY
            conn.log.action = "reading client request body"
            self.body_progress()
            return
        handler(r)

    def direct_answer(self, loc, request_line, data):
        """End a request that the server's ``direct`` hook ran by itself, without a Request.

        The hook took a whole request from one read (head and body, nothing after them)
        and has answered it, and it has checked that keep-alive goes on (no
        ``Connection: close``, ``keepalive_requests`` not reached, no shutdown) and that no
        access log or other phase wants the request.  This counts it, writes ``data`` (the
        complete response) and waits for the next request, as ``request_done`` would.
        """
        conn = self.conn
        conn.requests += 1
        _stats.on_request()
        parser = self.parser
        parser.last_line = request_line
        parser.in_request_line = False
        self.write(data)
        if conn.closed:
            return
        if self.out is not None:
            # the rest goes when the socket takes it; then the next request
            _stats.set_state(conn, "writing")
            self.state = BUSY
            self.after_write = lambda: self.keepalive_wait(loc.keepalive_timeout)
            return
        # What keepalive_wait would do, minus what is so already: the hook runs only in the
        # WAITING state (read_ready), whose read interest and stub_status state ("waiting")
        # the request changed nothing of; only the keep-alive timeout starts again.
        self.keepalive = True
        self.set_deadline(loc.keepalive_timeout)

    def keepalive_wait(self, timeout):
        """Wait for the next request on a kept-alive connection (``timeout`` ms, or None:
        the caller looks at what is buffered first)."""
        conn = self.conn
        self.state = WAITING
        self.keepalive = True
        _stats.set_state(conn, "waiting")
        if not conn.read.active:
            self.loop.update(conn, True, conn.write.active)
        if timeout is not None:
            self.set_deadline(timeout)

    def discard_now(self, r):
        """Drop the body bytes already here (nginx's discard); False when they are bad."""
        r.discard_body = True
        if self.parser.body_pending:
            try:
                self.parser.read_body(0)
            except HttpError as e:
                self.fail(e)
                return False
        return True

    def body_progress(self):
        """Read more of the body; when complete, run the handler. True once it ran."""
        r = self.request
        try:
            body = self.parser.read_body(r.loc.client_max_body_size)
        except HttpError as e:
            self.state = BUSY
            if e.status == 413 or e.level <= ERROR:
                self.conn.log.error(e.message)
            else:
                self.conn.log.info(e.message)
            self.finalize(r, e.status)
            return False
        rev = self.conn.read
        if body is None:
            if not self.deadline:
                # the first wait for this body: nginx counts it as reading
                _stats.set_state(self.conn, "reading")
            # client_body_timeout is between two reads
            self.set_deadline(r.loc.client_body_timeout)
            if not rev.active:
                self.loop.update(self.conn, True, False)
            return False
        if self.deadline:
            self.deadline = 0
            _stats.set_state(self.conn, "writing")
        self.conn.log.action = None
        self.state = BUSY
        r.body = body
        r.loc.handler(r)
        return True

    def allowed(self, rules):
        import ipaddress
        try:
            addr = ipaddress.ip_address(self.conn.addr_text)
        except ValueError:
            return True
        for net, allow in rules:
            if net is None or (addr.version == net.version and addr in net):
                return allow
        return True

    def do_return(self, r, ret):
        code, text = ret
        if text is not None and not isinstance(text, bytes):
            text = text(r).encode("latin-1")
        if code in (301, 302, 303, 307, 308):
            location = text or b""
            self.send_response(r, code, (), error_page(code, r.loc.server_tokens) or b"", b"text/html",
                               None, location)
            return
        if text is None:
            if code >= 400 or code in (300, 305) or error_page(code) is not None:
                self.finalize(r, code)
                return
            self.send_response(r, code, (), b"", r.loc.default_type.encode(), None, None)
            return
        self.send_response(r, code, (), text, r.loc.default_type.encode(), None, None)

    def fail(self, e):
        """A request that cannot go on: log nginx's line, answer, close."""
        conn = self.conn
        r = self.request
        in_head = self.state in (WAITING, READING)
        if in_head:
            conn.log.action = ("reading client request line" if self.parser.in_request_line
                               else "reading client request headers")
        if r is None or in_head:
            if in_head:
                conn.requests += 1
            head = Head()
            head.request_line = self.parser.last_line
            r = Request(self, conn, head, self.srv)
            r.loc = self.srv.loc
            r.start_ms = self.loop.now_ms
            r.start_time = time.time()
            self.request = r
        if e.message:
            conn.log.log(e.level, "%s", e.message)
        conn.log.action = None
        self.state = BUSY
        r.keep_alive = False
        _stats.set_state(conn, "writing")
        self.finalize(r, e.status)

    # -- responses -------------------------------------------------------------

    def build_head(self, r, status, headers, length, content_type, last_modified, location):
        loc = r.loc
        if status == 204 and not headers and not loc.add_headers:
            return head_204(loc, r.keep_alive)
        parts = [status_line(status), _SERVER_ON if loc.server_tokens else _SERVER_OFF, _date.get()]
        if content_type:
            parts.append(b"Content-Type: " + content_type + b"\r\n")
        if length is not None:
            parts.append(b"Content-Length: %d\r\n" % length)
        if last_modified is not None:
            parts.append(b"Last-Modified: " + http_date(last_modified) + b"\r\n")
        if location is not None and location[:1] == b"/":
            parts.append(b"Location: " + self.absolute(r, location) + b"\r\n")
            location = None
        if status != 101:
            _connection_lines(parts, loc, r.keep_alive)
        if location is not None:
            parts.append(b"Location: " + location + b"\r\n")
        for name, value in headers:
            parts.append(name + b": " + value + b"\r\n")
        if loc.add_headers:
            ok = status in _ADD_HEADER_STATUSES
            for name, value, always in loc.add_headers:
                if ok or always:
                    if not isinstance(value, bytes):
                        value = value(r).encode("latin-1")
                    if value:
                        parts.append(name + b": " + value + b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def absolute(self, r, location):
        host = normalize_host(r.head.host) if r.head.host else None
        if not host:
            host = r.srv_conf.name or self.conn.local[0]
            if ":" in host and not host.startswith("["):
                host = "[%s]" % host
        port = self.conn.local[1]
        port_text = "" if port == 80 else ":%d" % port
        return ("http://%s%s" % (host, port_text)).encode("latin-1") + location

    def send_response(self, r, status, headers, body, content_type, last_modified, location):
        if r.done:
            return
        if headers and content_type is None:
            rest = []
            for name, value in headers:
                if content_type is None and name.lower() == b"content-type":
                    content_type = value
                else:
                    rest.append((name, value))
            headers = rest
        if status in KEEPALIVE_BREAKING:
            r.keep_alive = False
        # r.response_head keeps the head as written (one reference, nothing built): the
        # $sent_http_NAME variables split it only when a log format asks
        if status == 204:
            data = r.response_head = self.build_head(r, status, headers, None, None, None, None)
        elif body is None:
            # a 304 of the static module: no body, no length, no type (nginx's not_modified filter)
            data = r.response_head = self.build_head(r, status, headers, None, None, last_modified,
                                                     None)
        elif status == 101:
            data = r.response_head = self.build_head(r, status, headers, None, None, None, None)
            r.status = 101
            r.bytes_sent += len(data)
            self.write(data)
            return
        else:
            if body.__class__ is not bytes:
                body = bytes(body)
            loc = r.loc
            if loc is not None and loc.gzip and gzip.candidate(r, loc, status, content_type, len(body)):
                data = self.gzip_response(r, status, headers, body, content_type, last_modified,
                                          location)
                if data is not None:
                    r.status = status
                    r.bytes_sent += len(data)
                    r.done = True
                    self.write(data)
                    if self.out is None and self.out_file is None:
                        self.request_done()
                    else:
                        self.after_write = self.request_done
                    return
                if loc.gzip_vary:
                    headers = (*headers, (b"Vary", b"Accept-Encoding"))
            data = r.response_head = self.build_head(r, status, headers, len(body), content_type,
                                                     last_modified, location)
            if not r.header_only:
                r.body_bytes_sent = len(body)
                data += body
        r.status = status
        r.bytes_sent += len(data)
        r.done = True
        self.write(data)
        if self.out is None and self.out_file is None:
            self.request_done()
        else:
            self.after_write = self.request_done

    def gzip_response(self, r, status, headers, body, content_type, last_modified, location):
        """The whole gzip response (head and body) when the request takes gzip, else None."""
        loc = r.loc
        if not gzip.accepts(r, loc, headers):
            return None
        out = []
        for name, value in headers:
            low = name.lower()
            if low == b"accept-ranges":
                continue
            if low == b"etag" and value[:1] == b'"':
                value = b"W/" + value
            out.append((name, value))
        if loc.gzip_vary:
            out.append((b"Vary", b"Accept-Encoding"))
        out.append((b"Content-Encoding", b"gzip"))
        packed, chunked = gzip.compress(body, loc.gzip_comp_level)
        if r.http_version >= b"1.1":
            out.append((b"Transfer-Encoding", b"chunked"))
            head = self.build_head(r, status, out, None, content_type, last_modified, location)
            payload = chunked
        else:
            head = self.build_head(r, status, out, len(packed), content_type, last_modified, location)
            payload = packed
        r.response_head = head
        r.body_bytes_sent = len(payload)
        return head + payload

    def send_file(self, r, status, headers, fd, size, content_type, last_modified):
        """A static file's response: the head, then the file by sendfile()."""
        loc = r.loc
        if loc.gzip and size <= gzip.MAX_FILE and gzip.candidate(r, loc, status, content_type, size):
            if gzip.accepts(r, loc, headers):
                try:
                    body = os.pread(fd, size, 0)
                except OSError:
                    body = None
                if body is not None and len(body) == size:
                    os.close(fd)
                    self.send_response(r, status, headers, body, content_type, last_modified, None)
                    return
            elif loc.gzip_vary:
                headers = (*headers, (b"Vary", b"Accept-Encoding"))
        data = r.response_head = self.build_head(r, status, headers, size, content_type,
                                                 last_modified, None)
        r.status = status
        r.done = True
        r.bytes_sent = len(data)
        if r.header_only or size == 0:
            os.close(fd)
            self.write(data)
        else:
            r.body_bytes_sent = size
            r.bytes_sent += size
            self.write(data)
            if self.conn.closed:
                os.close(fd)
            else:
                self.out_file = [fd, 0, size]
                if self.out is None and self.flush() is False and self.out_file is not None \
                        and not self.conn.closed:
                    self.wait_write()
        if self.out is None and self.out_file is None:
            self.request_done()
        else:
            self.after_write = self.request_done

    def finalize(self, r, status):
        if r.done:
            return
        if status in CLOSE_WITHOUT_RESPONSE:
            r.status = status
            r.done = True
            self.log(r)
            self.close()
            return
        page = error_page(status, r.loc.server_tokens if r.loc is not None else True)
        if r.loc is None:
            r.loc = r.srv_conf.loc
        if page is not None:
            self.send_response(r, status, (), page, b"text/html", None, None)
        else:
            self.send_response(r, status, (), b"", r.loc.default_type.encode(), None, None)

    # -- writing ---------------------------------------------------------------

    def write(self, data):
        conn = self.conn
        if self.out is not None:
            self.out.append(data)
            return
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self.write_error(e)
            return
        conn.sent += n
        if n < len(data):
            self.out = [memoryview(data)[n:]]
            self.wait_write()

    def wait_write(self):
        conn = self.conn
        conn.log.action = "sending response to client"
        self.loop.update(conn, conn.read.active, True)
        self.loop.add_timer(conn.write, self.current_loc().send_timeout)

    def write_error(self, e):
        conn = self.conn
        conn.log.action = "sending response to client"
        if e.errno in (errno.EPIPE, errno.ECONNRESET):
            conn.log.info("send() failed (%d: %s)", e.errno, e.strerror)
        else:
            conn.log.alert("send() failed (%d: %s)", e.errno, e.strerror)
        self.out = None
        if self.out_file is not None:
            os.close(self.out_file[0])
            self.out_file = None
        self.close()

    def flush(self):
        """Send what is queued; True when all of it went."""
        conn = self.conn
        sock = conn.sock
        out = self.out
        try:
            while out:
                chunk = out[0]
                n = sock.send(chunk)
                conn.sent += n
                if n < len(chunk):
                    out[0] = chunk[n:]
                    return False
                out.pop(0)
            self.out = None
            f = self.out_file
            while f is not None:
                fd, offset, left = f
                n = os.sendfile(sock.fileno(), fd, offset, min(left, 1 << 20))
                if n == 0:
                    raise OSError(errno.EPIPE, "file shrank")
                conn.sent += n
                f[1] += n
                f[2] -= n
                if f[2] == 0:
                    os.close(fd)
                    self.out_file = None
                    break
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            self.write_error(e)
            return False
        return True

    def write_ready(self, ev):
        conn = self.conn
        if ev.timedout:
            ev.timedout = False
            conn.log.action = "sending response to client"
            conn.log.info("client timed out (110: Connection timed out)")
            r = self.request
            if r is not None and r.status:
                self.log(r)
            if self.out_file is not None:
                os.close(self.out_file[0])
                self.out_file = None
            self.close()
            return
        if not self.flush():
            if not conn.closed:
                self.loop.add_timer(ev, self.current_loc().send_timeout)
            return
        if ev.timer_set:
            self.loop.del_timer(ev)
        self.loop.update(conn, conn.read.active, False)
        conn.log.action = None
        after = self.after_write
        self.after_write = None
        if after is not None:
            after()

    # -- after a response ----------------------------------------------------------

    def log(self, r):
        log_request(r)

    def log_bare(self, status):
        """The access log line of a request whose head never completed."""
        r = Request(self, self.conn, Head(), self.srv)
        r.loc = self.srv.loc
        r.status = status
        r.start_ms = self.loop.now_ms
        r.start_time = time.time()
        self.log(r)

    def request_done(self):
        r = self.request
        self.log(r)
        conn = self.conn
        if conn.closed or self.state == DETACHED:
            return
        if not r.keep_alive or conn.close_requested:
            self.finish(r)
            return
        self.request = None
        conn.log.action = None
        parser = self.parser
        if not (parser.buf or parser.body_left):
            self.keepalive_wait(r.loc.keepalive_timeout)
            return
        # a pipelined request (or the rest of an unwanted body) is here already
        self.keepalive_wait(None)
        if parser.buf:
            self.state = READING
            _stats.on_request()
            _stats.set_state(conn, "reading")
            self.set_deadline(self.srv.client_header_timeout)
        if not self.processing:
            # (when process() is on the stack, it picks the next request up itself)
            self.process()
        if self.state == WAITING and not conn.closed:
            self.set_deadline(r.loc.keepalive_timeout)

    def finish(self, r):
        """Close after a response, lingering when the client may still be sending (nginx)."""
        loc = r.loc
        mode = loc.lingering_close
        if mode == 2 or (mode == 1 and (self.parser.body_pending or self.parser.buffered)):
            self.linger(loc)
            return
        self.close()

    def linger(self, loc):
        conn = self.conn
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.state = LINGERING
        self.lingering_deadline = self.loop.now_ms + loc.lingering_time
        self.parser = HttpParser(1, 1)
        if not conn.read.active:
            self.loop.update(conn, True, False)
        self.set_deadline(loc.lingering_timeout)
        # some of it may have come already
        self.linger_read()

    def linger_read(self):
        conn = self.conn
        while True:
            try:
                data = conn.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            if not data:
                self.close()
                return
        if self.loop.now_ms >= self.lingering_deadline:
            self.close()
            return
        self.set_deadline(min(self.current_loc().lingering_timeout,
                              self.lingering_deadline - self.loop.now_ms))

    def close(self):
        conn = self.conn
        if conn.closed:
            return
        if self.out_file is not None:
            os.close(self.out_file[0])
            self.out_file = None
        _stats.set_state(conn, None)
        self.state = DETACHED
        conn.close()

    def detach(self, r):
        """Hand the connection over: (sock, trailing, unsent).  ``unsent`` is what the kernel
        has not taken yet of the response head (b"" mostly): the new owner sends it first,
        through the loop, as it sends everything else; the worker never waits for it here."""
        conn = self.conn
        loop = self.loop
        unsent = b"".join(self.out) if self.out else b""
        self.out = None
        self.after_write = None
        for ev in (conn.read, conn.write):
            if ev.timer_set:
                loop.del_timer(ev)
        loop.update(conn, False, False)
        trailing = self.parser.take_trailing()
        if not r.status:
            r.status = 101
        r.done = True
        self.log(r)
        self.state = DETACHED
        r.detached = True
        conn.log.action = None
        conn.log.context = None
        conn.data = None
        return conn.sock, trailing, unsent


def http_read_handler(ev):
    hc = ev.data.data
    hc.read_ready(ev)


def http_write_handler(ev):
    hc = ev.data.data
    if ev.timedout or hc.out is not None or hc.out_file is not None:
        hc.write_ready(ev)
    elif ev.timer_set:
        hc.loop.del_timer(ev)


def init_connection(conn):
    """The Listening handler for HTTP (nginx's ngx_http_init_connection)."""
    _stats.on_accept()
    _stats.on_handled()
    vs = conn.listening.servers.lookup(conn)
    hc = HttpConnection(conn, vs)
    conn.data = hc
    if not hc.srv.loc.tcp_nodelay and conn.sock.family != socket.AF_UNIX:
        # the accept handler sets TCP_NODELAY on every TCP connection; ``tcp_nodelay off`` undoes it
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        except OSError:
            pass
    conn.log.context = hc.log_context
    conn.read.handler = http_read_handler
    conn.write.handler = http_write_handler
    _stats.set_state(conn, "waiting")
    loop = hc.loop
    hc.set_deadline(hc.srv.client_header_timeout)
    loop.update(conn, True, False)
    if conn.close_requested:
        hc.close()
