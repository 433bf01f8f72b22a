"""Forwarding client events to a backend over Pushpin's WebSocket-over-HTTP protocol.

Theory of operation
-------------------
A `websocket` location with ``websocket_pass URL`` turns ngxws from an echo server into a
gateway.  Each client gets an :class:`UpstreamSession` (``session.upstream``) that speaks
``application/websocket-events`` (wsoh.py) to the backend through the worker's pooled HTTP
client (http/client.py), one POST at a time:

    OPENING --2xx with OPEN--> ACTIVE --client leaves--> CLOSING --last answer--> DONE
    OPENING --other status--> DONE (the handshake is refused with that status)
    any     --backend unreachable, 5xx, bad answer--> DONE (client closed 1011, or 502/504)

- OPENING: the handshake waits for the backend.  The request carries an OPEN event, the client's
  handshake headers (minus hop-by-hop ones and any ``Meta-*``, which only the backend may set),
  its query string, ``Connection-Id`` and ``Push-Url`` (this client's push URLs).  A 2xx answer
  whose first event is OPEN accepts the client: its headers (``Sec-WebSocket-Protocol``, cookies,
  ...) go into the 101, and the events after OPEN are the client's first messages, after the push
  URL message.  Any other status refuses the handshake with that status and body.
- ACTIVE: one request in flight per client.  Client messages that arrive meanwhile are encoded
  at once into ``pending`` (one bytearray, no per-message object) and leave together in the next
  request, so order holds and a chatty client costs one request per round trip.  ``pending`` is
  bounded by ``websocket_pass_queue_size``: over it, the client is closed with 1008.  While the
  client does not read (its send queue is over ``websocket_send_buffer``) no request is sent,
  so answers cannot pile up either.
- Every answer may carry ``Set-Meta-X: v``, which binds ``Meta-X: v`` to all later requests
  (an empty value unbinds), and events for the client: TEXT, BINARY, PING (sent to the client),
  CLOSE (a close handshake with its code), DISCONNECT (dropped at once).  PONG is ignored: the
  session answers the client's pings itself.
- CLOSING: the client is gone; a CLOSE event with its code (or DISCONNECT when it left without
  a close handshake) is queued after whatever was pending and delivered best effort: every step
  is bounded by the connect and read timeouts and by the retry limit, and nothing is delivered to
  the gone client.
- Failures: a request that cannot have reached the backend (connect refused or timed out) is
  retried after 100, 200, 400 ms (plus jitter), then the client is closed with 1011 (a handshake
  in progress gets 502, or 504 on a timeout) and an ``error`` line says why.  A request that may
  have reached the backend is never replayed: order and exactly-once matter more than a retry.

- GRIP message prefix: requests say ``Sec-WebSocket-Extensions: grip`` (as Pushpin's do).  A
  backend whose OPEN answer says ``Sec-WebSocket-Extensions: grip`` (optionally with
  ``message-prefix="..."``, default ``m:``) has its messages relayed with that prefix removed,
  messages without it dropped, and ``c:`` text messages (GRIP control: subscribe, detach, ...)
  ignored: channels are not implemented.  This is what gripcontrol's ``WebSocketContext.send()``
  expects.

Keep-Alive-Interval and Content-Bytes-Accepted (Pushpin extensions) are not implemented: every
answer accepts all events sent, and ngxws sends no empty keep-alive requests.
"""

import enum
import random
from dataclasses import dataclass, field

from wsproto.events import TextMessage

from ..core.directives import (UNSET, Args, ConfigError, Ctx, Directive, Slot, merge, parse_size,
                               set_msec, set_num)
from ..core.loop import Event
from ..http.client import HttpClient, URLError, header_block, parse_url
from ..http.module import HttpModule
from ..http.variables import compile_complex
from . import wsoh
from .wsoh import BINARY, CLOSE, CONTENT_TYPE_BYTES, DISCONNECT, OPEN, PING, TEXT, EventsError

__all__ = ["UpstreamConf", "UpstreamModule", "UpstreamSession", "State", "DIRECTIVES", "create",
           "PUSH_URL_HEADER"]

MODULE_NAME = "websocket_upstream"

