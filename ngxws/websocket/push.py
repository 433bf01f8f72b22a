"""The worker's private push port: its listenings, the POST handler and the direct route.

Theory of operation
-------------------
Each worker opens its own push port in ``init_process`` (``open_push_ports``, called by the
websocket module) with ``cycle.add_listening()``: an HTTP listening whose server table (built
by ``build_virtual_server``) has one location per websocket location, same name and
modifier, same allow/deny, ``client_max_body_size`` set to the location's
``websocket_max_message_size`` (so 413 comes from the HTTP module), handler ``push_handler``.
Push URLs name this port, so a backend always reaches the worker that holds the client:
nothing is shared between workers.  A wildcard listen address is announced as every address
of the host (``_host_addresses``, the seed's interface walk with SIOCGIFADDR).

``push_handler`` finds the client by the id in the Basic-auth user (or ``?id=``) in the
worker's session registry (``WebSocketMain.sessions``, reached through the push location's
``PushConfs``) and pushes the body as one message.  A backend pushes to the same clients
again and again, so the Authorization -> id decoding is cached, bounded.  The common push
skips the HTTP module's request machinery altogether: ``_DirectRoute`` (below) runs it
from the bytes of one read, and leaves everything else to the HTTP path.
"""

from __future__ import annotations

import binascii
import fcntl
import socket
import struct
from urllib.parse import unquote

from ..http.core_module import LocationConf, build_virtual_server
from ..http.errors import error_page
from ..http.handler import head_204, init_connection
from ..http.locations import plain_host
from ..http.parser import parse_head
from .session import Location

__all__ = ["open_push_ports", "push_handler", "PushConfs", "reply"]

_ALLOW = (b"Allow", b"POST, OPTIONS")
_OCTET = b"application/octet-stream"


