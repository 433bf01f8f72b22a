"""nginx variables: ``$remote_addr``, ``$http_user_agent``, ... and the text that uses them.

Theory of operation
-------------------
A variable is a getter ``getter(request) -> str | None``.  ``None`` is nginx's
"not found": ``return`` text and header values show it as nothing, the access log
as ``-``.  ``VARIABLES`` maps lower-case names to getters; ``PREFIX_VARIABLES``
maps a prefix (``http_``) to a factory that makes the getter for one suffix, once,
at configuration time.  Names are case-insensitive, as nginx's are.

``compile_complex(text)`` turns ``return`` text or an ``add_header`` value into a
function of the request, at configuration time: the text is cut once into
literals and getters, so that a request costs one call per variable and one
``join`` (nginx's complex values).  The log module compiles its formats with the
same tokenizer (``parse_template``) and its own error wording.

Values are byte strings carried as ``str``: one character per byte (latin-1),
whether they came off the wire or from the config file (whose UTF-8 text is
re-spelt that way once, at configuration time).  So the value of a compiled
text is turned into the exact bytes nginx would send or log with
``.encode("latin-1")``, and no value is ever re-encoded by guesswork.

Request and connection attributes read here (owned by http/request.py and
core/connection.py; see docs/internals.md): ``method target uri args headers
http_version status bytes_sent body_bytes_sent start_time srv_conf`` (its
``name``) and ``conn``, the
head's ``request_line`` and ``length`` (``request_line``/``request_length`` on
the request win when present), ``body``, ``response_headers``, ``match`` (the
regex location's ``re.Match``, for ``$1``) and ``conn.peer local number
requests``.  A missing attribute reads as "not found" rather than failing:
a request that failed to parse still gets logged.
"""

import base64
import os
import socket
import time

from ngxws import __version__
from ngxws.core.directives import ConfigError

