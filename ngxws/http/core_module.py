"""The http core: ``http``, ``server``, ``location`` and the directives they hold.

The ``http`` block setter is ngx_http_block() in small: it makes the confs of
every HTTP module at the http level, reads the block (``server`` and
``location`` make their own levels as they are met), merges the levels
(http -> server -> location -> nested location), builds the server-name and
location lookups, runs every module's ``postconfiguration``, and finally asks
the cycle for one listening socket per distinct address.
"""

import ipaddress
import os
import socket
from dataclasses import dataclass, field

from ..core.directives import (
    UNSET, Args, ConfigError, ConfSet, Ctx, Directive, Slot, merge, parse_msec, parse_size, set_enum,
    parse_sec, set_flag, set_msec, set_num, set_size, set_str,
)
from .locations import AddressServers, LocationError, LocationTree, VirtualServers
from .module import HttpModule

__all__ = ["HttpCoreModule", "HttpMainConf", "ServerConf", "LocationConf", "ListenOpt", "MIME_TYPES",
           "build_virtual_server"]

#: the built-in mime map (nginx's conf/mime.types, the part a push server's pages need)
MIME_TYPES = {
    "html": "text/html", "htm": "text/html", "shtml": "text/html", "css": "text/css",
    "xml": "text/xml", "gif": "image/gif", "jpeg": "image/jpeg", "jpg": "image/jpeg",
    "js": "application/javascript", "mjs": "application/javascript", "txt": "text/plain",
    "png": "image/png", "svg": "image/svg+xml", "svgz": "image/svg+xml", "ico": "image/x-icon",
    "webp": "image/webp", "json": "application/json", "wasm": "application/wasm",
    "woff": "font/woff", "woff2": "font/woff2", "pdf": "application/pdf", "zip": "application/zip",
    "mp3": "audio/mpeg", "mp4": "video/mp4", "webm": "video/webm", "map": "application/json",
}


@dataclass(eq=False)
class ListenOpt:
    host: str
    port: object          # int, or a "9000-9100" range
    default_server: bool = False
    reuseport: bool = False
    backlog: int = 511
    ipv6only: bool = True
    #: set when any option besides default_server was given (nginx allows them once per address)
    has_options: bool = False
    file: str = ""
    line: int = 0

    @property
    def addr_text(self):
        return "[%s]:%s" % (self.host, self.port) if ":" in self.host else "%s:%s" % (self.host, self.port)


@dataclass(eq=False)
class LocationConf:
    #: "" for a server's own level, else the location's name as written (without modifier)
    name: str = ""
    #: "", "=", "^~", "~", "~*" or "@"
    modifier: str = ""
    #: the content handler: Callable[[Request], None] | None (nginx's clcf->handler)
    handler: object = None
    #: (code, text) of ``return``: text is None, bytes, or a callable(request) -> str
    return_: object = None
    root: object = UNSET
    index: object = UNSET
    #: [(ip_network | None (all), allow: bool)]
    access: object = UNSET
    #: [(name bytes, value bytes | callable, always)]
    add_headers: object = UNSET
    server_tokens: object = UNSET
    client_body_timeout: object = UNSET
    client_max_body_size: object = UNSET
    keepalive_timeout: object = UNSET
    #: the Keep-Alive: timeout=N header's N in seconds, or None
    keepalive_header: object = UNSET
    keepalive_requests: object = UNSET
    send_timeout: object = UNSET
    lingering_close: object = UNSET
    lingering_timeout: object = UNSET
    lingering_time: object = UNSET
    types: object = UNSET
    default_type: object = UNSET
    #: accepted for nginx's configs; static files are read and sent by the loop either way
    sendfile: object = UNSET
    tcp_nopush: object = UNSET
    #: TCP_NODELAY on accepted connections (the default server level decides it; off clears it)
    tcp_nodelay: object = UNSET
    #: gzip (http/gzip.py): on/off, types (a set of str, "*" for any), min length, level,
    #: Vary, the lowest HTTP version (bytes), gzip_proxied's words
    gzip: object = UNSET
    gzip_types: object = UNSET
    gzip_min_length: object = UNSET
    gzip_comp_level: object = UNSET
    gzip_vary: object = UNSET
    gzip_http_version: object = UNSET
    gzip_proxied: object = UNSET
    #: the ConfSet of this level: other modules' loc confs
    confs: object = None
    #: nested locations, if any
    locations: object = None
    #: this location's access log conf, cached by log_module.log_request on first use
    access_log: object = UNSET
    #: (Date line, head) of this location's keep-alive 204, cached by http/handler.py's
    #: head_204 until the Date changes
    head_204: object = None
    file: str = ""
    line: int = 0

    def module_conf(self, name):
        return self.confs.get(name, Slot.LOC)


