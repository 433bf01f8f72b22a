"""The `websocket` directive and its settings; the handshake handler; the per-worker push port.

Theory of operation
-------------------
`location /ws { websocket; }` makes the location's content handler `websocket_handler`: the
HTTP module parses the request, finds the location, applies allow/deny, and hands the request
over. The handler judges the upgrade (handshake.py), creates the Session with its fresh id, asks
the upstream module first when the location has `websocket_pass` (an asynchronous answer), then
writes the 101 through the HTTP module (so it carries Server, Date and add_header like any
response) and takes the socket over with `request.detach()`.

Each worker opens its own push port in `init_process` with `cycle.add_listening()`: an HTTP
listening whose server table (built by `build_virtual_server`) has one location per websocket
location, same name and modifier, same allow/deny, `client_max_body_size` set to the location's
`websocket_max_message_size` (so 413 comes from the HTTP module), handler `push_handler`. Push
URLs name this port, so a backend always reaches the worker that holds the client: nothing is
shared between workers.
"""

from __future__ import annotations

import binascii
import fcntl
import re
import socket
import struct
from dataclasses import dataclass, field
from urllib.parse import unquote

from ..core.directives import (UNSET, Args, ConfigError, Ctx, Directive, Slot, merge, parse_msec,
                               set_enum, set_flag, set_size, set_str)
from ..http.errors import error_page
from ..http.handler import head_204
from ..http.locations import PLAIN_HOST
from ..http.parser import PLAIN_HEAD
from ..http.module import HttpModule
from . import handshake
from .handshake import ProtocolError
from .session import REGISTRY, Location, Session

__all__ = ["WebSocketModule", "WebSocketLocConf", "WebSocketSrvConf", "websocket_handler",
           "push_handler", "MODULE_NAME"]

MODULE_NAME = "websocket"

_ALLOW = (b"Allow", b"POST, OPTIONS")
_OCTET = b"application/octet-stream"
_PLAIN_HEAD = PLAIN_HEAD.match
_plain_host = PLAIN_HOST.match


# -- configuration ------------------------------------------------------------------------------

@dataclass(slots=True, eq=False)
class WebSocketLocConf:
    #: set by the `websocket` directive on this very location (not inherited)
    enabled: bool = False
    ping_interval: int = UNSET
    idle_interval: int = UNSET
    max_message_size: int = UNSET
    #: 0: no limit of its own (the message limit still applies)
    max_frame_size: int = UNSET
    send_buffer_size: int = UNSET
    #: "reject" (429) or "close" (1008)
    slow_client: str = UNSET
    #: None, or a tuple of exact origins (str) and compiled regexes
    allow_origin: object = UNSET
    #: tuple of bytes
    subprotocols: tuple = UNSET
    deflate: bool = UNSET
    push_url: bool = UNSET
    #: the core LocationConf and ServerConf this location belongs to
    core_loc: object = None
    srv: object = None
    #: the worker's session.Location for this location, made in init_process
    ctx: object = None


@dataclass(slots=True, eq=False)
class WebSocketSrvConf:
    #: "host:port", "host", "port" or a port range; None: the server's listen host, any port
    push_listen: object = UNSET
    push_host: object = UNSET


@dataclass(eq=False)
class WebSocketMain:
    #: every location with `websocket`, in config order
    locations: list = field(default_factory=list)
    #: the push Listenings of this worker
    push_listening: list = field(default_factory=list)


def _interval(text: str, what: str) -> int:
    # The seed's unit: a bare number is milliseconds; nginx time units are accepted too.
    if text.isdigit():
        return int(text)
    try:
        return parse_msec(text)
    except ValueError:
        raise ConfigError('invalid %s value "%s" in "websocket" directive' % (what, text)) from None


def _set_websocket(cf, node, conf):
    if conf.enabled:
        raise ConfigError('"websocket" directive is duplicate')
    core_loc = cf.confs.get("http", Slot.LOC)
    if core_loc.modifier == "@":
        raise ConfigError('"websocket" directive is not allowed in a named location')
    for arg in node.args:
        name, eq, value = arg.partition("=")
        if name == "pingintvl" and eq:
            conf.ping_interval = _interval(value, "pingintvl")
        elif name == "idleintvl" and eq:
            conf.idle_interval = _interval(value, "idleintvl")
        else:
            raise ConfigError('invalid parameter "%s"' % arg)
    conf.enabled = True
    conf.core_loc = core_loc
    conf.srv = cf.confs.get("http", Slot.SRV)
    core_loc.handler = websocket_handler
    cf.confs.get(MODULE_NAME, Slot.MAIN).locations.append(conf)