#: ngxws' own request header: this client's push URLs, comma-separated
PUSH_URL_HEADER = b"push-url"

#: retries of a request that cannot have reached the backend, and the first delay (doubled)
RETRY_MAX = 3
RETRY_DELAY = 100
RETRY_JITTER = 50
#: how often a client that does not read its answers is checked again, ms
CLIENT_WAIT = 50
#: bytes of a refusing answer's body relayed to the client (Pushpin's bound)
REFUSE_BODY_MAX = 100_000

#: client handshake headers never replayed to the backend
_NOT_REPLAYED = frozenset((
    b"host", b"connection", b"keep-alive", b"upgrade", b"te", b"trailer", b"transfer-encoding",
    b"proxy-connection", b"content-length", b"content-type", b"accept", b"expect",
    b"connection-id", PUSH_URL_HEADER, b"sec-websocket-extensions",
))
#: backend answer headers that never go into the 101 (we make our own)
_NOT_IN_101 = frozenset((
    b"content-length", b"content-type", b"transfer-encoding", b"connection", b"keep-alive",
    b"upgrade", b"date", b"server", b"keep-alive-interval", b"content-bytes-accepted",
    b"sec-websocket-accept", b"sec-websocket-extensions", b"sec-websocket-protocol",
    b"sec-websocket-version",
))
#: backend answer headers that never go into a refusal (nginx sets its own framing)
_NOT_IN_REFUSAL = frozenset((
    b"content-length", b"content-type", b"transfer-encoding", b"connection", b"keep-alive",
    b"upgrade", b"date", b"server", b"keep-alive-interval", b"content-bytes-accepted",
))


# -- configuration ------------------------------------------------------------------------------

@dataclass(slots=True)
class UpstreamConf:
    #: UpstreamURL, or None for echo
    url: object = UNSET
    connect_timeout: int = UNSET
    read_timeout: int = UNSET
    keepalive: int = UNSET
    queue_size: int = UNSET
    #: [(lower-case bytes name, bytes value)] from websocket_pass_header
    headers: list = UNSET
    #: the worker's HttpClient for this location, made on first use after fork
    client: object = field(default=None)


def _set_pass(cf, node, conf):
    if conf.url is not UNSET:
        raise ConfigError('"websocket_pass" directive is duplicate')
    try:
        conf.url = parse_url(node.args[0])
    except URLError as e:
        raise ConfigError(str(e)) from None


def _set_header(cf, node, conf):
    name, value = node.args
    bname = name.lower().encode("latin-1", "replace")
    if "$" in value:
        # variables ($remote_addr, $http_x, $cookie_x, ...) are rendered once per client, at OPEN
        rendered = compile_complex(value)
        check = b"x"
    else:
        rendered = check = value.encode("utf-8")
    try:
        header_block([(bname, check)])
    except ValueError:
        raise ConfigError('invalid header "%s" in "websocket_pass_header" directive' % name) from None
    if conf.headers is UNSET:
        conf.headers = []
    conf.headers.append((bname, rendered))


def _set_queue_size(cf, node, conf):
    if conf.queue_size is not UNSET:
        raise ConfigError('"websocket_pass_queue_size" directive is duplicate')
    try:
        size = parse_size(node.args[0])
    except ValueError:
        size = -1
    if size <= 0:
        raise ConfigError('"websocket_pass_queue_size" directive invalid value')
    conf.queue_size = size


def _set_keepalive(cf, node, conf):
    set_num("keepalive")(cf, node, conf)
    if conf.keepalive < 0:
        raise ConfigError('"websocket_pass_keepalive" directive invalid value')


_ANY = Ctx.HTTP | Ctx.SRV | Ctx.LOC

DIRECTIVES = (
    Directive("websocket_pass", Ctx.LOC, Args.TAKE1, _set_pass, Slot.LOC),
    Directive("websocket_pass_connect_timeout", _ANY, Args.TAKE1, set_msec("connect_timeout"), Slot.LOC),
    Directive("websocket_pass_read_timeout", _ANY, Args.TAKE1, set_msec("read_timeout"), Slot.LOC),
    Directive("websocket_pass_header", _ANY, Args.TAKE2, _set_header, Slot.LOC),
    Directive("websocket_pass_keepalive", _ANY, Args.TAKE1, _set_keepalive, Slot.LOC),
    Directive("websocket_pass_queue_size", _ANY, Args.TAKE1, _set_queue_size, Slot.LOC),
)