@dataclass(eq=False)
class ServerConf:
    listens: list = field(default_factory=list)
    names: list = field(default_factory=list)
    client_header_timeout: object = UNSET
    client_header_buffer_size: object = UNSET
    #: (number, size)
    large_client_header_buffers: object = UNSET
    #: the server level's LocationConf (used when no location matches)
    loc: object = None
    locations: object = None
    confs: object = None
    #: a server of its own listen address may run whole requests itself, before any
    #: parsing: ``direct(hc, data) -> bool``, see HttpConnection.direct_answer (the push port)
    direct: object = None
    file: str = ""
    line: int = 0

    @property
    def name(self):
        """nginx's $server_name: the first name, or ""."""
        return self.names[0] if self.names else ""


@dataclass(eq=False)
class HttpMainConf:
    servers: list = field(default_factory=list)
    #: [Listening-to-be]: (ListenOpt, AddressServers) once built
    listen_tables: list = field(default_factory=list)


class _HttpBlock:
    """What the http core keeps in the cycle's main ConfSet: the http block's main conf."""

    __slots__ = ("http",)

    def __init__(self):
        self.http = None


def _http_modules(cf):
    return [m for m in cf.modules if isinstance(m, HttpModule)]


def _new_level(cf, parent, level):
    """A ConfSet for a server ("srv") or location ("loc") level below ``parent``."""
    confs = ConfSet()
    for m in cf.modules:
        confs.set(m.name, Slot.MAIN, parent.get(m.name, Slot.MAIN))
        if isinstance(m, HttpModule):
            if level == "srv":
                confs.set(m.name, Slot.SRV, m.create_srv_conf(cf))
            else:
                confs.set(m.name, Slot.SRV, parent.get(m.name, Slot.SRV))
            confs.set(m.name, Slot.LOC, m.create_loc_conf(cf))
    return confs


# -- http / server / location ---------------------------------------------------


def set_http(cf, node, block):
    if block.http is not None:
        raise ConfigError('"http" directive is duplicate')
    confs = ConfSet()
    mods = _http_modules(cf)
    for m in cf.modules:
        if isinstance(m, HttpModule):
            confs.set(m.name, Slot.MAIN, m.create_http_main_conf(cf))
            confs.set(m.name, Slot.SRV, m.create_srv_conf(cf))
            confs.set(m.name, Slot.LOC, m.create_loc_conf(cf))
        else:
            confs.set(m.name, Slot.MAIN, cf.confs.get(m.name, Slot.MAIN))
    main = confs.get("http", Slot.MAIN)
    block.http = main
    cf.handle(node.children, Ctx.HTTP, confs)

    for m in mods:
        conf = confs.get(m.name, Slot.MAIN)
        if conf is not None:
            m.init_http_main_conf(cf, conf)
    for srv in main.servers:
        for m in mods:
            m.merge_srv_conf(confs.get(m.name, Slot.SRV), srv.confs.get(m.name, Slot.SRV))
            m.merge_loc_conf(confs.get(m.name, Slot.LOC), srv.confs.get(m.name, Slot.LOC))
        _merge_locations(mods, srv.confs, srv.locations)
    for m in mods:
        m.postconfiguration(cf, main)
    _build_listens(cf, main)


def _merge_locations(mods, parent_confs, tree):
    if tree is None:
        return
    for conf in _tree_confs(tree):
        for m in mods:
            m.merge_loc_conf(parent_confs.get(m.name, Slot.LOC), conf.confs.get(m.name, Slot.LOC))
        _merge_locations(mods, conf.confs, conf.locations)


def _tree_confs(tree):
    seen = list(tree.exact.values())
    seen += [p[2] for p in tree.prefixes]
    seen += [r[1] for r in tree.regexes]
    seen += list(tree.named.values())
    return seen


def set_server(cf, node, main):
    confs = _new_level(cf, cf.confs, "srv")
    srv = confs.get("http", Slot.SRV)
    srv.confs = confs
    srv.loc = confs.get("http", Slot.LOC)
    srv.loc.confs = confs
    srv.locations = LocationTree()
    srv.file, srv.line = node.file, node.line
    main.servers.append(srv)
    cf.handle(node.children, Ctx.SRV, confs)
    if not srv.listens:
        port = 80 if os.geteuid() == 0 else 8000
        srv.listens.append(ListenOpt("0.0.0.0", port, file=node.file, line=node.line))