def _set_allow_origin(cf, node, conf):
    if conf.allow_origin is not UNSET:
        raise ConfigError('"websocket_allow_origin" directive is duplicate')
    rules = []
    for arg in node.args:
        if arg.startswith("~"):
            flags = 0
            pattern = arg[1:]
            if pattern.startswith("*"):
                flags, pattern = re.IGNORECASE, pattern[1:]
            try:
                rules.append(re.compile(pattern, flags))
            except re.error as e:
                raise ConfigError('pcre2_compile() failed: %s in "%s"' % (e.msg, pattern)) from None
        else:
            rules.append(arg.rstrip("/"))
    conf.allow_origin = tuple(rules)


def _set_subprotocols(cf, node, conf):
    if conf.subprotocols is not UNSET:
        raise ConfigError('"websocket_subprotocols" directive is duplicate')
    conf.subprotocols = tuple(a.encode("latin-1") for a in node.args)


def _set_push_listen(cf, node, conf):
    if conf.push_listen is not UNSET:
        raise ConfigError('"websocket_push_listen" directive is duplicate')
    from ..http.core_module import parse_listen_addr
    text = node.args[0]
    host, port = parse_listen_addr(text)
    if text.isdigit() or re.fullmatch(r"\d+-\d+", text):
        host = None         # a port alone: the server's listen host
    conf.push_listen = (host, port)


_ANY = Ctx.HTTP | Ctx.SRV | Ctx.LOC
_SRV = Ctx.HTTP | Ctx.SRV

DIRECTIVES = (
    Directive("websocket", Ctx.LOC, Args.ANY, _set_websocket, Slot.LOC),
    Directive("websocket_max_message_size", _ANY, Args.TAKE1, set_size("max_message_size"),
              Slot.LOC),
    Directive("websocket_max_frame_size", _ANY, Args.TAKE1, set_size("max_frame_size"), Slot.LOC),
    Directive("websocket_send_buffer", _ANY, Args.TAKE1, set_size("send_buffer_size"), Slot.LOC),
    Directive("websocket_slow_client", _ANY, Args.TAKE1,
              set_enum("slow_client", {"reject": "reject", "close": "close"}), Slot.LOC),
    Directive("websocket_allow_origin", _ANY, Args.ONEMORE, _set_allow_origin, Slot.LOC),
    Directive("websocket_subprotocols", _ANY, Args.ONEMORE, _set_subprotocols, Slot.LOC),
    Directive("websocket_deflate", _ANY, Args.FLAG, set_flag("deflate"), Slot.LOC),
    Directive("websocket_push_url", _ANY, Args.FLAG, set_flag("push_url"), Slot.LOC),
    Directive("websocket_push_listen", _SRV, Args.TAKE1, _set_push_listen, Slot.SRV),
    Directive("websocket_push_host", _SRV, Args.TAKE1, set_str("push_host"), Slot.SRV),
)


class WebSocketModule(HttpModule):
    name = MODULE_NAME
    DIRECTIVES = DIRECTIVES

    def create_main_conf(self, cf):
        return WebSocketMain()

    def create_http_main_conf(self, cf):
        # the same object as the cycle-level one, so that init_process finds it with cycle.conf()
        return cf.confs.get(MODULE_NAME, Slot.MAIN)

    def create_srv_conf(self, cf):
        return WebSocketSrvConf()

    def create_loc_conf(self, cf):
        return WebSocketLocConf()

    def merge_srv_conf(self, parent, child):
        merge(child, parent, push_listen=None, push_host=None)

    def merge_loc_conf(self, parent, child):
        merge(child, parent, ping_interval=300000, idle_interval=360000,
              max_message_size=1024 * 1024, max_frame_size=0, send_buffer_size=256 * 1024,
              slow_client="reject", allow_origin=None, subprotocols=(), deflate=False,
              push_url=True)

    def init_process(self, cycle):
        main = cycle.conf(MODULE_NAME)
        if main is None or not main.locations:
            return
        open_push_ports(cycle, main)

    def shutdown(self, cycle, graceful):
        # A stop (QUIT) or the end of worker_shutdown_timeout closes every client
        # with a 1001 handshake; an old worker retiring after a reload keeps them.
        if not graceful or cycle.quitting:
            for session in list(REGISTRY.values()):
                session.shutdown()

    def busy(self, cycle):
        return bool(REGISTRY)


