"""Request heads and bodies: bytes in, ``Head`` records or ``HttpError`` out (sans-IO).

Theory of operation
-------------------
``HttpParser`` is one per client connection and holds the bytes not yet
consumed.  It finds the end of each request head itself (nginx skips empty
lines before a request line and accepts bare LF line ends; so does this), so
that it can apply nginx's buffer limits with nginx's statuses before any
parsing: a request line longer than a large header buffer is a 414, a header
line longer than one, or a head longer than all of them, is a 400 "Request
Header Or Cookie Too Large" (nginx's 494).

A complete plain head (printable target in origin or absolute form, HTTP/1.0
or 1.1, token names, printable values, one Host, a digit Content-Length, no
Transfer-Encoding) is parsed by ``http/parser.py`` without h11; a hypothesis
differential test holds it to this module's h11 path (same acceptance, the same
``Head`` slot by slot).  Every other head goes to h11 whole, which does the
strict RFC 9112 parsing and finds the errors: a fresh ``h11.Connection`` per
such head (about 1.5 µs), because ngxws writes its responses itself, in nginx's
exact form, and an h11 connection that sent no response cannot start its next
cycle.  Measured here: ~5-8 µs per plain push head against ~50-100 µs through
h11.  On top of h11, what nginx refuses and h11 lets through is refused here:
obs-fold, a duplicate Content-Length or Host even when equal, Content-Length
together with Transfer-Encoding, lower-case methods, HTTP/2+ request lines
(505), targets that are not an origin or absolute form, and paths that climb
above the root.

Bodies: Content-Length bodies are cut from the buffer here; chunked bodies
are decoded by the head's h11 connection (bad chunk sizes are its to find),
and the bytes it holds past the last chunk come back to this buffer.  Of the
server side, only this module uses h11 (DESIGN.md "HTTP parsing and its
cost"), and only its public API; http/client.py, the upstream client, uses it
for the backends' responses.
"""

import re

import h11

from . import parser as _parser
from .parser import REQUEST_LINE_LOG_SIZE, Head, keep_alive, normalize_uri, split_absolute
from .errors import HttpError, REQUEST_HEADER_TOO_LARGE

__all__ = ["HttpParser", "HttpError", "Request", "ERROR", "INFO"]

# core/log.py level numbers, without importing the I/O side
ERROR = 4
INFO = 7

_HEAD_END = re.compile(rb"\n\r?\n")
_CL_LINE = re.compile(rb"\ncontent-length[ \t]*:", re.IGNORECASE)
# nginx takes only digits (ngx_atoof); h11 folds a list such as "5, 5" into one value
_CL_VALUE = re.compile(rb"\ncontent-length[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?\n", re.IGNORECASE)


_METHOD_PREFIX = re.compile(rb"[A-Z_-]*")


def _header_list(hs):
    """An h11 Headers as [(lower-case name, value)]: from the public raw_items() (h11 0.14+),
    lower-cased as h11 lower-cases them; a third of the cost of iterating the Sequence."""
    return [(n.lower(), v) for n, v in hs.raw_items()]


def _h11_message(exc):
    """nginx's wording and status for an h11 complaint."""
    text = str(exc)
    if text.startswith(("illegal request line", "no request line")):
        return 400, "client sent invalid request", True
    if text.startswith("Missing mandatory Host"):
        return 400, 'client sent HTTP/1.1 request without "Host" header', False
    if text.startswith("conflicting Content-Length"):
        return 400, 'client sent duplicate header line: "Content-Length"', False
    if text.startswith("bad Content-Length"):
        return 400, 'client sent invalid "Content-Length" header', False
    if text.startswith("Only Transfer-Encoding"):
        return 501, 'client sent unknown "Transfer-Encoding"', False
    if text.startswith("Found multiple Host"):
        return 400, "client sent duplicate host header", False
    if text.startswith("multiple Transfer-Encoding"):
        return 400, 'client sent duplicate header line: "Transfer-Encoding"', False
    return 400, "client sent invalid header line", False