def set_location(cf, node, parent):
    args = node.args
    if len(args) == 2:
        modifier, name = args
        if modifier not in ("=", "~", "~*", "^~"):
            raise ConfigError('invalid location modifier "%s"' % modifier)
    else:
        name = args[0]
        modifier = ""
        for mod in ("=", "~*", "^~", "~"):
            if name.startswith(mod) and len(name) > len(mod):
                modifier = mod
                name = name[len(mod):]
                break
        else:
            if name.startswith("@"):
                modifier = "@"
    in_server = parent.name == "" and cf.ctx == Ctx.SRV
    if modifier == "@" and not in_server:
        raise ConfigError('named location "%s" can be on the server level only' % name)
    if not in_server:
        if parent.modifier == "=":
            raise ConfigError('location "%s" cannot be inside the exact location "%s"' % (name, parent.name))
        if parent.modifier == "@":
            raise ConfigError('location "%s" cannot be inside the named location "%s"' % (name, parent.name))
        if parent.modifier in ("", "^~") and modifier in ("", "^~", "=") and \
                not name.startswith(parent.name):
            raise ConfigError('location "%s" is outside location "%s"' % (name, parent.name))

    confs = _new_level(cf, cf.confs, "loc")
    loc = confs.get("http", Slot.LOC)
    loc.name = name
    loc.modifier = modifier
    loc.confs = confs
    loc.file, loc.line = node.file, node.line
    cf.handle(node.children, Ctx.LOC, confs)
    if in_server:
        tree = cf.confs.get("http", Slot.SRV).locations
    else:
        if parent.locations is None:
            parent.locations = LocationTree()
        tree = parent.locations
    try:
        tree.add(modifier, name, loc, loc.locations)
    except LocationError as e:
        raise ConfigError(str(e)) from None


# -- listen / server_name --------------------------------------------------------


def parse_listen_addr(text):
    """(host, port) from nginx's listen forms: 8080, *:8080, 1.2.3.4:8080, [::1]:8080, name:8080."""
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise ConfigError('invalid IPv6 address in "%s" of the "listen" directive' % text)
        host = text[1:end]
        rest = text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ConfigError('invalid host in "%s" of the "listen" directive' % text)
        port = rest[1:] if rest else "80"
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError('invalid IPv6 address in "%s" of the "listen" directive' % text) from None
    elif ":" in text:
        host, _, port = text.rpartition(":")
    elif text.isdigit() or "-" in text and text.replace("-", "").isdigit():
        host, port = "*", text
    else:
        host, port = text, "80"
    if host in ("*", ""):
        host = "0.0.0.0"
    elif not text.startswith("["):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
            except OSError:
                raise ConfigError('host not found in "%s" of the "listen" directive' % text) from None
            host = infos[0][4][0]
    if port.isdigit():
        p = int(port)
        if p > 65535:
            raise ConfigError('invalid port in "%s" of the "listen" directive' % text)
        return host, p
    lo, sep, hi = port.partition("-")
    if sep and lo.isdigit() and hi.isdigit() and 0 < int(lo) <= int(hi) <= 65535:
        return host, port
    raise ConfigError('invalid port in "%s" of the "listen" directive' % text)


def set_listen(cf, node, srv):
    host, port = parse_listen_addr(node.args[0])
    opt = ListenOpt(host, port, file=node.file, line=node.line)
    for arg in node.args[1:]:
        if arg in ("default_server", "default"):
            opt.default_server = True
        elif arg == "reuseport":
            opt.reuseport = True
            opt.has_options = True
        elif arg.startswith("backlog="):
            try:
                opt.backlog = int(arg[8:])
            except ValueError:
                raise ConfigError('invalid backlog "%s"' % arg[8:]) from None
            if opt.backlog <= 0:
                raise ConfigError('invalid backlog "%s"' % arg[8:])
            opt.has_options = True
        elif arg.startswith("ipv6only="):
            if arg[9:] not in ("on", "off"):
                raise ConfigError('invalid ipv6only flags "%s"' % arg[9:])
            opt.ipv6only = arg[9:] == "on"
            opt.has_options = True
        elif arg in ("bind", "deferred", "so_keepalive=on", "so_keepalive=off"):
            opt.has_options = True
        else:
            raise ConfigError('invalid parameter "%s"' % arg)
    for other in srv.listens:
        if (other.host, other.port) == (host, port) and port != 0:
            raise ConfigError('a duplicate listen %s' % opt.addr_text)
    srv.listens.append(opt)


