"""Directive tables, the dispatcher that applies them, and the common slot setters.

Theory of operation
-------------------
Each module declares a tuple of `Directive`s, as nginx declares its `ngx_command_t[]`. `Parser`
builds one name -> [(module, Directive)] dict from them and `handle()` walks a node list the way
ngx_conf_handler does: the first entry whose context matches wins (two modules may share a name in
different contexts), then block-or-";", then arity, then the setter. Setters only convert values
and raise `ConfigError("message")`; the dispatcher adds "in FILE:LINE" of the node.

`handle()` raises a list's deferred syntax error (see conf.py) after handling the nodes read before
it, so the first problem in file order is reported, as nginx does in its single pass.
"""

import dataclasses
import enum
import glob
import os
import re
import sys
from typing import Any, Callable

from .conf import COMMAND_LINE, Block, ConfigError, Node, decode, read

__all__ = [
    "ConfigError", "UNSET", "Ctx", "Args", "Slot", "Directive", "ConfSet", "Parser",
    "set_flag", "set_num", "set_size", "set_msec", "set_sec", "set_str", "set_enum", "set_path",
    "parse_size", "parse_msec", "parse_sec", "merge", "MAX_DEPTH",
]  # fmt: skip


class _Unset:
    __slots__ = ()

    def __repr__(self):
        return "UNSET"

    def __reduce__(self):  # copy and pickle keep the singleton
        return "UNSET"


#: A conf field nobody has set yet (nginx's NGX_CONF_UNSET); `merge()` replaces it.
UNSET = _Unset()


class Ctx(enum.Flag):
    MAIN = 1  #: top level of the main file
    EVENTS = 2  #: inside events { }
    HTTP = 4  #: inside http { }
    SRV = 8  #: inside server { }
    LOC = 16  #: inside location { }
    ANY = 31  #: anywhere


class Args(enum.Flag):
    NOARGS = 1
    TAKE1 = 2
    TAKE2 = 4
    TAKE3 = 8
    TAKE4 = 16
    TAKE5 = 32
    TAKE6 = 64
    TAKE7 = 128
    BLOCK = 256  #: needs a { block } instead of ";"
    FLAG = 512  #: exactly one argument, "on" or "off"
    ANY = 1024  #: any number of arguments
    ONEMORE = 2048
    TWOMORE = 4096
    TAKE12 = TAKE1 | TAKE2
    TAKE13 = TAKE1 | TAKE3
    TAKE23 = TAKE2 | TAKE3
    TAKE123 = TAKE1 | TAKE2 | TAKE3
    TAKE1234 = TAKE1 | TAKE2 | TAKE3 | TAKE4


# Indexed by the number of arguments.
_TAKE = (Args.NOARGS, Args.TAKE1, Args.TAKE2, Args.TAKE3, Args.TAKE4, Args.TAKE5, Args.TAKE6, Args.TAKE7)


class Slot(enum.Enum):
    MAIN = "main"  #: the module's conf for the whole context (main, events, or one http block)
    SRV = "srv"  #: the module's conf for the enclosing server
    LOC = "loc"  #: the module's conf for the enclosing location


@dataclasses.dataclass(frozen=True)
class Directive:
    name: str
    ctx: Ctx
    args: Args
    setter: "Callable[[Parser, Node, Any], None]"
    slot: Slot = Slot.MAIN


def _module_name(module) -> str:
    return module if isinstance(module, str) else module.name


class ConfSet:
    """The confs that a context's directives write to, by (module name, Slot)."""

    __slots__ = ("_confs",)

    def __init__(self, confs: dict | None = None):
        self._confs = dict(confs or {})

    def get(self, module, slot: Slot = Slot.MAIN):
        return self._confs.get((_module_name(module), slot))

    def set(self, module, slot: Slot, conf) -> None:
        self._confs[(_module_name(module), slot)] = conf

    def derive(self, *slots: Slot) -> "ConfSet":
        """A ConfSet for a child block that shares this one's confs of `slots` (the same objects)."""
        return ConfSet({key: conf for key, conf in self._confs.items() if key[1] in slots})

    def items(self):
        return self._confs.items()

    def __repr__(self):
        return f"ConfSet({self._confs!r})"


