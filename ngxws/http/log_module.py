"""The access log: ``access_log`` and ``log_format``, as nginx's ngx_http_log_module.

Theory of operation
-------------------
``log_format`` compiles its text once into literal bytes and variable getters;
a logged request costs one getter call per variable, the escaping of values that
need it, and one ``join``.  Values are bytes on the way out: variables carry one
byte per character (latin-1), literal format text is the config's UTF-8.  Escaping is nginx's:

* ``default``: ``"``, ``\\``, bytes below 0x20 and from 0x7f up become ``\\xHH``
  (upper-case hex); a variable that is not found is logged as ``-``;
* ``json``: ``"`` and ``\\`` get a backslash, control bytes become ``\\n \\r \\t
  \\b \\f`` or ``\\u00HH``, bytes from 0x7f up pass; not found is empty;
* ``none``: values as they are; not found is empty.

Files are opened in the master while the config is read (``cycle.open_file``:
one descriptor per path, shared with the error log and every ``access_log`` of
that path) and inherited by the workers.  Each path has one ``LogBuffer`` per
process: unbuffered, a request is one ``write``; with ``buffer=SIZE`` lines
gather until the next line would not fit, until the ``flush=`` timer fires
(armed when the first line enters an empty buffer, 1 s unless given), before a
reopen and at exit.  A buffer never holds a partial line, so a line is never
split between two writes (and the ``O_APPEND`` writes of several workers do
not interleave within a line).

``reopen()`` (USR1, in a worker) flushes the buffers into the old files and
reopens them; the cycle reopens its open files too, which is harmless twice.
"""

import os
import re
import weakref

from ngxws.core.directives import UNSET, Args, ConfigError, Ctx, Directive, Slot, parse_msec, parse_size
from ngxws.core.loop import Event
from ngxws.http.module import HttpModule
from ngxws.http.variables import compile_complex, conf_text, get_variable, parse_template

__all__ = ["LogFormat", "AccessLog", "LogBuffer", "LogMainConf", "LogLocConf", "HttpLogModule",
           "log_request", "reopen", "flush_all", "escape_default", "escape_json", "COMBINED",
           "DEFAULT_FLUSH"]

COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent"')

#: flush= when buffer= is given without it, ms
DEFAULT_FLUSH = 1000

# -- escaping ----------------------------------------------------------------------

_DEFAULT_TABLE = {b: ("\\x%02X" % b).encode() for b in (*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100))}
_DEFAULT_RE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')


def _default_sub(m, _t=_DEFAULT_TABLE):
    return _t[m.group()[0]]


def escape_default(b):
    """nginx's access-log escaping (ngx_http_log_escape)."""
    if _DEFAULT_RE.search(b) is None:
        return b
    return _DEFAULT_RE.sub(_default_sub, b)


_JSON_TABLE = {b: ("\\u%04X" % b).encode() for b in range(0x20)}
_JSON_TABLE.update({0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r",
                    0x22: b'\\"', 0x5C: b"\\\\"})
_JSON_RE = re.compile(rb'[\x00-\x1f"\\]')


def _json_sub(m, _t=_JSON_TABLE):
    return _t[m.group()[0]]


def escape_json(b):
    """nginx's escape=json (ngx_escape_json)."""
    if _JSON_RE.search(b) is None:
        return b
    return _JSON_RE.sub(_json_sub, b)


def _to_bytes(v):
    # values carry one byte per character (variables.py); a getter of another
    # module that hands back real Unicode gets its UTF-8 logged (undecodable
    # bytes it kept as surrogates, as they came)
    try:
        return v.encode("latin-1")
    except UnicodeEncodeError:
        return v.encode("utf-8", "surrogateescape")


# -- formats -----------------------------------------------------------------------

def _invalid_parameter(rest):
    return ConfigError('invalid parameter "%s"' % rest)