def set_server_name(cf, node, srv):
    for name in node.args:
        if name.startswith("~"):
            import re
            try:
                re.compile(name[1:])
            except re.error as e:
                raise ConfigError('pcre2_compile() failed: %s in "%s"' % (e.msg, name[1:])) from None
        elif "*" in name and not (name.startswith("*.") or name.endswith(".*")) or name == "*":
            raise ConfigError('invalid server name or wildcard "%s"' % name)
        srv.names.append(name)


def _build_listens(cf, main):
    from .handler import init_connection

    # (host, port) -> [(ListenOpt, ServerConf)]
    by_addr = {}
    for srv in main.servers:
        for opt in srv.listens:
            key = (opt.host, opt.port) if opt.port != 0 else (opt.host, 0, id(opt))
            by_addr.setdefault(key, []).append((opt, srv))

    tables = {}
    for key, entries in by_addr.items():
        vs = VirtualServers()
        defaults = [o for o, _ in entries if o.default_server]
        if len(defaults) > 1:
            raise ConfigError("a duplicate default server for %s in %s:%d"
                              % (defaults[1].addr_text, defaults[1].file, defaults[1].line))
        optioned = [o for o, _ in entries if o.has_options]
        if len(optioned) > 1:
            raise ConfigError("duplicate listen options for %s in %s:%d"
                              % (optioned[1].addr_text, optioned[1].file, optioned[1].line))
        for opt, srv in entries:
            vs.add_server(srv, srv.names or [""], default=opt.default_server)
        tables[key] = (optioned[0] if optioned else entries[0][0], vs)

    # a wildcard address serves its port; specific addresses of that port are
    # dispatched by the local address of each connection (nginx binds the wildcard only)
    wild_ports = {(key[1], ":" in key[0]) for key in tables
                  if key[0] in ("0.0.0.0", "::") and key[1] != 0 and len(key) == 2}
    opened = []
    grouped = {}
    for key, (opt, vs) in tables.items():
        fam6 = ":" in key[0]
        if len(key) == 2 and key[0] not in ("0.0.0.0", "::") and (key[1], fam6) in wild_ports \
                and not opt.reuseport:
            grouped.setdefault((key[1], fam6), {})[key[0]] = vs
            continue
        opened.append((key, opt, vs))
    for key, opt, vs in opened:
        fam6 = ":" in key[0]
        if key[0] in ("0.0.0.0", "::") and len(key) == 2:
            servers = AddressServers(wildcard=vs, by_addr=grouped.get((key[1], fam6)))
        else:
            servers = AddressServers(by_addr={key[0]: vs})
        main.listen_tables.append((opt, servers))
        cf.cycle.add_listen(key[0], opt.port, handler=init_connection, servers=servers,
                            backlog=opt.backlog, reuseport=opt.reuseport, ipv6only=opt.ipv6only)


# -- location-level directives -----------------------------------------------------


def set_root(cf, node, loc):
    if loc.root is not UNSET:
        raise ConfigError('"root" directive is duplicate')
    if loc.modifier == "@":
        raise ConfigError('"root" directive is not allowed here')
    loc.root = cf.full_path(node.args[0])


def set_index(cf, node, loc):
    if loc.index is UNSET:
        loc.index = []
    for name in node.args:
        if not name:
            raise ConfigError('index "" in "index" directive is invalid')
        loc.index.append(name)


def _complex(text):
    """A literal as bytes, or a callable(request) -> str when the text holds variables."""
    if "$" not in text:
        return text.encode("utf-8")
    from .variables import compile_complex
    return compile_complex(text)


def set_return(cf, node, loc):
    args = node.args
    first = args[0]
    if len(args) == 1 and not first.isdigit():
        if not first.startswith(("http://", "https://", "$scheme")):
            raise ConfigError('invalid return code "%s"' % first)
        loc.return_ = (302, _complex(first))
        return
    if not first.isdigit() or int(first) > 999:
        raise ConfigError('invalid return code "%s"' % first)
    code = int(first)
    if code == 494 or code > 599:
        raise ConfigError('invalid return code "%s"' % first)
    loc.return_ = (code, _complex(args[1]) if len(args) == 2 else None)