class Parser:
    """One per Cycle.build; the `cf` that setters receive."""

    def __init__(self, modules, prefix: str, conf_file: str, cycle: Any = None):
        # Node.file is absolute, so the prefix is too; like nginx's, it ends in "/".
        self.prefix = os.path.join(os.path.abspath(prefix), "")
        # The CLI has already resolved -c against the prefix, as nginx does.
        self.conf_file = os.path.abspath(conf_file)
        self.conf_prefix = os.path.join(os.path.dirname(self.conf_file), "")
        self.cycle = cycle
        self.modules = tuple(modules)
        self.ctx = Ctx.MAIN
        self.confs = ConfSet()
        self._depth = 0
        #: every file read, in order (``ngxws -T`` dumps them)
        self.files_read: list[str] = []
        #: where warnings go (an ErrorLog); None: stderr, as ``ngxws: [warn] ...``
        self.log = None
        self._directives: dict[str, list] = {}
        entries = [(None, d) for d in _BUILTIN] + [(m, d) for m in self.modules for d in m.DIRECTIVES]
        for module, directive in entries:
            self._directives.setdefault(directive.name, []).append((module, directive))

    def add_module(self, module) -> None:
        """A module loaded while parsing (``load_module``): its directives count from here on."""
        self.modules += (module,)
        for directive in module.DIRECTIVES:
            self._directives.setdefault(directive.name, []).append((module, directive))

    def warn(self, node: Node, msg: str) -> None:
        """nginx's ngx_conf_log_error(NGX_LOG_WARN, ...): said at once, and the config goes on."""
        text = str(ConfigError(msg, node.file, node.line))
        if self.log is not None:
            self.log.warn("%s", text)
        else:
            sys.stderr.write(f"ngxws: [warn] {text}\n")

    def full_path(self, path: str) -> str:
        return path if path.startswith("/") else self.prefix + path

    def parse_file(self, path: str) -> Block:
        """The nodes of one file; a syntax error is kept in the Block for `handle()` to raise."""
        path = os.path.abspath(path)
        try:
            with open(path, "rb") as f:
                # As much as fstat() promised, like nginx: /dev/zero or a FIFO reads as empty.
                data = f.read(os.fstat(f.fileno()).st_size)
        except IsADirectoryError as err:  # nginx's open() succeeds; its read fails, and says so bare
            raise ConfigError(f'pread() "{path}" failed ({err.errno}: {err.strerror})', "") from None
        except OSError as err:
            raise ConfigError(f'open() "{path}" failed ({err.errno}: {err.strerror})') from None
        except ValueError:  # a NUL or an unencodable character in the name
            raise ConfigError(f'open() "{path}" failed (22: Invalid argument)') from None
        self.files_read.append(path)
        return read(decode(data, path), path)

    def parse_text(self, text: str, file: str = COMMAND_LINE) -> Block:
        """Like parse_file for text in hand; COMMAND_LINE reads -g text ("... in command line")."""
        return read(text, file)

    def handle(self, nodes: list[Node], ctx: Ctx, confs: ConfSet) -> None:
        outer = self.ctx, self.confs
        self.ctx, self.confs = ctx, confs
        self._depth += 1
        try:
            for node in nodes:
                self._handle(node)
        finally:
            self.ctx, self.confs = outer
            self._depth -= 1
        error = getattr(nodes, "error", None)
        if error is not None:
            raise error

    def _handle(self, node: Node) -> None:
        def error(msg):
            return ConfigError(msg, node.file, node.line)

        entries = self._directives.get(node.name)
        if not entries:
            raise error(f'unknown directive "{node.name}"')
        for module, directive in entries:
            if directive.ctx & self.ctx:
                break
        else:
            raise error(f'"{node.name}" directive is not allowed here')

        if Args.BLOCK in directive.args:
            if node.children is None:
                raise error(f'directive "{node.name}" has no opening "{{"')
        elif node.children is not None:
            raise error(f'directive "{node.name}" is not terminated by ";"')
        if not _arity_ok(directive.args, len(node.args)):
            raise error(f'invalid number of arguments in "{node.name}" directive')

        # Each level costs a few Python frames; a file that includes itself must not cost a traceback.
        if self._depth >= MAX_DEPTH and (node.children is not None or directive is _INCLUDE):
            raise error(f'"{node.name}" directive is nested too deep (more than {MAX_DEPTH} levels)')
        conf = None if module is None else self.confs.get(module, directive.slot)
        try:
            directive.setter(self, node, conf)
        except ConfigError as err:
            if err.file is None:
                err.file, err.line = node.file, node.line
            raise


def _arity_ok(spec: Args, n: int) -> bool:
    if Args.ANY in spec:
        return True
    if Args.FLAG in spec:
        return n == 1
    if Args.ONEMORE in spec:
        return n >= 1
    if Args.TWOMORE in spec:
        return n >= 2
    return n < len(_TAKE) and bool(spec & _TAKE[n])


def _include(cf: Parser, node: Node, conf) -> None:
    # Relative to the main config's folder, whichever file the include is in.
    pattern = node.args[0] if node.args[0].startswith("/") else cf.conf_prefix + node.args[0]
    if any(c in pattern for c in "*?["):
        try:
            paths = sorted(glob.glob(pattern))  # no match is fine, as in nginx
        except ValueError:
            paths = []
    else:
        paths = [pattern]
    for path in paths:
        cf.handle(cf.parse_file(path), cf.ctx, cf.confs)