class HttpParser:
    """The request stream of one connection."""

    __slots__ = ("buf", "scan", "large_size", "max_head", "_h11", "body", "body_left",
                 "body_size", "in_request_line", "last_line")

    def __init__(self, large_size=8192, large_num=4):
        self.buf = bytearray()
        # where the search for the end of the head resumes
        self.scan = 0
        self.large_size = large_size
        self.max_head = large_size * large_num
        self._h11 = None
        #: body parts read so far
        self.body = None
        #: Content-Length bytes still to come; -1 for chunked
        self.body_left = 0
        self.body_size = 0
        #: for the error log's "while reading client request line/headers"
        self.in_request_line = True
        #: the request line of the last head seen, for the error log of a bad one
        self.last_line = ""

    def feed(self, data):
        if not data:
            return
        if self._h11 is not None:
            self._h11.receive_data(data)
        else:
            self.buf += data

    def feed_eof(self):
        if self._h11 is not None:
            self._h11.receive_data(b"")

    @property
    def buffered(self):
        """Bytes received and not yet consumed (a pipelined request, say)."""
        return len(self.buf)

    # -- heads ---------------------------------------------------------------

    def next_head(self):
        """A Head when a complete head is buffered, else None; HttpError when it is bad."""
        buf = self.buf
        if not buf:
            return None
        if buf[0] in (13, 10):
            # nginx skips empty lines before a request line
            i = 0
            n = len(buf)
            while i < n and buf[i] in (13, 10):
                i += 1
            del buf[:i]
            self.scan = 0
            if not buf:
                return None
        m = _HEAD_END.search(buf, self.scan)
        if m is None:
            self._check_partial()
            self.scan = max(0, len(buf) - 2)
            return None
        end = m.end()
        head = bytes(buf[:end])
        del buf[:end]
        self.scan = 0
        self.in_request_line = True
        return self._parse(head)

    def _check_partial(self):
        buf = self.buf
        nl = buf.find(b"\n")
        size = self.large_size
        end = _METHOD_PREFIX.match(buf).end()
        # the error log shows the request line as far as it came
        cut = min(nl if nl != -1 else len(buf), REQUEST_LINE_LOG_SIZE)
        self.last_line = buf[:cut].rstrip(b"\r").decode("latin-1")
        if end < len(buf) and (buf[end] != 32 or end == 0):
            # nginx refuses a bad method at its first byte (a TLS hello, say)
            raise HttpError(400, "client sent invalid method")
        if nl == -1 or nl + 1 > size:
            if len(buf) > size:
                raise HttpError(414, "client sent too long URI")
            return
        self.in_request_line = False
        if len(buf) > self.max_head or len(buf) - buf.rfind(b"\n") - 1 > size:
            raise HttpError(REQUEST_HEADER_TOO_LARGE, "client sent too long header line")

    def _parse(self, head):
        h = _parser.parse_head(head, self.large_size)
        if h is not None:
            # a plain head (http/parser.py): the Head the h11 path would give
            self.last_line = h.request_line
            self.in_request_line = False
            self.body_left = h.content_length or 0
            self.body = None
            self.body_size = 0
            return h
        return self._parse_general(head)

    def _parse_general(self, head):
        """Any complete head, by h11 and nginx's own checks: a Head, or HttpError."""
        size = self.large_size
        nl = head.find(b"\n")
        self.last_line = head[:min(nl, REQUEST_LINE_LOG_SIZE)].rstrip(b"\r").decode("latin-1")
        if nl + 1 > size:
            raise HttpError(414, "client sent too long URI")
        self.in_request_line = False
        if len(head) > size:
            if len(head) > self.max_head:
                raise HttpError(REQUEST_HEADER_TOO_LARGE, "client sent too long header line")
            for line in head.split(b"\n"):
                if len(line) + 1 > size:
                    raise HttpError(REQUEST_HEADER_TOO_LARGE, "client sent too long header line")
        end = _METHOD_PREFIX.match(head).end()
        if end == 0 or head[end] != 32:
            self.in_request_line = True
            raise HttpError(400, "client sent invalid method")
        if b"\n " in head or b"\n\t" in head:
            raise HttpError(400, "client sent invalid header line")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        conn.receive_data(head)
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as e:
            status, msg, in_line = _h11_message(e)
            self.in_request_line = in_line
            raise HttpError(status, msg) from None
        if type(ev) is not h11.Request:
            raise HttpError(400, "client sent invalid request")
        method = ev.method
        target_b = ev.target
        version = ev.http_version
        headers = _header_list(ev.headers)
        h = Head()
        h.length = len(head)
        if version[0] != 49:    # "1"
            self.in_request_line = True
            if version[0] > 49:
                raise HttpError(505, "client sent invalid version")
            raise HttpError(400, "client sent invalid request")
        h.method = method.decode("ascii")
        target = target_b.decode("latin-1")
        h.target = target
        h.http_version = b"1.0" if version == b"1.0" else b"1.1"
        # nginx's $request: the line as it came
        h.request_line = self.last_line
        host = ""
        if target[0] != "/":
            parts = split_absolute(target)
            if parts is None:
                self.in_request_line = True
                raise HttpError(400, "client sent invalid request")
            host, target = parts
        q = target.find("?")
        if q == -1:
            h.path = target
        else:
            h.path = target[:q]
            h.args = target[q + 1:]
        uri = normalize_uri(h.path)
        if uri is None:
            self.in_request_line = True
            raise HttpError(400, "client sent invalid request")
        h.uri = uri

        h.headers = headers
        seen_host = False
        connection = None
        for name, value in headers:
            if name == b"host":
                if seen_host:
                    raise HttpError(400, "client sent duplicate host header")
                seen_host = True
                if not host:
                    host = value.decode("latin-1")
            elif name == b"content-length":
                h.content_length = int(value)
            elif name == b"transfer-encoding":
                h.chunked = True
            elif name == b"connection":
                connection = value.lower()
            elif name == b"expect":
                h.expect_continue = value.lower() == b"100-continue"
            elif name == b"authorization":
                if h.authorization is None:
                    h.authorization = value
            elif name == b"content-type":
                if h.content_type is None:
                    h.content_type = value
        h.host = host
        if h.content_length is not None:
            if h.chunked:
                raise HttpError(400, 'client sent "Content-Length" and "Transfer-Encoding" headers '
                                     'at the same time')
            if len(_CL_LINE.findall(head)) > 1:
                raise HttpError(400, 'client sent duplicate header line: "Content-Length"')
            m = _CL_VALUE.search(head)
            if m is not None and not m.group(1).isdigit():
                raise HttpError(400, 'client sent invalid "Content-Length" header')
        h.keep_alive = keep_alive(h.http_version == b"1.1", connection)
        if h.chunked:
            # h11 decodes the chunks; it owns the stream until the body ends
            if self.buf:    # (receive_data(b"") would mean EOF)
                conn.receive_data(bytes(self.buf))
                self.buf.clear()
            self._h11 = conn
            self.body_left = -1
        else:
            self.body_left = h.content_length or 0
        self.body = None
        self.body_size = 0
        return h

    # -- bodies --------------------------------------------------------------

    def read_body(self, max_size=0):
        """The whole body once it is buffered, else None; HttpError when it is bad.

        ``max_size`` (0: no limit) applies to chunked bodies as they arrive;
        a Content-Length is checked by the caller before reading starts.
        """
        left = self.body_left
        if left == 0:
            return self._body_done()
        if left > 0:
            buf = self.buf
            if len(buf) >= left:
                part = bytes(buf[:left])
                del buf[:left]
                self.body_left = 0
                self.body_size += left
                self._add(part)
                return self._body_done()
            if buf:
                self.body_left = left - len(buf)
                self.body_size += len(buf)
                self._add(bytes(buf))
                buf.clear()
            return None
        conn = self._h11
        while True:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError:
                raise HttpError(400, "client sent invalid chunked body", ERROR) from None
            t = type(ev)
            if t is h11.Data:
                self.body_size += len(ev.data)
                if max_size and self.body_size > max_size:
                    raise HttpError(413, "client intended to send too large chunked body: %d bytes"
                                    % self.body_size, ERROR)
                self._add(bytes(ev.data))
            elif t is h11.EndOfMessage:
                rest = conn.trailing_data[0]
                self._h11 = None
                self.buf = bytearray(rest)
                self.body_left = 0
                return self._body_done()
            elif ev is h11.NEED_DATA:
                return None
            else:
                # PAUSED or ConnectionClosed mid-body
                raise HttpError(400, "client prematurely closed connection", INFO)

    def _add(self, part):
        if self.body is None:
            self.body = [part]
        else:
            self.body.append(part)

    def _body_done(self):
        parts = self.body
        self.body = None
        if not parts:
            return b""
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def body_pending(self):
        """Some of the current body has still to arrive."""
        return self.body_left != 0

    def take_trailing(self):
        """Everything buffered past the current head (and body), handing it over."""
        if self._h11 is not None:
            data = self._h11.trailing_data[0]
            self._h11 = None
        else:
            data = bytes(self.buf)
        self.buf = bytearray()
        return data