# -- the push port ------------------------------------------------------------------------------

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
    from ..http.core_module import LocationConf, build_virtual_server
    from ..http.handler import init_connection

    # (host, port) -> [entries]; one push socket per distinct address
    groups = {}
    for conf in main.locations:
        srv_conf = conf.srv.confs.get(MODULE_NAME, Slot.SRV)
        listen = srv_conf.push_listen
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
        _install_direct_route(servers, locations)
        # The push location's loc_conf("websocket") is the websocket location it serves, so a
        # push through one location's URL cannot reach another's clients; two servers sharing
        # a push port and a location name share that URL, and then only the id decides.
        specs = [_push_spec(conf.core_loc) for conf in confs]
        for spec, conf in zip(specs, confs):
            locations[spec].confs = _PushConfs(conf if specs.count(spec) == 1 else None)
        ls = cycle.add_listening(host, port, init_connection, servers)
        main.push_listening.append(ls)
        actual = ls.sock.getsockname()[1]
        for conf in confs:
            push_host = conf.srv.confs.get(MODULE_NAME, Slot.SRV).push_host
            if push_host:
                hosts = [push_host]
            elif host in ("0.0.0.0", "::"):
                hosts = _host_addresses(socket.AF_INET6 if host == "::" else socket.AF_INET)
            else:
                hosts = [host]
            core_loc = conf.core_loc
            path = core_loc.name if core_loc.modifier in ("", "=", "^~") else None
            loc = Location(conf, cycle.loop, log, path or "/")
            loc.path = path
            loc.push_prefixes = tuple(
                "%s:%d" % ("[%s]" % h if ":" in h and not h.startswith("[") else h, actual)
                for h in hosts) if conf.push_url else ()
            conf.ctx = loc
        log.notice("websocket push port %s", ls.addr_text)


class _PushConfs:
    """The push location's ConfSet stand-in: `loc_conf("websocket")` is the served location's."""

    __slots__ = ("conf",)

    def __init__(self, conf):
        self.conf = conf

    def get(self, name, slot=Slot.LOC):
        return self.conf if name == MODULE_NAME and slot is Slot.LOC else None


def _reply(r, status, headers=()):
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
        _reply(r, 204 if method == "OPTIONS" else 405, (_ALLOW,))
        return
    auth = ctype = None
    for name, value in r.headers:
        if name == b"authorization":
            if auth is None:
                auth = value
        elif name == b"content-type":
            if ctype is None:
                ctype = value
    log = r.conn.log
    sid = _push_id(auth, r.args)
    if not sid:
        log.info("websocket push without a client id")
        _reply(r, 400)
        return
    body = r.body
    session = REGISTRY.get(sid)
    if session is None:
        status = 404
    else:
        conf = r.loc.module_conf(MODULE_NAME)
        if conf is not None and session.loc.conf is not conf:
            status = 404
        else:
            status = _push_body(session, bytes(body), ctype)
            if status is None:
                log.info("websocket push body is not valid UTF-8 text")
                _reply(r, 400)
                return
    if log.debug_enabled:
        log.debug("websocket push id=%s size=%d status=%d%s", sid, len(body), status,
                  " to *%d" % session.conn.number if session is not None and session.conn else "")
    if status == 204:
        r.send_response(204)
    else:
        _reply(r, status)