__all__ = ["VARIABLES", "PREFIX_VARIABLES", "compile_complex", "parse_template", "get_variable",
           "text", "conf_text", "header_value"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def text(v):
    """Wire bytes as byte-exact text; text as is; None stays None."""
    if v.__class__ is bytes or v.__class__ is bytearray:
        return v.decode("latin-1")
    return v


def conf_text(s):
    """Config text (any Unicode) spelt as its UTF-8 bytes, one character per byte."""
    if s.isascii():
        return s
    return s.encode("utf-8").decode("latin-1")


# -- time, formatted once per second (nginx's cached ngx_cached_http_log_time) --------

class _TimeCache:
    __slots__ = ("sec", "local", "iso8601")

    def __init__(self):
        self.sec = -1
        self.local = ""
        self.iso8601 = ""

    def update(self, now):
        sec = int(now)
        if sec == self.sec:
            return
        tm = time.localtime(sec)
        off = tm.tm_gmtoff or 0
        sign = "-" if off < 0 else "+"
        off = abs(off) // 60
        self.local = "%02d/%s/%d:%02d:%02d:%02d %s%02d%02d" % (
            tm.tm_mday, _MONTHS[tm.tm_mon - 1], tm.tm_year, tm.tm_hour, tm.tm_min, tm.tm_sec,
            sign, off // 60, off % 60)
        self.iso8601 = "%d-%02d-%02dT%02d:%02d:%02d%s%02d:%02d" % (
            tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            sign, off // 60, off % 60)
        self.sec = sec


_time = _TimeCache()
#: the wall clock; tests replace it
clock = time.time


def _time_local(r):
    _time.update(clock())
    return _time.local


def _time_iso8601(r):
    _time.update(clock())
    return _time.iso8601


def _msec(r):
    # nginx prints whole milliseconds, truncated, not a rounded float
    return "%d.%03d" % divmod(int(clock() * 1000), 1000)


def _request_time(r):
    start = getattr(r, "start_time", None)
    if start is None:
        return "0.000"
    ms = int(clock() * 1000) - int(start * 1000)
    return "%d.%03d" % divmod(ms if ms > 0 else 0, 1000)


# -- connection --------------------------------------------------------------------

def _remote_addr(r):
    peer = r.conn.peer
    if peer.__class__ is tuple:
        return peer[0]
    return "unix:"


def _remote_port(r):
    peer = r.conn.peer
    if peer.__class__ is tuple:
        return str(peer[1])
    return ""


def _server_addr(r):
    local = r.conn.local
    if local.__class__ is tuple:
        return local[0]
    return "unix:"


def _server_port(r):
    local = r.conn.local
    if local.__class__ is tuple:
        return str(local[1])
    return ""


def _connection(r):
    return str(r.conn.number)


def _connection_requests(r):
    return str(r.conn.requests)


_PID = [0, ""]


def _pid(r):
    # os.getpid() is a system call; the pid only changes across fork.
    pid = os.getpid()
    if pid != _PID[0]:
        _PID[0] = pid
        _PID[1] = str(pid)
    return _PID[1]


_HOSTNAME = conf_text(socket.gethostname())


# -- request line ------------------------------------------------------------------

def _http_version(r):
    if not getattr(r, "method", None):
        # the request line was never parsed (414, a bad method): nginx logs "-"
        return None
    v = text(getattr(r, "http_version", None))
    if not v:
        return None
    return v if v.startswith("HTTP/") else "HTTP/" + v


def _request(r):
    line = getattr(r, "request_line", None)
    if line is None:
        head = getattr(r, "head", None)
        line = getattr(head, "request_line", None)
    if line is not None:
        return text(line) or None
    method = getattr(r, "method", None)
    target = getattr(r, "target", None)
    if method is None or target is None:
        return None
    version = _http_version(r)
    if version is None:
        return "%s %s" % (text(method), text(target))
    return "%s %s %s" % (text(method), text(target), version)


def _request_method(r):
    return text(getattr(r, "method", None)) or None


def _request_uri(r):
    target = text(getattr(r, "target", None))
    if not target:
        return None
    if target[0] != "/":
        # absolute form: nginx's $request_uri is the part from the path on
        i = target.find("://")
        if i > 0:
            j = target.find("/", i + 3)
            return target[j:] if j > 0 else "/"
    return target


def uri_text(u):
    """The decoded URI (real text, invalid UTF-8 kept as surrogates) as its bytes, one per character."""
    if u.__class__ is not str:
        return text(u)
    if u.isascii():
        return u
    return u.encode("utf-8", "surrogateescape").decode("latin-1")


def _uri(r):
    u = getattr(r, "uri", None)
    return uri_text(u) if u else None


def _args(r):
    return text(getattr(r, "args", None)) or None


def _is_args(r):
    return "?" if getattr(r, "args", None) else ""


def _scheme(r):
    return "http"


def _status(r):
    status = getattr(r, "status", 0) or 0
    if status == 494:
        # "request header too large" goes out, and is logged, as 400
        status = 400
    return "%03d" % status


def _body_bytes_sent(r):
    return str(getattr(r, "body_bytes_sent", 0))


def _bytes_sent(r):
    return str(getattr(r, "bytes_sent", 0))


def _request_length(r):
    n = getattr(r, "request_length", None)
    if n is None:
        # the head as read, plus the body
        n = getattr(getattr(r, "head", None), "length", 0)
        body = getattr(r, "body", None)
        if body:
            n += len(body)
    return str(n)


def _server_name(r):
    srv = getattr(r, "srv_conf", None)
    if srv is None:
        return ""
    # http/core_module.py's ServerConf.name is the first server_name
    name = getattr(srv, "name", None)
    if name is None:
        name = getattr(srv, "server_name", "")
    if name.__class__ is list or name.__class__ is tuple:
        name = name[0] if name else ""
    if name.__class__ is str:
        return conf_text(name)
    return text(name) or ""


def _host(r):
    # the absolute URI's host wins over the Host header (http/request.py's Head.host)
    host = text(getattr(getattr(r, "head", None), "host", None)) or header_value(r, b"host")
    if host:
        # nginx keeps the Host header's name, lower-cased, without the port.
        if host.startswith("["):
            end = host.find("]")
            host = host[:end + 1] if end > 0 else host
        else:
            host = host.partition(":")[0]
        host = host.rstrip(".").lower()
        if host:
            return host
    return _server_name(r)


def _remote_user(r):
    auth = header_value(r, b"authorization")
    if not auth or auth[:6].lower() != "basic ":
        return None
    try:
        user = base64.b64decode(auth[6:].strip(), validate=True).decode("latin-1")
    except ValueError:
        return None
    user = user.partition(":")[0]
    return user or None


# -- headers, cookies, args --------------------------------------------------------

_JOINED = {b"cookie": "; ", b"x-forwarded-for": ", "}


def header_value(r, name):
    """The request header ``name`` (lower-case bytes) as text.

    nginx 1.22's rule: the first of repeated headers, except Cookie (joined
    with "; ") and X-Forwarded-For (joined with ", ").
    """
    headers = getattr(r, "headers", None)
    if not headers:
        return None
    sep = _JOINED.get(name)
    if sep is None:
        for k, v in headers:
            if k == name:
                return text(v)
        return None
    found = None
    for k, v in headers:
        if k == name:
            found = text(v) if found is None else found + sep + text(v)
    return found


def _header_getter(name):
    key = name.replace("_", "-").encode("latin-1")

    def get(r):
        return header_value(r, key)
    return get


def _sent_connection(r):
    # nginx's $sent_http_connection reads the request's keep-alive flag, which it clears
    # before the log phase: an access log says "close" for a kept-alive request too
    if getattr(r, "status", 0) == 101:
        return "upgrade"
    return "keep-alive" if getattr(r, "keep_alive", False) and not getattr(r, "done", True) \
        else "close"


def _sent_keep_alive(r):
    # "timeout=N" while the request is being answered with keepalive_timeout's header time;
    # "not found" in the access log (the flag is cleared by then, as for $sent_http_connection)
    if getattr(r, "keep_alive", False) and not getattr(r, "done", True):
        seconds = getattr(getattr(r, "loc", None), "keepalive_header", None)
        if seconds:
            return "timeout=%d" % seconds
    return None


def _sent_header_getter(name):
    if name == "connection":
        return _sent_connection
    if name == "keep_alive":
        return _sent_keep_alive
    key = name.replace("_", "-").encode("latin-1")
    # nginx writes its own Server and Date lines from the header filter, outside the
    # response's header list that $sent_http_NAME searches: a head's first Server and Date
    # (http/handler.py writes them first) are not found, an add_header's are
    skip = 1 if key in (b"server", b"date") else 0

    def get(r):
        headers = getattr(r, "response_headers", None)
        if not headers:
            return None
        seen = 0
        for k, v in headers:
            if k.__class__ is str:
                k = k.encode("latin-1")
            if k.lower() == key:
                if seen == skip:
                    return text(v)
                seen += 1
        return None
    return get


def _cookie_getter(name):
    key = name.lower()

    def get(r):
        cookies = header_value(r, b"cookie")
        if not cookies:
            return None
        for part in cookies.split(";"):
            k, eq, v = part.strip().partition("=")
            if eq and k.lower() == key:
                return v
        return None
    return get


def _arg_getter(name):
    key = name.lower()

    def get(r):
        args = text(getattr(r, "args", None))
        if not args:
            return None
        for part in args.split("&"):
            k, eq, v = part.partition("=")
            if eq and k.lower() == key:
                return v
        return None
    return get


def _content_type(r):
    return header_value(r, b"content-type")


def _content_length(r):
    return header_value(r, b"content-length")


VARIABLES = {
    "remote_addr": _remote_addr,
    "remote_port": _remote_port,
    "remote_user": _remote_user,
    "time_local": _time_local,
    "time_iso8601": _time_iso8601,
    "msec": _msec,
    "request": _request,
    "request_method": _request_method,
    "request_uri": _request_uri,
    "uri": _uri,
    "document_uri": _uri,
    "args": _args,
    "query_string": _args,
    "is_args": _is_args,
    "status": _status,
    "body_bytes_sent": _body_bytes_sent,
    "bytes_sent": _bytes_sent,
    "request_length": _request_length,
    "request_time": _request_time,
    "connection": _connection,
    "connection_requests": _connection_requests,
    "pid": _pid,
    "host": _host,
    "hostname": lambda r: _HOSTNAME,
    "server_name": _server_name,
    "server_addr": _server_addr,
    "server_port": _server_port,
    "server_protocol": _http_version,
    "scheme": _scheme,
    "nginx_version": lambda r: __version__,
    "content_type": _content_type,
    "content_length": _content_length,
}

#: prefix -> factory(suffix) -> getter; longest prefixes are tried first
PREFIX_VARIABLES = {
    "http_": _header_getter,
    "sent_http_": _sent_header_getter,
    "cookie_": _cookie_getter,
    "arg_": _arg_getter,
}


def _capture_getter(n):
    def get(r):
        caps = getattr(r, "captures", None)
        if caps is None:
            m = getattr(r, "match", None)
            if m is None or n > (m.re.groups if hasattr(m, "re") else -1):
                return None
            v = m.group(n)
            # a regex location matches the decoded URI
            return uri_text(v) if v else None
        if n >= len(caps):
            return None
        v = caps[n]
        return uri_text(v) if v is not None else None
    return get


def get_variable(name, captures=False):
    """The getter of ``$name``, or ConfigError ``unknown "name" variable``."""
    key = name.lower()
    getter = VARIABLES.get(key)
    if getter is not None:
        return getter
    if captures and key.isdigit():
        return _capture_getter(int(key))
    for prefix in sorted(PREFIX_VARIABLES, key=len, reverse=True):
        if key.startswith(prefix) and len(key) > len(prefix):
            return PREFIX_VARIABLES[prefix](key[len(prefix):])
    raise ConfigError('unknown "%s" variable' % name)


# -- templates ---------------------------------------------------------------------

def parse_template(s, bad_name):
    """Cut ``s`` into literal strings and variable names: ``["GET ", ("uri",), ...]``.

    ``bad_name(rest)`` builds the error for a ``$`` not followed by a name
    (the wording differs between ``return`` text and ``log_format``).
    """
    parts = []
    i = 0
    n = len(s)
    lit_start = 0
    while i < n:
        if s[i] != "$":
            i += 1
            continue
        if i > lit_start:
            parts.append(s[lit_start:i])
        j = i + 1
        if j < n and s[j] == "{":
            k = j + 1
            while k < n and s[k] in _NAME_CHARS:
                k += 1
            if k == j + 1:
                raise bad_name(s[i:])
            if k == n or s[k] != "}":
                raise ConfigError('the closing bracket in "%s" variable is missing' % s[j + 1:k])
            name = s[j + 1:k]
            i = k + 1
        else:
            k = j
            while k < n and s[k] in _NAME_CHARS:
                k += 1
            if k == j:
                raise bad_name(s[i:])
            name = s[j:k]
            i = k
        parts.append((name,))
        lit_start = i
    if lit_start < n:
        parts.append(s[lit_start:])
    return parts


def _invalid_name(rest):
    return ConfigError("invalid variable name")


def compile_complex(s):
    """``return`` text / ``add_header`` value -> ``f(request) -> str``; ConfigError if bad.

    The result has one character per byte: ``.encode("latin-1")`` gives the bytes
    to send (config text in UTF-8, wire bytes as they came).
    """
    parts = []
    for p in parse_template(s, _invalid_name):
        if p.__class__ is tuple:
            parts.append(get_variable(p[0], captures=True))
        else:
            parts.append(conf_text(p))
    if not parts:
        return lambda r: ""
    if len(parts) == 1 and parts[0].__class__ is str:
        const = parts[0]
        return lambda r: const
    if len(parts) == 1:
        getter = parts[0]

        def one(r):
            v = getter(r)
            return "" if v is None else v
        return one
    parts = tuple(parts)

    def render(r):
        out = []
        for p in parts:
            if p.__class__ is str:
                out.append(p)
            else:
                v = p(r)
                if v is not None:
                    out.append(v)
        return "".join(out)
    return render