class Request:
    """One request as the content handlers see it.

    The I/O side (http/handler.py) creates it and gives it ``hc``, the object that
    owns the connection's HTTP state; the response methods delegate to it.
    """

    __slots__ = ("hc", "conn", "head", "method", "target", "uri", "args", "headers", "http_version",
                 "body", "srv_conf", "loc", "status", "discard_body", "header_only", "start_ms",
                 "start_time", "bytes_sent", "body_bytes_sent", "match", "keep_alive", "detached",
                 "done", "ctx", "response_head")

    def __init__(self, hc, conn, head, srv_conf):
        self.hc = hc
        self.conn = conn
        self.head = head
        self.method = head.method
        self.target = head.target
        self.uri = head.uri
        self.args = head.args
        self.headers = head.headers
        self.http_version = head.http_version
        self.body = b""
        self.srv_conf = srv_conf
        #: the core LocationConf chosen for this request
        self.loc = None
        self.status = 0
        #: set by a content handler (before it returns) that does not want the body read
        self.discard_body = False
        self.header_only = head.method == "HEAD"
        self.start_ms = 0
        self.start_time = 0.0
        self.bytes_sent = 0
        self.body_bytes_sent = 0
        #: the re.Match of a regex location, for captures
        self.match = None
        self.keep_alive = head.keep_alive
        self.detached = False
        self.done = False
        #: per-request data of other modules, by module name
        self.ctx = None
        #: the response's head as written (bytes, up to its empty line), None before it:
        #: kept as it is, its headers are split only when asked (``response_headers``)
        self.response_head = None

    @property
    def response_headers(self):
        """The response's headers as sent, [(name, value)] as bytes (the name spelt as sent),
        nginx's own Server and Date first; () before a response ($sent_http_NAME)."""
        head = self.response_head
        if not head:
            return ()
        out = []
        for line in head.split(b"\r\n")[1:-2]:
            name, _, value = line.partition(b": ")
            out.append((name, value))
        return out

    @property
    def trailing(self):
        """Bytes read past the head (and body), not yet consumed."""
        return bytes(self.hc.parser.buf)

    def header(self, name):
        """The first value of header ``name`` (bytes, any case), or None."""
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def loc_conf(self, module):
        """The loc conf of ``module`` (its name or the module) for this request's location."""
        return self.loc.module_conf(module if isinstance(module, str) else module.name)

    def send_response(self, status, headers=(), body=b"", content_type=None, last_modified=None,
                      location=None):
        """Answer with ``status``; headers are (bytes name, bytes value) pairs after nginx's own."""
        self.hc.send_response(self, status, headers, body, content_type, last_modified, location)

    def finalize(self, status):
        """End the request with ``status``: nginx's error page, or nothing for 444/499/408."""
        self.hc.finalize(self, status)

    def detach(self):
        """Hand the connection over (WebSocket upgrade): returns (sock, trailing, unsent):
        the bytes read past the request and the part of the response head not sent yet,
        which the new owner must send before anything else."""
        return self.hc.detach(self)
