"""The `websocket` directive and its settings; the handshake handler.

Theory of operation
-------------------
`location /ws { websocket; }` makes the location's content handler `websocket_handler`: the
HTTP module parses the request, finds the location, applies allow/deny, and hands the request
over. The handler judges the upgrade (handshake.py), creates the Session with its fresh id, asks
the upstream module first when the location has `websocket_pass` (an asynchronous answer), then
writes the 101 through the HTTP module (so it carries Server, Date and add_header like any
response) and takes the socket over with `request.detach()`.

Each worker opens its own push port in `init_process` (push.py: its listenings, the POST
handler, the direct route). The worker's open sessions are in `WebSocketMain.sessions`, one
dict that every session.Location of the worker and every push location share: a push finds
its client there, and a graceful exit waits until it is empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..core.directives import (UNSET, Args, ConfigError, Ctx, Directive, Slot, merge, parse_msec,
                               set_enum, set_flag, set_size, set_str)
from ..http.module import HttpModule
from . import handshake, upstream as upstream_module
from .handshake import ProtocolError
from .push import open_push_ports, reply
from .session import Session

__all__ = ["WebSocketModule", "WebSocketLocConf", "WebSocketSrvConf", "WebSocketMain",
           "websocket_handler", "MODULE_NAME"]

MODULE_NAME = "websocket"



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
    #: the WebSocketSrvConf of that server (websocket_push_listen, websocket_push_host)
    push: object = None
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
    #: id -> Session: every open session of this worker (the push port's registry; each
    #: session.Location holds the same dict)
    sessions: dict = field(default_factory=dict)


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
    conf.push = cf.confs.get(MODULE_NAME, Slot.SRV)
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
        main = cycle.conf(MODULE_NAME)
        if main is not None and (not graceful or cycle.quitting):
            for session in list(main.sessions.values()):
                session.shutdown()

    def busy(self, cycle):
        main = cycle.conf(MODULE_NAME)
        return main is not None and bool(main.sessions)


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
        reply(r, e.status_hint, e.headers)
        return
    if loc is None:
        # no push port in this process (a config test, or init_process failed)
        reply(r, 503)
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
        _, trailing, unsent = r.detach()
        if log.debug_enabled:
            log.debug("websocket handshake id=%s deflate=%s subprotocol=%s", session.id,
                      (ext_value or b"off").decode("latin-1"),
                      chosen.decode("latin-1") if chosen else "none")
        # the 101's unsent rest (a full socket buffer) leaves first, through the loop
        session.attach(conn, unsent, trailing, extensions or None)

    def refuse(status, headers=(), body=b""):
        if conn.closed:
            return
        if body:
            r.send_response(status, list(headers), body)
        else:
            reply(r, status, headers)

    upstream = upstream_module.create(session, r)
    if upstream is not None:
        session.upstream = upstream
        upstream.open(accept, refuse)
        return
    accept()