class UpstreamModule(HttpModule):
    name = MODULE_NAME
    DIRECTIVES = DIRECTIVES

    def create_loc_conf(self, cf):
        return UpstreamConf()

    def merge_loc_conf(self, parent, child):
        # websocket_pass itself is not inherited (nginx's proxy_pass is not either)
        if child.url is UNSET:
            child.url = None
        url = child.url
        merge(child, parent, connect_timeout=60_000, read_timeout=60_000, keepalive=64,
              queue_size=256 * 1024, headers=[])
        child.url = url
        return child

    def shutdown(self, cycle, graceful):
        # idle pooled connections would hold the worker up; requests in flight (the last CLOSE
        # events of leaving clients) are worth waiting for, and their timeouts bound the wait
        busy = False
        for client in _CLIENTS:
            client.close_idle()
            if client.active:
                busy = True
        return busy and graceful

    def exit_process(self, cycle):
        for client in _CLIENTS:
            client.close_idle()


#: every HttpClient made in this worker, for exit_process
_CLIENTS = []


def _client(conf, conn):
    client = conf.client
    if client is None:
        pool = conn.pool
        client = HttpClient(pool.loop, pool, conf.url, pool.error_log, keepalive=conf.keepalive,
                            connect_timeout=conf.connect_timeout, read_timeout=conf.read_timeout)
        conf.client = client
        _CLIENTS.append(client)
    return client


# -- one client's upstream ----------------------------------------------------------------------

class State(enum.Enum):
    #: OPEN sent; the client's handshake waits for the backend's answer
    OPENING = 1
    #: accepted; client messages are forwarded, answers relayed
    ACTIVE = 2
    #: the client is gone; its last events (CLOSE or DISCONNECT) are being delivered
    CLOSING = 3
    #: nothing more to send or receive
    DONE = 4


OPENING = State.OPENING
ACTIVE = State.ACTIVE
CLOSING = State.CLOSING
DONE = State.DONE


def create(session, request):
    """The UpstreamSession for ``session`` if its location has ``websocket_pass``, else None."""
    conf = request.loc_conf(MODULE_NAME)
    if conf is None or not conf.url:
        return None
    return UpstreamSession(conf, session, request)