_DEFAULT_STR_RE = re.compile(r'[\x00-\x1f"\\\x7f-\xff]')
_DEFAULT_STR_TABLE = {chr(b): "\\x%02X" % b for b in _DEFAULT_TABLE}
_JSON_STR_RE = re.compile(r'[\x00-\x1f"\\]')
_JSON_STR_TABLE = {chr(b): v.decode() for b, v in _JSON_TABLE.items()}


def _default_str_sub(m, _t=_DEFAULT_STR_TABLE):
    return _t[m.group()]


def _json_str_sub(m, _t=_JSON_STR_TABLE):
    return _t[m.group()]


class LogFormat:
    """One ``log_format``: render(request) -> one line of bytes, newline included.

    The line is built as one-byte-per-character text and encoded once; a value
    holding real Unicode (a getter of some other module) takes the slow path.
    """

    __slots__ = ("name", "escape", "ops", "_re", "_sub", "_missing")

    def __init__(self, name, text, escape="default"):
        self.name = name
        self.escape = escape
        ops = []
        for p in parse_template(text, _invalid_parameter):
            if p.__class__ is tuple:
                ops.append(get_variable(p[0]))
            elif ops and ops[-1].__class__ is str:
                ops[-1] += conf_text(p)
            else:
                ops.append(conf_text(p))
        if ops and ops[-1].__class__ is str:
            ops[-1] += "\n"
        else:
            ops.append("\n")
        self.ops = tuple(ops)
        if escape == "default":
            self._re, self._sub, self._missing = _DEFAULT_STR_RE, _default_str_sub, "-"
        elif escape == "json":
            self._re, self._sub, self._missing = _JSON_STR_RE, _json_str_sub, ""
        else:
            self._re, self._sub, self._missing = None, None, ""

    def render(self, r):
        out = []
        append = out.append
        missing = self._missing
        rx = self._re
        if rx is None:
            for op in self.ops:
                if op.__class__ is str:
                    append(op)
                else:
                    v = op(r)
                    append(missing if v is None else v)
        else:
            search = rx.search
            for op in self.ops:
                if op.__class__ is str:
                    append(op)
                    continue
                v = op(r)
                if v is None:
                    append(missing)
                elif search(v) is None:
                    append(v)
                else:
                    append(rx.sub(self._sub, v))
        try:
            return "".join(out).encode("latin-1")
        except UnicodeEncodeError:
            return self._render_unicode(r)

    def _render_unicode(self, r):
        esc = {"default": escape_default, "json": escape_json}.get(self.escape)
        missing = self._missing.encode()
        out = []
        for op in self.ops:
            if op.__class__ is str:
                out.append(op.encode("latin-1"))
                continue
            v = op(r)
            if v is None:
                out.append(missing)
            else:
                v = _to_bytes(v)
                out.append(esc(v) if esc is not None else v)
        return b"".join(out)


# -- files and buffers -------------------------------------------------------------