class _DirectRoute:
    """The push port's own route for the common push (ServerConf.direct, http/handler.py).

    A backend's push is nearly always the same request: a whole ``POST /LOCATION HTTP/1.1``
    in one read, with Host, Authorization and Content-Length, to a live client of this
    worker.  That one is run here straight from the bytes: no Request, no location
    lookup, no handler chain; the client gets its frame and the backend the same 204 the
    HTTP module would send.  Anything else (another method or version, a query, an
    unknown or refused client, a slow one, bad UTF-8, Connection/Expect/Transfer-Encoding,
    a duplicate field, the last request of keepalive_requests, debug logging on) returns
    False, untouched, and takes the HTTP module's path with its statuses and log lines.
    tests/unit/websocket/test_push_route.py holds the two to the same answers.
    """

    __slots__ = ("routes",)

    def __init__(self, routes):
        #: target (bytes) -> the push LocationConf it reaches
        self.routes = routes

    def run(self, hc, data) -> bool:
        end = data.find(b"\r\n\r\n") + 4
        if end == 3 or data[:5] != b"POST ":
            return False
        head = data[:end] if end < len(data) else data
        m = _PLAIN_HEAD(head)
        if m is None or m.group(4) != b"1" or head.count(b"\n") != head.count(b"\r\n"):
            return False
        loc = self.routes.get(m.group(3))
        if loc is None:
            return False
        conn = hc.conn
        if (conn.close_requested or conn.requests + 1 >= loc.keepalive_requests
                or not loc.keepalive_timeout or conn.log.debug_enabled):
            return False
        host = auth = ctype = length = None
        for line in head[m.end(1) + 2:-4].split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"authorization":
                if auth is not None:
                    return False
                auth = value.strip(b" \t")
            elif name == b"content-length":
                if length is not None:
                    return False
                length = value.strip(b" \t")
            elif name == b"host":
                if host is not None:
                    return False
                host = value.strip(b" \t")
            elif name == b"content-type":
                if ctype is None:
                    ctype = value
            elif name == b"connection":
                if value.strip(b" \t").lower() != b"keep-alive":
                    return False
            elif name == b"transfer-encoding" or name == b"expect":
                return False
        if (host is None or auth is None or length is None or not length.isdigit()
                or len(length) > 20 or _plain_host(host.decode("latin-1")) is None):
            return False
        size = int(length)
        limit = loc.client_max_body_size
        if len(data) - end != size or (limit and size > limit):
            return False
        sid = _push_id(auth, "")
        session = REGISTRY.get(sid) if sid else None
        if session is None or not session.can_push():
            return False
        conf = loc.confs.conf
        if conf is not None and session.loc.conf is not conf:
            return False
        if _push_body(session, data[end:], ctype) is None:
            return False
        hc.direct_answer(loc, m.group(1)[:2048].decode("latin-1"), head_204(loc, True))
        return True


def _install_direct_route(servers, locations) -> None:
    """Give the push server its direct route for the locations a plain target reaches."""
    if any(spec.startswith("~") for spec in locations):
        # a regex location could take a target before its prefix location: HTTP decides
        return
    routes = {}
    for spec, loc in locations.items():
        name = spec.split(" ", 1)[-1]
        if loc.access or not name.startswith("/"):
            continue
        routes[name.encode("latin-1")] = loc
    if routes:
        servers.wildcard.default.direct = _DirectRoute(routes).run


# -- the handshake ------------------------------------------------------------------------------

def websocket_handler(r) -> None:
    """The content handler of a `websocket` location."""
    conf = r.loc_conf(MODULE_NAME)
    conn = r.conn
    log = conn.log
    loc = conf.ctx
    method = r.method
    if method.__class__ is str:
        method = method.encode("latin-1")
    try:
        key = handshake.check(method, r.http_version, r.headers)
        handshake.check_origin(r.headers, conf.allow_origin)
    except ProtocolError as e:
        if e.status_hint == 403:
            log.error("%s", e.msg)
        else:
            log.info("%s", e.msg)
        _reply(r, e.status_hint, e.headers)
        return
    if loc is None:
        # no push port in this process (a config test, or init_process failed)
        _reply(r, 503)
        return
    subprotocol = handshake.select_subprotocol(r.headers, conf.subprotocols)
    extensions = []
    ext_value = None
    if conf.deflate:
        ext, ext_value = handshake.negotiate_deflate(r.headers, conf.max_message_size,
                                                     max_frame_size=conf.max_frame_size)
        if ext is not None:
            extensions.append(ext)
    session = Session(loc, None if loc.path else r.uri)

    def accept(headers=(), backend_subprotocol=None):
        if conn.closed:
            upstream = session.upstream
            if upstream is not None:
                upstream.on_close(session, 1006, "")
            return
        chosen = backend_subprotocol if session.upstream is not None else subprotocol
        out = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
               (b"Sec-WebSocket-Accept", handshake.accept_value(key))]
        if chosen:
            out.append((b"Sec-WebSocket-Protocol", chosen))
        if ext_value is not None:
            out.append((b"Sec-WebSocket-Extensions", ext_value))
        out.extend(headers)
        r.send_response(101, out)
        _, trailing = r.detach()
        if log.debug_enabled:
            log.debug("websocket handshake id=%s deflate=%s subprotocol=%s", session.id,
                      (ext_value or b"off").decode("latin-1"),
                      chosen.decode("latin-1") if chosen else "none")
        session.attach(conn, b"", trailing, extensions or None)

    def refuse(status, headers=(), body=b""):
        if conn.closed:
            return
        if body:
            r.send_response(status, list(headers), body)
        else:
            _reply(r, status, headers)

    upstream = _upstream_for(session, r)
    if upstream is not None:
        session.upstream = upstream
        upstream.open(accept, refuse)
        return
    accept()


def _upstream_for(session, r):
    try:
        from . import upstream
    except ImportError:
        return None
    return upstream.create(session, r)