def _set_access(allow):
    def setter(cf, node, loc):
        value = node.args[0]
        if loc.access is UNSET:
            loc.access = []
        if value == "all":
            loc.access.append((None, allow))
            return
        if value == "unix:":
            return
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError('invalid parameter "%s"' % value) from None
        if "/" in value and ipaddress.ip_network(value, strict=False).network_address != \
                ipaddress.ip_address(value.split("/")[0]):
            # nginx accepts it and warns "low address bits of X are meaningless"
            pass
        loc.access.append((net, allow))
    return setter


def set_add_header(cf, node, loc):
    args = node.args
    if loc.add_headers is UNSET:
        loc.add_headers = []
    always = False
    if len(args) == 3:
        if args[2] != "always":
            raise ConfigError('invalid parameter "%s"' % args[2])
        always = True
    loc.add_headers.append((args[0].encode("latin-1"), _complex(args[1]), always))


def set_keepalive_timeout(cf, node, loc):
    if loc.keepalive_timeout is not UNSET:
        raise ConfigError('"keepalive_timeout" directive is duplicate')
    try:
        loc.keepalive_timeout = parse_msec(node.args[0])
        loc.keepalive_header = None
        if len(node.args) == 2:
            loc.keepalive_header = parse_msec(node.args[1]) // 1000
    except ValueError:
        raise ConfigError('"keepalive_timeout" directive invalid value') from None


def set_large_buffers(cf, node, srv):
    if srv.large_client_header_buffers is not UNSET:
        raise ConfigError('"large_client_header_buffers" directive is duplicate')
    num, size = node.args
    if not num.isdigit() or int(num) == 0:
        raise ConfigError('invalid value "%s"' % num)
    try:
        size = parse_size(size)
    except ValueError:
        raise ConfigError('invalid value "%s"' % size) from None
    if size <= 0:
        raise ConfigError('invalid value "%s"' % node.args[1])
    srv.large_client_header_buffers = (int(num), size)


def set_types(cf, node, loc):
    if loc.types is UNSET:
        loc.types = {}
    for child in node.children:
        if child.children is not None:
            raise ConfigError('unexpected "{"')
        for ext in child.args:
            loc.types[ext.lower()] = child.name


_DIRECTIVES_ANY = Ctx.HTTP | Ctx.SRV | Ctx.LOC
_HS = Ctx.HTTP | Ctx.SRV


def _checked(check):
    """A setter for a directive nginx tunes and ngxws has no use for: its value is checked only."""
    def setter(cf, node, conf):
        check(node)
    return setter


def _check_number(node):
    try:
        _int(node.args[0])
    except ValueError:
        raise ConfigError('"%s" directive invalid number' % node.name) from None


def _int(s):
    if not s.isascii() or not s.isdigit():
        raise ValueError(s)
    return int(s)


def _check_pool_size(node):
    # ngx_http_core_pool_size: at least NGX_MIN_POOL_SIZE (112 on 64-bit), a multiple of 16
    try:
        size = parse_size(node.args[0])
    except ValueError:
        raise ConfigError('"%s" directive invalid value' % node.name) from None
    if size < 112:
        raise ConfigError("the pool size must be no less than 112")
    if size % 16:
        raise ConfigError("the pool size must be a multiple of 16")


def _check_temp_path(node):
    for level in node.args[1:]:
        try:
            if _int(level) == 0:
                raise ValueError(level)
        except ValueError:
            raise ConfigError('"%s" directive invalid value' % node.name) from None


def _check_open_file_cache(node):
    args = node.args
    if args == ["off"]:
        return
    seen_max = False
    for arg in args:
        key, eq, value = arg.partition("=")
        try:
            if key == "max" and eq and _int(value) > 0:
                seen_max = True
                continue
            if key == "inactive" and eq:
                parse_sec(value)
                continue
        except ValueError:
            pass
        raise ConfigError('invalid "open_file_cache" parameter "%s"' % arg)
    if not seen_max:
        raise ConfigError('"open_file_cache" must have the "max" parameter')


def _check_msec(node):
    try:
        parse_msec(node.args[0])
    except ValueError:
        raise ConfigError('"%s" directive invalid value' % node.name) from None


def _check_flag(node):
    value = node.args[0]
    if value.lower() not in ("on", "off") or not value.isascii():
        raise ConfigError('invalid value "%s" in "%s" directive, it must be "on" or "off"' % (value, node.name))


