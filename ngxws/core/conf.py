"""nginx configuration syntax: text in, a tree of Nodes out (sans-IO).

Theory of operation
-------------------
The tokenizer is a byte-level state machine because nginx's is: nginx reads a file through a
4096-byte buffer that always begins where the current token (or the whitespace before it) began, and
a token that would not fit is an error ("too long parameter ..."). Which inputs trip that depends on
byte offsets, not characters, so the text is scanned as UTF-8 bytes and each token decoded back.

nginx parses and handles directives in one pass, so the first problem in file order is the one it
reports. A tree has to be complete before it can be handled, so `read()` never raises: it returns
the nodes read before the first syntax error and stores that error in the `Block` (children list)
of every block still open at that point. The dispatcher handles a Block's nodes, then raises its
`error`; an unknown directive above a stray "}" is therefore reported first, as nginx does.
`parse()` is the eager form: it raises at once.

Text from nginx's -g option is read the same way when `file` is COMMAND_LINE: it has no line
numbers, no blocks and no buffer, and its errors end in "in command line".
"""

import re
from dataclasses import dataclass

__all__ = ["COMMAND_LINE", "ConfigError", "Node", "Block", "decode", "read", "parse"]

COMMAND_LINE = "command line"

#: nginx's NGX_CONF_BUFFER (see the theory of operation).
BUFFER = 4096


class ConfigError(Exception):
    """A configuration problem, worded as nginx words it.

    `file` None means "add the location of the directive being handled" (the dispatcher does);
    "" means "no location", for the few messages nginx prints bare.
    """

    def __init__(self, msg: str, file: str | None = None, line: int | None = None):
        super().__init__(msg)
        self.msg = msg
        self.file = file
        self.line = line

    def __reduce__(self):  # Exception's own would keep only msg
        return type(self), (self.msg, self.file, self.line)

    def __str__(self) -> str:
        if not self.file:
            return self.msg
        if not self.line:
            return f"{self.msg} in {self.file}"
        return f"{self.msg} in {self.file}:{self.line}"


@dataclass(slots=True)
class Node:
    name: str
    args: list[str]  # unquoted, escapes resolved
    file: str  # absolute path of the file it came from, or COMMAND_LINE
    line: int  # where its ";" or "{" is, the line nginx reports; 0 on the command line
    children: "list[Node] | None"  # None: ended by ";"  ·  list: a { block }


class Block(list):
    """A list of Nodes that may end early: `error` is the syntax error that ended it."""

    error: ConfigError | None = None


def decode(data: bytes, file: str) -> str:
    """UTF-8 text of a config file; nginx takes any bytes, but our names and args are str."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"invalid UTF-8 byte 0x{data[err.start]:02x}", file, line) from None


def parse(text: str, file: str) -> list[Node]:
    nodes = read(text, file)
    if nodes.error is not None:
        raise nodes.error
    return nodes


def read(text: str, file: str) -> Block:
    param = file == COMMAND_LINE

    def error(msg, line):
        return ConfigError(msg, file, None if param else line)

    top = Block()
    open_blocks = [top]
    words: list[str] = []
    try:
        for kind, word, line in _tokens(text.encode("utf-8", "surrogatepass"), error, param):
            if kind == "word":
                words.append(word)
            elif kind == "eof":
                if words or word:
                    if param:
                        raise error('unexpected end of parameter, expecting ";"', line)
                    raise error('unexpected end of file, expecting ";" or "}"', line)
                if len(open_blocks) > 1:
                    raise error('unexpected end of file, expecting "}"', line)
            elif kind == "}":
                if words or len(open_blocks) == 1:
                    raise error('unexpected "}"', line)
                open_blocks.pop()
            elif not words:
                raise error(f'unexpected "{kind}"', line)
            elif kind == "{" and param:
                raise error("block directives are not supported in -g option", line)
            else:
                children = Block() if kind == "{" else None
                open_blocks[-1].append(Node(words[0], words[1:], file, 0 if param else line, children))
                if children is not None:
                    open_blocks.append(children)
                words = []
    except ConfigError as err:
        for block in open_blocks:
            block.error = err
    return top


# Tokenizer states.
_BETWEEN, _WORD, _DQUOTED, _SQUOTED, _AFTER_QUOTE, _COMMENT = range(6)
_SPACE = frozenset(b" \t\r\n")
_QUOTE = {_DQUOTED: ord('"'), _SQUOTED: ord("'")}
_LF, _BACKSLASH, _DOLLAR, _LBRACE, _RPAREN = b"\n\\${)"
_ESCAPE = re.compile(rb"""\\(["'\\tnr])""")
_ESCAPED = {ord('"'): b'"', ord("'"): b"'", ord("\\"): b"\\", ord("t"): b"\t", ord("n"): b"\n", ord("r"): b"\r"}


def _word(raw: bytes) -> str:
    # Other backslash pairs stay as written: regexes in the config need them.
    if b"\\" in raw:
        raw = _ESCAPE.sub(lambda m: _ESCAPED[m[1][0]], raw)
    return raw.decode("utf-8", "surrogatepass")


def _char_at(data: bytes, i: int) -> str:
    return data[i : i + 4].decode("utf-8", "replace")[0]


def _tokens(data: bytes, error, param: bool):
    """Yields ("word", text, line), (";" | "{" | "}", None, line), then ("eof", mid_token, line)."""
    line = 1
    state = _BETWEEN
    escaped = dollar = False
    anchor = anchor_line = 0  # where nginx's buffer would begin

    for i, c in enumerate(data):
        if i - anchor == BUFFER and not param:
            if state in _QUOTE:
                quote = chr(_QUOTE[state])
                raise error(f'too long parameter, probably missing terminating "{quote}" character', anchor_line)
            start = data[anchor : anchor + 10].decode("utf-8", "replace")
            raise error(f'too long parameter "{start}..." started', anchor_line)
        if c == _LF:
            line += 1
        if state == _COMMENT:
            if c != _LF:
                continue
            state = _BETWEEN
        if escaped:
            escaped = False
            continue

        if state == _AFTER_QUOTE:
            if c in _SPACE:
                state = _BETWEEN
                continue
            if c in b";{":
                yield chr(c), None, line
                state, anchor = _BETWEEN, i + 1
                continue
            if c != _RPAREN:  # `if ($a = "b")`: a ")" may follow a quoted word, and starts a new one
                raise error(f'unexpected "{_char_at(data, i)}"', line)
            state = _BETWEEN

        if state == _BETWEEN:
            anchor, anchor_line = i, line
            if c in _SPACE:
                continue
            if c in b";{}":
                yield chr(c), None, line
                anchor = i + 1
            elif c == ord("#"):
                state = _COMMENT
            elif c == ord('"'):
                state, anchor = _DQUOTED, i + 1
            elif c == ord("'"):
                state, anchor = _SQUOTED, i + 1
            else:
                state = _WORD
                escaped = c == _BACKSLASH
                dollar = c == _DOLLAR
            continue

        # Inside a word or a quoted string.
        if c == _LBRACE and dollar:  # ${var} is one word
            continue
        dollar = c == _DOLLAR
        if c == _BACKSLASH:
            escaped = True
        elif state == _WORD:
            if c in _SPACE or c in b";{":
                yield "word", _word(data[anchor:i]), line
                state = _BETWEEN
                if c in b";{":
                    yield chr(c), None, line
                    anchor = i + 1
        elif c == _QUOTE[state]:
            yield "word", _word(data[anchor:i]), line
            state = _AFTER_QUOTE

    yield "eof", state not in (_BETWEEN, _COMMENT), line