_INCLUDE = Directive("include", Ctx.ANY, Args.TAKE1, _include)
_BUILTIN = (_INCLUDE,)

#: Blocks and includes nested deeper than this are an error (nginx has no limit but the C stack).
MAX_DEPTH = 100


# Values: nginx's limits are those of a signed 64-bit integer.
_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")


def _atoi(s: str) -> int:
    if not _DIGITS.fullmatch(s) or int(s) > _MAX:
        raise ValueError(s)
    return int(s)


_SIZE_UNITS = {"k": 1024, "K": 1024, "m": 1024**2, "M": 1024**2, "g": 1024**3, "G": 1024**3}


def parse_size(s: str) -> int:
    """Bytes from "512", "64k", "1m", "2g"."""
    scale = _SIZE_UNITS.get(s[-1:], 1)
    n = _atoi(s[:-1] if scale > 1 else s) * scale
    if n > _MAX:
        raise ValueError(s)
    return n


# Seconds per unit, in the order a time must give them; spaces may follow a unit.
_TIME_UNITS = {"y": 365 * 86400, "M": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_RANK = {unit: rank for rank, unit in enumerate([*_TIME_UNITS, "ms"])}
_TIME_ITEM = re.compile(r"([0-9]*)(ms|[yMwdhms]) *")


def _parse_time(s: str, msec: bool) -> int:
    rank = _RANK["M"] if msec else -1  # nginx has no months or years in milliseconds
    total = pos = 0
    digits = False
    while m := _TIME_ITEM.match(s, pos):
        number, unit = m.groups()
        if _RANK[unit] <= rank or (unit == "ms" and not msec):
            raise ValueError(s)
        rank, pos = _RANK[unit], m.end()
        digits = digits or bool(number)
        scale = 1 if unit == "ms" else _TIME_UNITS[unit] * (1000 if msec else 1)
        total += _atoi(number or "0") * scale
        if total > _MAX:
            raise ValueError(s)
    rest = s[pos:]
    if rest:  # a bare number counts seconds
        total += _atoi(rest) * (1000 if msec else 1)
    if not (digits or rest) or total > _MAX:
        raise ValueError(s)
    return total


def parse_msec(s: str) -> int:
    """Milliseconds from "500ms", "30s", "1h30m", "75" (seconds)."""
    return _parse_time(s, msec=True)


def parse_sec(s: str) -> int:
    """Seconds from "30s", "5m", "1y", "75"."""
    return _parse_time(s, msec=False)


def _slot_setter(convert):
    """A setter factory: one value, converted once; a second use of the directive is an error."""

    def factory(field: str, *extra):
        def setter(cf: Parser, node: Node, conf) -> None:
            if getattr(conf, field) is not UNSET:
                raise ConfigError(f'"{node.name}" directive is duplicate')
            setattr(conf, field, convert(cf, node, *extra))

        setter.field = field
        return setter

    return factory


def _value(parse, what):
    def convert(cf, node):
        try:
            return parse(node.args[0])
        except ValueError:
            raise ConfigError(f'"{node.name}" directive invalid {what}') from None

    return convert


def _flag(cf, node):
    value = node.args[0]
    if value.lower() == "on" and value.isascii():
        return True
    if value.lower() == "off" and value.isascii():
        return False
    raise ConfigError(f'invalid value "{value}" in "{node.name}" directive, it must be "on" or "off"')


def _enum(cf, node, choices):
    value = node.args[0]
    for word, result in choices.items():
        if value.isascii() and value.lower() == word.lower():
            return result
    raise ConfigError(f'invalid value "{value}"')


set_flag = _slot_setter(_flag)
set_num = _slot_setter(_value(_atoi, "number"))
set_size = _slot_setter(_value(parse_size, "value"))
set_msec = _slot_setter(_value(parse_msec, "value"))
set_sec = _slot_setter(_value(parse_sec, "value"))
set_str = _slot_setter(lambda cf, node: node.args[0])
set_path = _slot_setter(lambda cf, node: cf.full_path(node.args[0]))
set_enum = _slot_setter(_enum)
set_enum.__doc__ = 'set_enum(field, {"word": value}): words match case-insensitively, as in nginx.'


def merge(child, parent, **defaults):
    """Fills each UNSET field of `child` from `parent`, else from `defaults` (ngx_conf_merge_*_value).

    Works on any dataclass; `parent` may be None. Returns `child`.
    """
    names = {f.name for f in dataclasses.fields(child)}
    unknown = defaults.keys() - names
    if unknown:
        raise TypeError(f"merge() got defaults for unknown fields {sorted(unknown)}")
    for name in names:
        if getattr(child, name) is UNSET:
            inherited = UNSET if parent is None else getattr(parent, name, UNSET)
            setattr(child, name, defaults.get(name, UNSET) if inherited is UNSET else inherited)
    return child