def _set_gzip_comp_level(cf, node, conf):
    if conf.gzip_comp_level is not UNSET:
        raise ConfigError('"%s" directive is duplicate' % node.name)
    try:
        level = _int(node.args[0])
    except ValueError:
        raise ConfigError('"%s" directive invalid number' % node.name) from None
    if not 1 <= level <= 9:
        raise ConfigError("value must be between 1 and 9")
    conf.gzip_comp_level = level


def _set_gzip_types(cf, node, conf):
    if conf.gzip_types is not UNSET:
        raise ConfigError('"%s" directive is duplicate' % node.name)
    types = set()
    for t in node.args:
        t = t.lower()
        if t == "text/html":
            cf.warn(node, 'duplicate MIME type "text/html"')
        types.add(t)
    conf.gzip_types = frozenset(types)


def _set_gzip_proxied(cf, node, conf):
    if conf.gzip_proxied is not UNSET:
        raise ConfigError('"%s" directive is duplicate' % node.name)
    for word in node.args:
        if word not in _GZIP_PROXIED:
            raise ConfigError('invalid value "%s"' % word)
    conf.gzip_proxied = frozenset(node.args)


_GZIP_PROXIED = ("off", "expired", "no-cache", "no-store", "private", "no_last_modified", "no_etag",
                 "auth", "any")


def _check_gzip_buffers(node):
    try:
        _int(node.args[0])
        parse_size(node.args[1])
    except ValueError:
        raise ConfigError('"%s" directive invalid value' % node.name) from None


#: nginx's memory and cache tuning: accepted with nginx's checks, nothing to tune in ngxws
_ACCEPTED = (
    ("client_body_temp_path", _DIRECTIVES_ANY, Args.TAKE1 | Args.TAKE2 | Args.TAKE3 | Args.TAKE4,
     _check_temp_path),
    ("server_names_hash_bucket_size", Ctx.HTTP, Args.TAKE1, _check_number),
    ("server_names_hash_max_size", Ctx.HTTP, Args.TAKE1, _check_number),
    ("connection_pool_size", _HS, Args.TAKE1, _check_pool_size),
    ("request_pool_size", _HS, Args.TAKE1, _check_pool_size),
    ("types_hash_max_size", _DIRECTIVES_ANY, Args.TAKE1, _check_number),
    ("types_hash_bucket_size", _DIRECTIVES_ANY, Args.TAKE1, _check_number),
    ("open_file_cache", _DIRECTIVES_ANY, Args.TAKE12, _check_open_file_cache),
    ("open_file_cache_valid", _DIRECTIVES_ANY, Args.TAKE1, _check_msec),
    ("open_file_cache_min_uses", _DIRECTIVES_ANY, Args.TAKE1, _check_number),
    ("open_file_cache_errors", _DIRECTIVES_ANY, Args.FLAG, lambda node: _check_flag(node)),
    ("open_file_cache_events", _DIRECTIVES_ANY, Args.FLAG, lambda node: _check_flag(node)),
    ("gzip_buffers", _DIRECTIVES_ANY, Args.TAKE2, _check_gzip_buffers),
    ("gzip_disable", _DIRECTIVES_ANY, Args.ONEMORE, lambda node: None),
)