class UpstreamSession:
    __slots__ = ("conf", "session", "state", "pending", "req", "body", "meta", "meta_block", "headers",
                 "target", "retries", "retry_ev", "accept", "refuse", "log", "offered", "prefix")

    def __init__(self, conf, session, request):
        self.conf = conf
        self.session = session
        self.state = OPENING
        #: encoded events not yet sent
        self.pending = bytearray()
        #: the ClientRequest in flight, and its body (kept for a retry)
        self.req = None
        self.body = None
        #: {lower-case bytes name: bytes value} bound by Set-Meta-*, None while empty
        self.meta = None
        #: the Meta-* header lines of ``meta``
        self.meta_block = b""
        self.retries = 0
        self.retry_ev = None
        self.accept = None
        self.refuse = None
        #: the GRIP message prefix (bytes) once the backend enabled the grip extension, else None
        self.prefix = None
        self.log = request.conn.log
        url = conf.url
        args = request.args
        if args:
            path = url.path
            self.target = path + (b"&" if b"?" in path else b"?") + args.encode("latin-1")
        else:
            self.target = url.path
        headers = [(n, v) for n, v in request.headers
                   if n not in _NOT_REPLAYED and not n.startswith(b"meta-")]
        headers.append((b"accept", CONTENT_TYPE_BYTES))
        headers.append((b"content-type", CONTENT_TYPE_BYTES))
        headers.append((b"connection-id", session.id.encode("ascii")))
        headers.append((b"sec-websocket-extensions", b"grip"))
        push_urls = session.push_urls
        if push_urls:
            headers.append((PUSH_URL_HEADER, push_urls.encode("latin-1")))
        for name, value in conf.headers:
            if value.__class__ is not bytes:
                value = value(request).encode("latin-1", "replace")
                if not value or b"\r" in value or b"\n" in value or b"\0" in value:
                    # as proxy_set_header: an empty value sends no header
                    continue
            headers.append((name, value))
        #: the header lines sent with every request, serialised once: the client's headers were
        #: checked by the HTTP parser, the configured ones when the configuration was read
        self.headers = b"".join([n + b": " + v + b"\r\n" for n, v in headers])
        #: subprotocols the client offered, to check the backend's choice
        self.offered = request.header(b"sec-websocket-protocol")

    # -- the websocket module's side ------------------------------------------------------------

    def open(self, accept, refuse):
        """Ask the backend about this client.

        Exactly one of these is called later, from the loop:
        ``accept(headers, subprotocol)``: write the 101 with these extra headers and the chosen
        subprotocol (bytes or None), and attach the session (which queues the push URL message);
        the backend's first messages are sent right after it returns.
        ``refuse(status, headers, body)``: answer the handshake with that status instead.
        """
        self.accept = accept
        self.refuse = refuse
        wsoh.encode_into(self.pending, OPEN)
        self._send()

    def on_message(self, session, event):
        """A whole message from the client (wsproto TextMessage or BytesMessage)."""
        if self.state is not ACTIVE:
            return
        data = event.data
        if type(event) is TextMessage:
            wsoh.encode_into(self.pending, TEXT, data.encode("utf-8", "surrogatepass"))
        else:
            wsoh.encode_into(self.pending, BINARY, data)
        if self.req is None and self.retry_ev is None:
            self._send()
        elif len(self.pending) > self.conf.queue_size:
            self._overflow()

    def on_ping(self, session, payload):
        """A ping from the client (the session has answered it): forwarded as a PING event."""
        if self.state is not ACTIVE:
            return
        wsoh.encode_into(self.pending, PING, bytes(payload) if payload else None)
        if self.req is None and self.retry_ev is None:
            self._send()

    def on_close(self, session, code, reason):
        """The client left: with a close handshake (``code``), or without one (1006)."""
        state = self.state
        if state is DONE or state is CLOSING:
            return
        if code == 1006:
            wsoh.encode_into(self.pending, DISCONNECT)
        elif code is None or code == 1005:
            wsoh.encode_into(self.pending, CLOSE)
        else:
            wsoh.encode_into(self.pending, CLOSE, wsoh.close_content(code, reason or ""))
        self.state = CLOSING
        if self.req is None and self.retry_ev is None:
            self._send()

    def cancel(self):
        """The client went away while its handshake waited for the backend.

        Neither ``accept`` nor ``refuse`` will be called.  The backend, which has seen OPEN, is
        sent DISCONNECT once it has answered (best effort, bounded like any request).
        """
        if self.state is not OPENING:
            return
        self.accept = self.refuse = None
        self.state = CLOSING
        wsoh.encode_into(self.pending, DISCONNECT)
        if self.req is None and self.retry_ev is None:
            # the OPEN itself never got through: the backend knows nothing of this client
            self.state = DONE
            self.pending = bytearray()

    # -- requests -------------------------------------------------------------------------------

    def _client(self):
        client = self.conf.client
        if client is None:
            client = _client(self.conf, self._conn())
        return client

    def _conn(self):
        conn = self.session.conn
        if conn is None:
            conn = self.log.conn
        return conn

    def _send(self):
        pending = self.pending
        self.pending = bytearray()
        self.body = bytes(pending)
        self._request()

    def _request(self):
        headers = self.headers
        if self.meta_block:
            headers += self.meta_block
        self.req = self._client().request(b"POST", self.target, headers, self.body,
                                          _response_handler, self, self.log)

    def _overflow(self):
        self.log.error("websocket upstream queue over websocket_pass_queue_size %d, %d bytes",
                       self.conf.queue_size, len(self.pending))
        # the backend learns why (after what is in flight); the queued messages are dropped
        self.pending = bytearray()
        wsoh.encode_into(self.pending, CLOSE, wsoh.close_content(1008, "queue full"))
        self.state = CLOSING
        self.session.close(1008, "upstream queue full")

    def _client_slow(self):
        """The client is not reading the answers: its send queue is over websocket_send_buffer."""
        session = self.session
        loc = getattr(session, "loc", None)
        return loc is not None and session.queued > loc.send_buffer_size

    def _wait_for_client(self):
        # Back-pressure: no new request (so no new answers) until the client reads; meanwhile
        # its messages wait in `pending`, which websocket_pass_queue_size bounds.
        ev = Event(_retry_handler, self)
        self.retry_ev = ev
        self._client().loop.add_timer(ev, CLIENT_WAIT)

    def _retry(self, error):
        self.retries += 1
        delay = (RETRY_DELAY << (self.retries - 1)) + random.randrange(RETRY_JITTER)
        if self.log.debug_enabled:
            self.log.debug("websocket upstream: %s, retry %d in %d ms", error, self.retries, delay)
        ev = Event(_retry_handler, self)
        self.retry_ev = ev
        self._client().loop.add_timer(ev, delay)

    # -- answers --------------------------------------------------------------------------------

    def _answer(self, req):
        self.req = None
        state = self.state
        if state is DONE:
            return
        name = self.conf.url.name
        if req.error is not None:
            if req.retryable and self.retries < RETRY_MAX:
                self._retry(req.error)
                return
            self._fail(req.error, 504 if "timed out" in req.error else 502)
            return
        self.retries = 0
        self.body = None
        status = req.status
        headers = req.response_headers

        if state is CLOSING:
            # the client is gone: nothing to deliver; finish what is queued
            if self.pending and 200 <= status < 300:
                self._send()
            else:
                self.state = DONE
            return

        if not 200 <= status < 300:
            if state is OPENING:
                self.state = DONE
                self.log.info('websocket upstream refused the handshake with %d, upstream: "%s"',
                              status, name)
                body = req.response_body[:REFUSE_BODY_MAX]
                ctype = req.header(b"content-type")
                out = []
                for raw, v in _raw(headers):
                    n = raw.lower()
                    if n not in _NOT_IN_REFUSAL and not n.startswith(b"set-meta-"):
                        out.append((raw, v))
                if ctype is not None and body:
                    out.append((b"Content-Type", ctype))
                self._call_refuse(status, out, body)
                return
            if status >= 500:
                self._fail("upstream answered %d" % status, 502)
            else:
                self._fail("upstream answered %d" % status, 502, 1008)
            return

        body = req.response_body
        if body:
            ctype = req.header(b"content-type")
            if ctype is None or ctype.split(b";", 1)[0].strip().lower() != CONTENT_TYPE_BYTES:
                self._fail('upstream sent "Content-Type: %s", expected "%s"'
                           % ((ctype or b"").decode("latin-1"), wsoh.CONTENT_TYPE), 502)
                return
            try:
                events = wsoh.decode(body)
            except EventsError as e:
                self._fail("upstream sent invalid events: %s" % e, 502)
                return
        else:
            events = ()

        changed = False
        for n, v in headers:
            if n.startswith(b"set-meta-") and len(n) > 9:
                meta = self.meta
                if meta is None:
                    meta = self.meta = {}
                if v:
                    meta[n[9:]] = v
                else:
                    meta.pop(n[9:], None)
                changed = True
        if changed:
            # values come from h11's parse of the answer: valid header values already
            self.meta_block = b"".join([b"meta-" + n + b": " + v + b"\r\n"
                                        for n, v in self.meta.items()])

        if state is OPENING:
            if not events or events[0][0] is not OPEN:
                self._fail("upstream accepted the handshake without an OPEN event", 502)
                return
            subprotocol = None
            extra = []
            for raw, v in _raw(headers):
                n = raw.lower()
                if n == b"sec-websocket-protocol":
                    subprotocol = v.strip()
                elif n == b"sec-websocket-extensions":
                    prefix = _grip_prefix(v)
                    if prefix is not None:
                        self.prefix = prefix
                elif n not in _NOT_IN_101 and not n.startswith(b"set-meta-"):
                    extra.append((raw, v))
            if subprotocol is not None and not self._offered(subprotocol):
                self._fail('upstream chose subprotocol "%s" the client did not offer'
                           % subprotocol.decode("latin-1"), 502)
                return
            self.offered = None
            self.state = ACTIVE
            accept = self.accept
            self.accept = self.refuse = None
            accept(extra, subprotocol)
            if self.state is not ACTIVE:
                return
            events = events[1:]

        if events:
            self._deliver(events)
        if self.state is ACTIVE:
            if len(self.pending) > self.conf.queue_size:
                self._overflow()
                return
            if self.pending:
                if self._client_slow():
                    self._wait_for_client()
                else:
                    self._send()
        elif self.state is CLOSING and self.pending:
            self._send()

    def _offered(self, subprotocol):
        offered = self.offered
        if not offered:
            return False
        return subprotocol in [p.strip() for p in offered.split(b",")]

    def _deliver(self, events):
        session = self.session
        prefix = self.prefix
        for name, content in events:
            if prefix is not None and (name is TEXT or name is BINARY):
                content = content or b""
                if name is TEXT and content[:2] == b"c:":
                    if self.log.debug_enabled:
                        self.log.debug("websocket upstream GRIP control message ignored: %s",
                                       content[2:200].decode("utf-8", "replace"))
                    continue
                if not content.startswith(prefix):
                    if self.log.debug_enabled:
                        self.log.debug("websocket upstream message without the GRIP prefix dropped")
                    continue
                content = content[len(prefix):]
            if name is TEXT:
                try:
                    text = content.decode("utf-8") if content else ""
                except UnicodeDecodeError:
                    self._fail("upstream sent a TEXT event that is not UTF-8", 502)
                    return
                session.send_message(text)
            elif name is BINARY:
                session.send_message(content or b"")
            elif name is CLOSE:
                try:
                    code, reason = wsoh.parse_close(content)
                except EventsError as e:
                    self._fail("upstream sent invalid events: %s" % e, 502)
                    return
                # the client's answer to this close is not relayed back: the backend asked for it
                self.state = DONE
                session.close(1000 if code is None else code, reason)
                return
            elif name is DISCONNECT or name is OPEN:
                self.state = DONE
                if self.log.debug_enabled:
                    self.log.debug("websocket upstream dropped the client (%s)", name)
                session._finish(1006, "", "server")
                return
            elif name is PING:
                ping = getattr(session, "send_ping", None)
                if ping is not None:
                    ping(content or b"")
            # PONG: the session already answered the client's ping

    def _fail(self, why, status, code=1011):
        """The backend cannot serve this client: log why, refuse or close it."""
        state = self.state
        self.state = DONE
        self.pending = bytearray()
        self.log.error('websocket upstream failed: %s, upstream: "%s"', why, self.conf.url.name)
        if state is OPENING:
            self._call_refuse(status, [], b"")
        elif state is ACTIVE:
            self.session.close(code, "upstream error" if code == 1011 else "upstream refused")

    def _call_refuse(self, status, headers, body):
        refuse = self.refuse
        self.accept = self.refuse = None
        if refuse is not None:
            refuse(status, headers, body)


def _grip_prefix(value):
    """The message prefix if ``value`` (Sec-WebSocket-Extensions) enables grip, else None."""
    for ext in value.split(b","):
        parts = ext.split(b";")
        if parts[0].strip().lower() != b"grip":
            continue
        prefix = b"m:"
        for param in parts[1:]:
            k, _, v = param.partition(b"=")
            if k.strip().lower() == b"message-prefix":
                v = v.strip()
                if len(v) >= 2 and v[:1] == b'"' and v[-1:] == b'"':
                    v = v[1:-1]
                prefix = v
        return prefix
    return None


def _raw(headers):
    """Header pairs with the backend's spelling of the names, for relaying them (h11 Headers)."""
    raw_items = getattr(headers, "raw_items", None)
    return raw_items() if raw_items is not None else headers


def _response_handler(req):
    req.data._answer(req)


def _retry_handler(ev):
    us = ev.data
    us.retry_ev = None
    if us.state is DONE:
        return
    if us.body is not None:
        us._request()
    elif us.pending:
        if us.state is ACTIVE and us._client_slow():
            us._wait_for_client()
        else:
            us._send()