class _OwnFile:
    """Used only when no cycle opens files for us (unit tests, a bare Parser)."""

    __slots__ = ("path", "fd")

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, data):
        try:
            os.write(self.fd, data)
        except OSError:
            return

    def reopen(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        old, self.fd = self.fd, fd
        os.close(old)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open(cycle, path):
    try:
        if cycle is not None and hasattr(cycle, "open_file"):
            return cycle.open_file(path)
        return _OwnFile(path)
    except OSError as e:
        raise ConfigError('open() "%s" failed (%d: %s)' % (path, e.errno, e.strerror)) from None


class LogBuffer:
    """The lines of one path waiting to be written, in this process."""

    __slots__ = ("path", "file", "size", "flush_ms", "data", "event", "loop")

    def __init__(self, path, file, size=0, flush_ms=0):
        self.path = path
        self.file = file
        #: 0: unbuffered, one write per line
        self.size = size
        self.flush_ms = flush_ms
        self.data = bytearray()
        self.event = None
        self.loop = None

    def write(self, line):
        if not self.size:
            self.file.write(line)
            return
        data = self.data
        if len(data) + len(line) > self.size:
            self.flush()
            if len(line) >= self.size:
                self.file.write(line)
                return
        was_empty = not data
        data += line
        if was_empty and self.loop is not None and self.flush_ms:
            self.loop.add_timer(self.event, self.flush_ms)

    def flush(self):
        if self.data:
            self.file.write(bytes(self.data))
            self.data.clear()
        if self.event is not None and self.event.timer_set:
            self.loop.del_timer(self.event)

    def attach(self, loop):
        """In a worker: the flush timer runs on this loop."""
        self.loop = loop
        if self.size and self.flush_ms:
            self.event = Event(flush_timer_handler, self)
            # a pending flush must not hold up a graceful exit; exit flushes anyway
            self.event.cancelable = True


def flush_timer_handler(ev):
    ev.data.flush()


class AccessLog:
    """One ``access_log`` line: where, in which format, and an optional ``if=``."""

    __slots__ = ("buffer", "format", "condition")

    def __init__(self, buffer, fmt, condition=None):
        self.buffer = buffer
        self.format = fmt
        self.condition = condition


# -- confs -------------------------------------------------------------------------

class LogMainConf:
    __slots__ = ("formats", "buffers")

    def __init__(self):
        self.formats = {"combined": LogFormat("combined", COMBINED)}
        #: path -> LogBuffer, every path of this http block
        self.buffers = {}


class LogLocConf:
    __slots__ = ("logs", "off")

    def __init__(self):
        #: [AccessLog] or UNSET
        self.logs = UNSET
        #: "access_log off" at this level
        self.off = False


# -- directives --------------------------------------------------------------------

def _main(cf):
    return cf.confs.get(module.name, Slot.MAIN)


def _log_format(cf, node, conf):
    args = node.args
    name = args[0]
    if name in conf.formats:
        raise ConfigError('duplicate "log_format" name "%s"' % name)
    rest = args[1:]
    escape = "default"
    if rest and rest[0].startswith("escape="):
        escape = rest[0][7:]
        if escape not in ("default", "json", "none"):
            raise ConfigError('unknown log format escaping "%s"' % escape)
        rest = rest[1:]
    conf.formats[name] = LogFormat(name, "".join(rest), escape)


def _access_log(cf, node, conf):
    args = node.args
    if conf.logs is UNSET:
        conf.logs = []
    if args[0] == "off":
        conf.off = True
        if len(args) == 1:
            return
        raise ConfigError('invalid parameter "%s"' % args[1])
    main = _main(cf)
    path = args[0]
    if path.startswith("syslog:"):
        raise ConfigError('invalid parameter "%s"' % path)
    fmt_name = args[1] if len(args) > 1 else "combined"
    fmt = main.formats.get(fmt_name)
    if fmt is None:
        raise ConfigError('unknown log format "%s"' % fmt_name)
    size = 0
    flush_ms = None
    condition = None
    for a in args[2:]:
        if a.startswith("buffer="):
            try:
                size = parse_size(a[7:])
            except ValueError:
                size = 0
            if size <= 0:
                raise ConfigError('invalid buffer size "%s"' % a[7:])
        elif a.startswith("flush="):
            try:
                flush_ms = parse_msec(a[6:])
            except ValueError:
                flush_ms = 0
            if flush_ms <= 0:
                raise ConfigError('invalid flush time "%s"' % a[6:])
        elif a.startswith("if="):
            condition = compile_complex(a[3:])
        else:
            raise ConfigError('invalid parameter "%s"' % a)
    if flush_ms is not None and not size:
        raise ConfigError('no buffer is defined for access_log "%s"' % path)
    if size and flush_ms is None:
        flush_ms = DEFAULT_FLUSH
    full = cf.full_path(path)
    buf = main.buffers.get(full)
    if buf is None:
        buf = LogBuffer(full, _open(getattr(cf, "cycle", None), full), size, flush_ms or 0)
        main.buffers[full] = buf
        _register(cf, buf)
    elif buf.size != size or (size and buf.flush_ms != flush_ms):
        raise ConfigError('access_log "%s" already defined with conflicting parameters' % path)
    conf.logs.append(AccessLog(buf, fmt, condition))


# buffers of each cycle, for init_process/reopen/exit; a failed reload's cycle simply goes away
_cycle_buffers = weakref.WeakKeyDictionary()
#: this worker's buffers
_buffers = []


def _register(cf, buf):
    cycle = getattr(cf, "cycle", None)
    if cycle is None:
        return
    try:
        _cycle_buffers.setdefault(cycle, []).append(buf)
    except TypeError:
        pass


# -- the request path --------------------------------------------------------------

def log_request(r):
    """Write the access log lines of a finished request (nginx's log phase)."""
    loc = r.loc
    if loc is None:
        # no location at all (a request given up before a server was known)
        return
    conf = loc.access_log
    if conf is UNSET:
        # looked up once per location: a location's confs do not change in its cycle
        conf = loc.access_log = loc.module_conf(module.name)
    if conf is None or conf.off:
        return
    for log in conf.logs:
        cond = log.condition
        if cond is not None:
            v = cond(r)
            if not v or v == "0":
                continue
        log.buffer.write(log.format.render(r))


def flush_all():
    for buf in _buffers:
        buf.flush()


def reopen():
    """USR1 in a worker: buffered lines go to the old file, then the files are reopened."""
    seen = set()
    for buf in _buffers:
        buf.flush()
        if id(buf.file) not in seen:
            seen.add(id(buf.file))
            try:
                buf.file.reopen()
            except OSError:
                # the cycle's own reopen says so in the error log; keep the old file
                pass


class HttpLogModule(HttpModule):
    name = "http_log"
    DIRECTIVES = (
        Directive("log_format", Ctx.HTTP, Args.TWOMORE, _log_format, Slot.MAIN),
        Directive("access_log", Ctx.HTTP | Ctx.SRV | Ctx.LOC, Args.ONEMORE, _access_log, Slot.LOC),
    )

    def __init__(self):
        self._default = None

    def create_http_main_conf(self, cf):
        main = LogMainConf()
        # resolved (and its file opened) the first time a level falls back to it
        self._default = (cf, main)
        return main

    def create_loc_conf(self, cf):
        return LogLocConf()

    def merge_loc_conf(self, parent, child):
        if child.logs is UNSET:
            if parent is not None and parent.logs is not UNSET:
                child.logs = parent.logs
                child.off = parent.off
            else:
                child.logs = self._default_logs()
        return child

    def postconfiguration(self, cf, http_conf):
        # every level is merged: let go of the parser (and through it the cycle)
        self._default = None

    def _default_logs(self):
        """``access_log logs/access.log combined``, opened the first time a level needs it."""
        if self._default is None:
            raise ConfigError("http log module: no http main conf")
        if self._default.__class__ is tuple:
            cf, main = self._default
            self._default = _default_log(cf, main)
        return [self._default]

    def init_process(self, cycle):
        global _buffers
        _buffers = list(_cycle_buffers.get(cycle, ()))
        loop = getattr(cycle, "loop", None)
        for buf in _buffers:
            buf.attach(loop)

    def reopen(self, cycle):
        """USR1 in a worker, called before ``cycle.reopen_files()``: pending lines go to the old files."""
        flush_all()

    def exit_process(self, cycle):
        flush_all()


def _default_log(cf, main):
    full = cf.full_path("logs/access.log")
    buf = main.buffers.get(full)
    if buf is None:
        buf = LogBuffer(full, _open(getattr(cf, "cycle", None), full))
        main.buffers[full] = buf
        _register(cf, buf)
    return AccessLog(buf, main.formats["combined"])


module = HttpLogModule()