class HttpCoreModule(HttpModule):
    name = "http"
    DIRECTIVES = (
        Directive("http", Ctx.MAIN, Args.BLOCK | Args.NOARGS, set_http),
        Directive("server", Ctx.HTTP, Args.BLOCK | Args.NOARGS, set_server, Slot.MAIN),
        Directive("location", Ctx.SRV | Ctx.LOC, Args.BLOCK | Args.TAKE12, set_location, Slot.LOC),
        Directive("listen", Ctx.SRV, Args.ONEMORE, set_listen, Slot.SRV),
        Directive("server_name", Ctx.SRV, Args.ONEMORE, set_server_name, Slot.SRV),
        Directive("client_header_timeout", _HS, Args.TAKE1, set_msec("client_header_timeout"), Slot.SRV),
        Directive("client_header_buffer_size", _HS, Args.TAKE1, set_size("client_header_buffer_size"),
                  Slot.SRV),
        Directive("large_client_header_buffers", _HS, Args.TAKE2, set_large_buffers, Slot.SRV),
        Directive("root", _DIRECTIVES_ANY, Args.TAKE1, set_root, Slot.LOC),
        Directive("index", _DIRECTIVES_ANY, Args.ONEMORE, set_index, Slot.LOC),
        Directive("return", Ctx.SRV | Ctx.LOC, Args.TAKE12, set_return, Slot.LOC),
        Directive("allow", _DIRECTIVES_ANY, Args.TAKE1, _set_access(True), Slot.LOC),
        Directive("deny", _DIRECTIVES_ANY, Args.TAKE1, _set_access(False), Slot.LOC),
        Directive("add_header", _DIRECTIVES_ANY, Args.TAKE23, set_add_header, Slot.LOC),
        Directive("server_tokens", _DIRECTIVES_ANY, Args.TAKE1,
                  set_enum("server_tokens", {"on": True, "off": False, "build": True}), Slot.LOC),
        Directive("client_body_timeout", _DIRECTIVES_ANY, Args.TAKE1, set_msec("client_body_timeout"),
                  Slot.LOC),
        Directive("client_max_body_size", _DIRECTIVES_ANY, Args.TAKE1, set_size("client_max_body_size"),
                  Slot.LOC),
        Directive("keepalive_timeout", _DIRECTIVES_ANY, Args.TAKE12, set_keepalive_timeout, Slot.LOC),
        Directive("keepalive_requests", _DIRECTIVES_ANY, Args.TAKE1, set_num("keepalive_requests"),
                  Slot.LOC),
        Directive("send_timeout", _DIRECTIVES_ANY, Args.TAKE1, set_msec("send_timeout"), Slot.LOC),
        Directive("lingering_close", _DIRECTIVES_ANY, Args.TAKE1,
                  set_enum("lingering_close", {"off": 0, "on": 1, "always": 2}), Slot.LOC),
        Directive("lingering_timeout", _DIRECTIVES_ANY, Args.TAKE1, set_msec("lingering_timeout"), Slot.LOC),
        Directive("lingering_time", _DIRECTIVES_ANY, Args.TAKE1, set_msec("lingering_time"), Slot.LOC),
        Directive("types", _DIRECTIVES_ANY, Args.BLOCK | Args.NOARGS, set_types, Slot.LOC),
        Directive("default_type", _DIRECTIVES_ANY, Args.TAKE1, set_str("default_type"), Slot.LOC),
        Directive("sendfile", _DIRECTIVES_ANY, Args.FLAG, set_flag("sendfile"), Slot.LOC),
        Directive("tcp_nopush", _DIRECTIVES_ANY, Args.FLAG, set_flag("tcp_nopush"), Slot.LOC),
        Directive("tcp_nodelay", _DIRECTIVES_ANY, Args.FLAG, set_flag("tcp_nodelay"), Slot.LOC),
        Directive("gzip", _DIRECTIVES_ANY, Args.FLAG, set_flag("gzip"), Slot.LOC),
        Directive("gzip_types", _DIRECTIVES_ANY, Args.ONEMORE, _set_gzip_types, Slot.LOC),
        Directive("gzip_min_length", _DIRECTIVES_ANY, Args.TAKE1, set_size("gzip_min_length"), Slot.LOC),
        Directive("gzip_comp_level", _DIRECTIVES_ANY, Args.TAKE1, _set_gzip_comp_level, Slot.LOC),
        Directive("gzip_vary", _DIRECTIVES_ANY, Args.FLAG, set_flag("gzip_vary"), Slot.LOC),
        Directive("gzip_http_version", _DIRECTIVES_ANY, Args.TAKE1,
                  set_enum("gzip_http_version", {"1.0": b"1.0", "1.1": b"1.1"}), Slot.LOC),
        Directive("gzip_proxied", _DIRECTIVES_ANY, Args.ONEMORE, _set_gzip_proxied, Slot.LOC),
    ) + tuple(Directive(name, ctx, args, _checked(check), Slot.LOC) for name, ctx, args, check in _ACCEPTED)

    def create_main_conf(self, cf):
        return _HttpBlock()

    def create_http_main_conf(self, cf):
        return HttpMainConf()

    def create_srv_conf(self, cf):
        return ServerConf()

    def create_loc_conf(self, cf):
        return LocationConf()

    def merge_srv_conf(self, parent, child):
        merge(child, parent, client_header_timeout=60000, client_header_buffer_size=1024,
              large_client_header_buffers=(4, 8192))

    def merge_loc_conf(self, parent, child):
        # nginx inherits these lists only when the level has none of its own
        merge(child, parent, root=None, index=["index.html"], access=[], add_headers=[],
              server_tokens=True, client_body_timeout=60000, client_max_body_size=1024 * 1024,
              keepalive_timeout=75000, keepalive_header=None, keepalive_requests=1000,
              send_timeout=60000, lingering_close=1, lingering_timeout=5000, lingering_time=30000,
              types=MIME_TYPES, default_type="text/plain", sendfile=False, tcp_nopush=False,
              tcp_nodelay=True, gzip=False, gzip_types=frozenset(), gzip_min_length=20,
              gzip_comp_level=1, gzip_vary=False, gzip_http_version=b"1.1",
              gzip_proxied=frozenset(["off"]))
        if child.root is None:
            child.root = None   # resolved against the prefix by the cycle's Parser at runtime

    def shutdown(self, cycle, graceful):
        _shutdown_connections(cycle, graceful)
        return False

    def postconfiguration(self, cf, http_conf):
        # the default root is "html" under the prefix, resolved once here
        default_root = cf.full_path("html")
        for srv in http_conf.servers:
            for loc in [srv.loc] + _all_locations(srv.locations):
                if loc.root is None:
                    loc.root = default_root


