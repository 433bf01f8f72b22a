"""WebSocket-over-HTTP events (Pushpin's ``application/websocket-events``), sans-IO.

Theory of operation
-------------------
A gateway and a backend exchange WebSocket "events" in the bodies of ordinary HTTP requests and
responses. A body is a concatenation of events, each encoded much like an HTTP chunk::

    NAME HEXLEN\\r\\n BYTES \\r\\n        an event with content (TEXT, BINARY, CLOSE, ...)
    NAME\\r\\n                          an event without content (OPEN, DISCONNECT, ...)

Events that normally carry no content may still carry some (``OPEN 0\\r\\n\\r\\n`` is legal, and PING
and PONG carry the ping payload when it is not empty); the decoder keeps whatever was sent, and
distinguishes "no content" (``None``) from "empty content" (``b""``) so that a body re-encodes to
the same bytes. CLOSE content is a 2-byte big-endian close code followed by a UTF-8 reason.

An event is a plain ``(name, content)`` tuple: ``name`` is one of the interned ``str`` constants
below (so comparing with ``is`` or ``==`` is cheap and no name string is built per event), and
``content`` is ``bytes`` or ``None``.

Decoding is strict: unknown event names, malformed or oversized lengths, truncated content and a
missing CRLF after content are :class:`EventsError` with a message saying what and where, never a
crash and never a guess. Encoding appends to a caller-owned ``bytearray`` so that a batch of events
costs one buffer, not one ``bytes`` object per event.
"""

import re

__all__ = [
    "CONTENT_TYPE", "OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE", "DISCONNECT", "NAMES",
    "EventsError", "decode", "encode", "encode_into", "close_content", "parse_close",
]

CONTENT_TYPE = "application/websocket-events"
CONTENT_TYPE_BYTES = b"application/websocket-events"

OPEN = "OPEN"              #: negotiation request (gateway) or acceptance (backend)
TEXT = "TEXT"              #: a text message; content is its UTF-8 bytes
BINARY = "BINARY"          #: a binary message
PING = "PING"              #: a ping; content is its payload when not empty
PONG = "PONG"              #: a pong; content is its payload when not empty
CLOSE = "CLOSE"            #: a close; content is a 2-byte code and a UTF-8 reason, or nothing
DISCONNECT = "DISCONNECT"  #: the connection ended uncleanly, or the backend drops it

NAMES = (OPEN, TEXT, BINARY, PING, PONG, CLOSE, DISCONNECT)
_BY_BYTES = {n.encode("ascii"): n for n in NAMES}
_HEAD = {n: n.encode("ascii") for n in NAMES}
_BARE = {n: n.encode("ascii") + b"\r\n" for n in NAMES}

# 8 hex digits is 4 GiB: far beyond any body we accept, and it keeps int() away from huge strings.
# Only bare hex digits: int(x, 16) alone would also take "0x10", "+1", "1_0" and " 1".
_LINE = re.compile(rb"([A-Za-z]{1,16})(?: ([0-9A-Fa-f]{1,8}))?\r\n")
_MAX_NAME_ECHO = 20


class EventsError(ValueError):
    """A body that is not valid ``application/websocket-events``."""


def _describe(body, pos):
    line_end = body.find(b"\r\n", pos, pos + 40)
    snippet = body[pos:line_end if line_end != -1 else pos + _MAX_NAME_ECHO]
    # escaped, so that a log line never carries raw control bytes from a backend
    return snippet.decode("latin-1").encode("unicode_escape").decode("ascii").replace('"', '\\"')


def decode(body):
    """Decode a whole body into a list of ``(name, content)`` tuples.

    Raises :class:`EventsError` on anything that is not a well-formed sequence of known events.
    """
    if type(body) is not bytes:
        body = bytes(body)
    out = []
    append = out.append
    match = _LINE.match
    by_bytes = _BY_BYTES
    pos = 0
    end = len(body)
    while pos < end:
        m = match(body, pos)
        if m is None:
            raise EventsError('invalid event line "%s" at byte %d' % (_describe(body, pos), pos))
        name = by_bytes.get(m.group(1))
        if name is None:
            raise EventsError('unknown event "%s" at byte %d'
                              % (m.group(1)[:_MAX_NAME_ECHO].decode("ascii"), pos))
        size = m.group(2)
        pos = m.end()
        if size is None:
            append((name, None))
            continue
        n = int(size, 16)
        stop = pos + n
        if stop + 2 > end:
            raise EventsError("truncated %s event: %d content bytes announced, %d present"
                              % (name, n, max(0, min(n, end - pos))))
        if body[stop:stop + 2] != b"\r\n":
            raise EventsError("%s event content not followed by CRLF at byte %d" % (name, stop))
        append((name, body[pos:stop]))
        pos = stop + 2
    return out


def encode_into(out, name, content=None):
    """Append one event to the bytearray ``out``.  ``name`` must be one of :data:`NAMES`."""
    if content is None:
        out += _BARE[name]
        return
    out += _HEAD[name]
    out += b" %x\r\n" % len(content)
    out += content
    out += b"\r\n"


def encode(events):
    """Encode an iterable of ``(name, content)`` tuples into one body."""
    out = bytearray()
    for name, content in events:
        encode_into(out, name, content)
    return bytes(out)


def close_content(code=None, reason=b""):
    """The content of a CLOSE event: nothing without a code, else code (big-endian) + reason."""
    if code is None:
        return None
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return code.to_bytes(2, "big") + reason


def parse_close(content):
    """``(code, reason)`` from CLOSE content; ``(None, "")`` when it carries no code.

    A one-byte content or a reason that is not UTF-8 is an :class:`EventsError`.
    """
    if not content:
        return None, ""
    if len(content) < 2:
        raise EventsError("CLOSE event content of 1 byte, expected none or a 2-byte code")
    try:
        reason = content[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise EventsError("CLOSE event reason is not valid UTF-8") from None
    return int.from_bytes(content[:2], "big"), reason