def _host_addresses(family) -> list:
    """Every address of this host in `family` (the seed's getifaddrs walk), link-local aside."""
    out = []
    if family == socket.AF_INET6:
        try:
            with open("/proc/net/if_inet6") as f:
                for line in f:
                    raw = line.split()[0]
                    addr = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw))
                    if not addr.startswith("fe80:"):
                        out.append(addr)
        except OSError:
            pass
        return out or ["::1"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                res = fcntl.ioctl(s.fileno(), 0x8915,   # SIOCGIFADDR
                                  struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            addr = socket.inet_ntoa(res[20:24])
            if addr not in out:
                out.append(addr)
    finally:
        s.close()
    return out or ["127.0.0.1"]


def _push_spec(core_loc) -> str:
    mod = core_loc.modifier
    return "%s %s" % (mod, core_loc.name) if mod else core_loc.name


def open_push_ports(cycle, main) -> None:
    """Open this worker's push ports for every websocket location of ``main`` (the module's
    WebSocketMain): one listening per distinct push address, each location's
    session.Location made (``conf.ctx``), its push URLs known."""
    sessions = main.sessions
    # (host, port) -> [entries]; one push socket per distinct address
    groups = {}
    for conf in main.locations:
        listen = conf.push.push_listen
        host, port = listen if listen is not None else (None, 0)
        if host is None:
            host = conf.srv.listens[0].host if conf.srv.listens else "127.0.0.1"
        groups.setdefault((host, port), []).append(conf)

    log = cycle.log
    for (host, port), confs in groups.items():
        locations = {}
        for conf in confs:
            spec = _push_spec(conf.core_loc)
            if spec in locations:
                continue
            # keep-alive as the websocket location has it (from http{}, server{} or the location)
            loc = LocationConf(handler=push_handler, client_max_body_size=conf.max_message_size,
                               keepalive_requests=conf.core_loc.keepalive_requests,
                               keepalive_timeout=conf.core_loc.keepalive_timeout)
            if conf.core_loc.access:
                loc.access = conf.core_loc.access
            locations[spec] = loc
        servers = build_virtual_server(locations)
        _install_direct_route(servers, locations, sessions)
        # A push location serves one websocket location, so a push through one location's URL
        # cannot reach another's clients; two servers sharing a push port and a location name
        # share that URL, and then only the id decides.
        specs = [_push_spec(conf.core_loc) for conf in confs]
        for spec, conf in zip(specs, confs):
            locations[spec].confs = PushConfs(conf if specs.count(spec) == 1 else None, sessions)
        ls = cycle.add_listening(host, port, init_connection, servers)
        main.push_listening.append(ls)
        actual = ls.sock.getsockname()[1]
        for conf in confs:
            push_host = conf.push.push_host
            if push_host:
                hosts = [push_host]
            elif host in ("0.0.0.0", "::"):
                hosts = _host_addresses(socket.AF_INET6 if host == "::" else socket.AF_INET)
            else:
                hosts = [host]
            core_loc = conf.core_loc
            path = core_loc.name if core_loc.modifier in ("", "=", "^~") else None
            loc = Location(conf, cycle.loop, log, path or "/", sessions)
            loc.path = path
            loc.push_prefixes = tuple(
                "%s:%d" % ("[%s]" % h if ":" in h and not h.startswith("[") else h, actual)
                for h in hosts) if conf.push_url else ()
            conf.ctx = loc
        log.notice("websocket push port %s", ls.addr_text)


class PushConfs:
    """A push location's ConfSet stand-in.

    No module has a conf here (``get`` is None: no access log on the push port); for
    push_handler and the direct route it carries the websocket location served (its
    WebSocketLocConf, None when two servers share the location name) and the worker's
    session registry (id -> Session, WebSocketMain.sessions).
    """

    __slots__ = ("conf", "sessions")

    def __init__(self, conf, sessions):
        self.conf = conf
        self.sessions = sessions

    def get(self, name, slot=None):
        return None


def reply(r, status, headers=()) -> None:
    """Answer ``r`` with ``status``: an empty 204, else nginx's error page for it."""
    if status == 204:
        r.send_response(204, list(headers))
        return
    page = error_page(status, r.loc.server_tokens) or b""
    r.send_response(status, list(headers), page, content_type=b"text/html")


#: Authorization value -> client id ("" when it names none): a backend pushes to the same
#: clients again and again; bounded, emptied when full
_BASIC_IDS = {}
_BASIC_IDS_MAX = 4096


def _basic_id(auth: bytes) -> str:
    scheme, _, value = auth.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return ""
    try:
        # lenient decoding: a mangled id is simply not found (404)
        user = binascii.a2b_base64(value).partition(b":")[0]
    except (binascii.Error, ValueError):
        return ""
    user = user.decode("latin-1")
    return unquote(user) if "%" in user else user


def _push_id(auth, args) -> str | None:
    """The client id of a push: the Basic-auth user, else the `id` argument."""
    if auth is not None:
        sid = _BASIC_IDS.get(auth)
        if sid is None:
            sid = _basic_id(auth)
            if len(_BASIC_IDS) >= _BASIC_IDS_MAX:
                _BASIC_IDS.clear()
            _BASIC_IDS[auth] = sid
        if sid:
            return sid
    if args:
        for part in args.split("&"):
            if part.startswith("id=") and len(part) > 3:
                return unquote(part[3:])
    return None


def _push_body(session, body: bytes, ctype) -> int | None:
    """Push `body` as the message its Content-Type says: binary for application/octet-stream,
    else text; the status of Session.push(), or None (nothing pushed) when the text is not
    valid UTF-8."""
    if ctype is not None and ctype.partition(b";")[0].strip().lower() == _OCTET:
        return session.push(body)
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return session.push(body, text=True)


def push_handler(r) -> None:
    """POST to a push URL: the body becomes one message to the client named by the id."""
    method = r.method
    if method.__class__ is bytes:
        method = method.decode("latin-1")
    if method != "POST":
        reply(r, 204 if method == "OPTIONS" else 405, (_ALLOW,))
        return
    head = r.head
    ctype = head.content_type
    log = r.conn.log
    sid = _push_id(head.authorization, r.args)
    if not sid:
        log.info("websocket push without a client id")
        reply(r, 400)
        return
    body = r.body
    confs = r.loc.confs
    session = confs.sessions.get(sid)
    if session is None:
        status = 404
    else:
        conf = confs.conf
        if conf is not None and session.loc.conf is not conf:
            status = 404
        else:
            status = _push_body(session, bytes(body), ctype)
            if status is None:
                log.info("websocket push body is not valid UTF-8 text")
                reply(r, 400)
                return
    if log.debug_enabled:
        log.debug("websocket push id=%s size=%d status=%d%s", sid, len(body), status,
                  " to *%d" % session.conn.number if session is not None and session.conn else "")
    if status == 204:
        r.send_response(204)
    else:
        reply(r, status)


class _DirectRoute:
    """The push port's own route for the common push (ServerConf.direct, http/handler.py).

    A backend's push is nearly always the same request: a whole ``POST /LOCATION`` in one
    read, with Authorization and Content-Length, to a live client of this worker.  That one
    is run here straight from the bytes: the head parsed by ``parse_head`` (http/parser.py,
    the parser every lane shares), no Request, no location lookup, no handler chain; the
    client gets its frame and the backend the same 204 the HTTP module would send.
    Anything else (another method or target, a query, a head the parser leaves to h11, no
    keep-alive, ``Expect: 100-continue``, an unknown or refused client, a slow one, bad
    UTF-8, the last request of keepalive_requests, debug logging on) returns False,
    untouched, and takes the HTTP module's path with its statuses and log lines.
    tests/unit/websocket/test_push_route.py holds the route, whole_request and the
    buffered path to the same answers.
    """

    __slots__ = ("routes", "sessions")

    def __init__(self, routes, sessions):
        #: target (str) -> the push LocationConf it reaches
        self.routes = routes
        #: id -> Session, the worker's registry
        self.sessions = sessions

    def run(self, hc, data) -> bool:
        end = data.find(b"\r\n\r\n") + 4
        if end == 3 or data[:5] != b"POST ":
            return False
        size = len(data)
        h = parse_head(data[:end] if end < size else data, hc.parser.large_size)
        if h is None:
            return False
        loc = self.routes.get(h.target)
        if loc is None:
            return False
        length = h.content_length
        auth = h.authorization
        if (length is None or auth is None or not h.keep_alive or h.expect_continue
                or size - end != length):
            return False
        conn = hc.conn
        if (conn.close_requested or conn.requests + 1 >= loc.keepalive_requests
                or not loc.keepalive_timeout or conn.log.debug_enabled):
            return False
        limit = loc.client_max_body_size
        host = h.host
        if (limit and length > limit) or (host and not plain_host(host)):
            return False
        sid = _push_id(auth, "")
        session = self.sessions.get(sid) if sid else None
        if session is None or not session.can_push():
            return False
        conf = loc.confs.conf
        if conf is not None and session.loc.conf is not conf:
            return False
        if _push_body(session, data[end:], h.content_type) is None:
            return False
        hc.direct_answer(loc, h.request_line, head_204(loc, True))
        return True


def _install_direct_route(servers, locations, sessions) -> None:
    """Give the push server its direct route for the locations a plain target reaches."""
    if any(spec.startswith("~") for spec in locations):
        # a regex location could take a target before its prefix location: HTTP decides
        return
    routes = {}
    for spec, loc in locations.items():
        name = spec.split(" ", 1)[-1]
        if loc.access or not name.startswith("/"):
            continue
        routes[name] = loc
    if routes:
        servers.wildcard.default.direct = _DirectRoute(routes, sessions).run