def _shutdown_connections(cycle, graceful):
    from .handler import HttpConnection, WAITING
    loop = getattr(cycle, "loop", None)
    sel = loop.selector if loop is not None else None
    if sel is None:
        return
    for key in list(sel.get_map().values()):
        conn = key.data
        hc = getattr(conn, "data", None)
        if not isinstance(hc, HttpConnection) or conn.closed:
            continue
        if graceful and not cycle.quitting and conn.listening in cycle.worker_listening:
            # A retiring worker's push port serves its WebSocket clients until they
            # leave; the worker quits (and this runs again) once they have.
            continue
        if not graceful or hc.state == WAITING:
            # nginx closes idle keep-alive connections at once on a graceful exit
            hc.close()
        else:
            # the request in flight is answered, then the connection closes
            conn.close_requested = True


def _all_locations(tree):
    out = []
    if tree is None:
        return out
    for conf in _tree_confs(tree):
        out.append(conf)
        out.extend(_all_locations(conf.locations))
    return out


def build_virtual_server(locations, server_name="", **settings):
    """A server table for a listening opened from code (``cycle.add_listening``).

    ``locations`` maps a location as written in a config (``"/ws"``, ``"= /x"``,
    ``"~ ^/p/"``) to a content handler ``Callable[[Request], None]`` or to a
    ready LocationConf.  ``settings`` are LocationConf/ServerConf fields
    (``client_max_body_size=65536``, ``keepalive_timeout=75000``, ``access=[...]``);
    everything else takes nginx's defaults.  Returns what ``Listening.servers``
    must hold: pass it to ``cycle.add_listening(host, port, init_connection, servers)``.
    """
    core = HttpCoreModule()
    srv = ServerConf()
    srv_fields = {k: v for k, v in settings.items() if hasattr(srv, k) and k not in ("loc",)}
    for k, v in srv_fields.items():
        setattr(srv, k, v)
    core.merge_srv_conf(None, srv)
    srv.loc = LocationConf()
    for k, v in settings.items():
        if k not in srv_fields and hasattr(srv.loc, k):
            setattr(srv.loc, k, v)
    core.merge_loc_conf(None, srv.loc)
    if srv.loc.root is None:
        srv.loc.root = os.devnull
    srv.locations = LocationTree()
    srv.names = [server_name] if server_name else []
    for spec, target in locations.items():
        modifier, _, name = spec.partition(" ") if " " in spec else ("", "", spec)
        if isinstance(target, LocationConf):
            loc = target
        else:
            loc = LocationConf(handler=target)
        loc.name, loc.modifier = name, modifier
        for k, v in settings.items():
            if k not in srv_fields and hasattr(loc, k) and getattr(loc, k) is UNSET:
                setattr(loc, k, v)
        core.merge_loc_conf(srv.loc, loc)
        loc.confs = loc.confs or _DictConfs()
        srv.locations.add(modifier, name, loc)
    srv.loc.confs = _DictConfs()
    vs = VirtualServers()
    vs.add_server(srv, srv.names or [""], default=True)
    return AddressServers(wildcard=vs)


class _DictConfs:
    """A stand-in ConfSet for servers built from code: no other module's confs."""

    def get(self, name, slot):
        return None
