"""The server side of the WebSocket opening handshake (RFC 6455 section 4.2), sans-IO.

Theory of operation
-------------------
The HTTP module has already parsed the request head; this module only judges it. `check()` takes
the method, the HTTP version and the header list and either returns the client's key or raises
`ProtocolError` carrying the status to answer with (400 for a missing or malformed piece, 426
with `Sec-WebSocket-Version: 13` for another protocol version, 403 for a refused Origin). No 101
is ever produced for a request that failed a check.

permessage-deflate (RFC 7692) is negotiated here too, because its answer is part of the 101. The
server picks the first acceptable offer and always asks for `server_no_context_takeover` and
`client_no_context_takeover` (both allowed to a server even when not offered, 7.1.1.1 and
7.1.1.2): then neither zlib object outlives a message, so an idle connection holds no zlib state
at all, which is what keeps thousands of browser clients affordable. A client demanding
`server_max_window_bits=8` is accepted, and the server simply never compresses towards it: zlib
cannot deflate raw streams with a 256-byte window, and RSV1 is per message, so sending every
message uncompressed is always allowed (RFC 7692 section 6).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ProtocolError(Exception):
    """A handshake that must not succeed; `status_hint` is the HTTP status to answer with."""

    def __init__(self, msg: str, status_hint: int = 400, headers: tuple = ()) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status_hint = status_hint
        self.headers = headers      # extra response headers, (bytes name, bytes value)


def _tokens(values: list[bytes]) -> list[bytes]:
    out = []
    for value in values:
        for part in value.split(b","):
            part = part.strip(b" \t").lower()
            if part:
                out.append(part)
    return out


def _values(headers, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n == name]


def accept_value(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept value for a client's key."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def check(method: bytes, http_version: bytes, headers) -> bytes:
    """Judge an upgrade request; returns the Sec-WebSocket-Key or raises ProtocolError."""
    if method != b"GET":
        raise ProtocolError("websocket handshake with method other than GET")
    try:
        major, minor = (int(x) for x in http_version.split(b".", 1))
    except ValueError:
        raise ProtocolError("websocket handshake with a bad HTTP version") from None
    if (major, minor) < (1, 1):
        raise ProtocolError("websocket handshake over HTTP/1.0")
    if b"websocket" not in _tokens(_values(headers, b"upgrade")):
        raise ProtocolError('websocket handshake without "Upgrade: websocket"')
    if b"upgrade" not in _tokens(_values(headers, b"connection")):
        raise ProtocolError('websocket handshake without "Connection: upgrade"')
    versions = _values(headers, b"sec-websocket-version")
    if not versions:
        raise ProtocolError("websocket handshake without Sec-WebSocket-Version",
                            400, ((b"Sec-WebSocket-Version", b"13"),))
    if len(versions) != 1 or versions[0].strip() != b"13":
        raise ProtocolError("websocket handshake with unsupported Sec-WebSocket-Version",
                            426, ((b"Sec-WebSocket-Version", b"13"),))
    keys = _values(headers, b"sec-websocket-key")
    if len(keys) != 1:
        raise ProtocolError("websocket handshake without one Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise ProtocolError("websocket handshake with an invalid Sec-WebSocket-Key")
    return key


def check_origin(headers, allow) -> None:
    """`allow`: None (anything), or a tuple of exact origins and compiled regexes.

    A request without Origin is not from a browser (browsers always send it) and passes: the
    check exists against cross-site pages, which cannot suppress the header.
    """
    if allow is None:
        return
    origins = _values(headers, b"origin")
    if not origins:
        return
    if len(origins) == 1:
        origin = origins[0].decode("latin-1").strip()
        for rule in allow:
            if isinstance(rule, str):
                if rule == origin or rule == "*":
                    return
            elif rule.search(origin):
                return
    raise ProtocolError("websocket handshake from a refused origin", 403)


def select_subprotocol(headers, supported: tuple) -> bytes | None:
    """The first of the client's offered subprotocols (in its order) that we support."""
    if not supported:
        return None
    for token in _tokens(_values(headers, b"sec-websocket-protocol")):
        for ours in supported:
            if token == ours.lower():
                return ours
    return None


# --- permessage-deflate -------------------------------------------------------------------

_PARAM = re.compile(rb'\s*([A-Za-z0-9_!#$%&\'*+.^`|~-]+)\s*(?:=\s*("?)([0-9]+)\2\s*)?$')


class Deflate(PerMessageDeflate):
    """wsproto's PerMessageDeflate, with bounded inflation and optional outbound compression.

    Inflation is bounded by the message limit as the bytes arrive: each read inflates to at
    most what the message may still hold plus one byte, so a small compressed frame cannot
    balloon past the limit before the size check sees it (a zip bomb answered with 1009).
    The frame headers are judged by a `MessageLimit` of its own (one extension per session).
    """

    def __init__(self, compress: bool, server_bits: int, client_bits: int,
                 max_size: int, max_frame_size: int = 0) -> None:
        super().__init__(client_no_context_takeover=True, client_max_window_bits=client_bits,
                         server_no_context_takeover=True,
                         server_max_window_bits=max(server_bits, 9))
        self.compress_out = compress
        self.max_size = max_size
        self.limit = MessageLimit(max_size, max_frame_size)
        #: bytes the compressed message in progress has inflated to so far
        self.inflated = 0
        self.finalize("permessage-deflate")

    def frame_inbound_header(self, proto, opcode, rsv, payload_length):
        result = super().frame_inbound_header(proto, opcode, rsv, payload_length)
        if type(result) is CloseReason:
            return result
        verdict = self.limit.frame_inbound_header(proto, opcode, rsv, payload_length)
        if type(verdict) is CloseReason:
            return verdict
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self.inflated = 0
        return result

    def frame_inbound_payload_data(self, proto, data):
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        left = self.max_size - self.inflated
        try:
            out = self._decompressor.decompress(data, left + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > left or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        self.inflated += len(out)
        return out

    def frame_inbound_complete(self, proto, fin):
        limit = self.limit
        if limit.control:
            # A PING between the fragments of a compressed message: the message goes on.
            # PerMessageDeflate would end its inflation here and pass the rest uncompressed.
            return None
        limit.frame_inbound_complete(proto, fin)
        out = super().frame_inbound_complete(proto, fin)
        if out and type(out) is not CloseReason:
            # the end of a compressed message: what zlib still held when its input ran out
            self.inflated += len(out)
            if self.inflated > self.max_size:
                return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_outbound(self, proto, opcode, rsv, data, fin):
        if not self.compress_out:
            return rsv, data
        if opcode is Opcode.CONTINUATION or opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if self._compressor is None:
                # memLevel follows the window: the default 8 allocates ~256 KB per message.
                bits = self.server_max_window_bits
                self._compressor = zlib.compressobj(6, zlib.DEFLATED, -bits, max(bits - 7, 1))
            return super().frame_outbound(proto, opcode, rsv, data, fin)
        return rsv, data


class MessageLimit(Extension):
    """Not an extension on the wire: websocket_max_message_size and websocket_max_frame_size
    applied to each data frame's header, where wsproto has its announced length and has read
    none of its payload.

    A data frame is refused with 1009 when its length is over websocket_max_frame_size, or
    when it would take its message (the lengths of the message's earlier frames plus its own)
    over websocket_max_message_size: a header announcing 2^63-1 bytes costs the server its
    14 bytes, not a megabyte. For an uncompressed message the wire bytes are the message's
    bytes, so the check is exact. A compressed one (RSV1) may inflate to anything, and its
    wire bytes only bound it from below: it is refused at a header only once its compressed
    bytes are past `deflate_bound(limit)`, which no deflate encoder reaches for a message
    within the limit; what it inflates to is bounded as it arrives (`Deflate`).
    """

    __slots__ = ("max_message_size", "max_frame_size", "received", "bound", "control")
    name = "ngxws-message-limit"

    def __init__(self, max_message_size: int, max_frame_size: int = 0) -> None:
        self.max_message_size = max_message_size
        #: 0: no frame limit of its own
        self.max_frame_size = max_frame_size
        #: payload bytes announced by the message in progress, its current frame included
        self.received = 0
        #: what those may reach: the limit, or deflate_bound(limit) for a compressed message
        self.bound = max_message_size
        #: the current frame is a control frame (PING, PONG, CLOSE: never part of a message)
        self.control = False

    def enabled(self) -> bool:
        return True

    def offer(self):
        return False

    def frame_inbound_header(self, proto, opcode, rsv, payload_length):
        if opcode.iscontrol():
            # wsproto refuses over 125 bytes with 1002 before any extension is asked
            self.control = True
            return _NO_RSV
        self.control = False
        if self.max_frame_size and payload_length > self.max_frame_size:
            return CloseReason.MESSAGE_TOO_BIG
        if opcode is Opcode.CONTINUATION:
            received = self.received + payload_length
        else:
            received = payload_length
            self.bound = deflate_bound(self.max_message_size) if rsv.rsv1 else \
                self.max_message_size
        if received > self.bound:
            return CloseReason.MESSAGE_TOO_BIG
        self.received = received
        return _NO_RSV

    def frame_inbound_complete(self, proto, fin):
        if fin and not self.control:
            self.received = 0
        return None


_NO_RSV = RsvBits(False, False, False)


def deflate_bound(size: int) -> int:
    """More compressed bytes than any deflate encoder makes of `size` bytes: stored blocks add
    5 bytes per 64 KiB, fixed Huffman codes at most 9 bits per byte (an eighth)."""
    return size + (size >> 3) + 64


def _parse_offer(offer: bytes):
    """One offer -> (name, {param: value or None}) or None when malformed (RFC 7692 7.1)."""
    parts = offer.split(b";")
    name = parts[0].strip().lower()
    params: dict = {}
    for raw in parts[1:]:
        m = _PARAM.match(raw)
        if m is None:
            return name, None
        pname = m.group(1).lower()
        if pname in params:
            return name, None
        params[pname] = int(m.group(3)) if m.group(3) is not None else None
    return name, params


def negotiate_deflate(headers, max_size: int, server_bits: int = 15, max_frame_size: int = 0):
    """First acceptable permessage-deflate offer -> (Deflate, response value) or (None, None)."""
    offers = []
    for value in _values(headers, b"sec-websocket-extensions"):
        offers.extend(o for o in value.split(b",") if o.strip())
    for offer in offers:
        name, params = _parse_offer(offer)
        if name != b"permessage-deflate" or params is None:
            continue
        ok = True
        answer = [b"permessage-deflate", b"server_no_context_takeover",
                  b"client_no_context_takeover"]
        compress = True
        bits = server_bits
        client_bits = 15
        for pname, pval in params.items():
            if pname in (b"server_no_context_takeover", b"client_no_context_takeover"):
                ok = pval is None
            elif pname == b"server_max_window_bits":
                ok = pval is not None and 8 <= pval <= 15
                if ok:
                    bits = min(bits, pval)
                    answer.append(b"server_max_window_bits=%d" % bits)
                    compress = bits >= 9
            elif pname == b"client_max_window_bits":
                ok = pval is None or 8 <= pval <= 15
                if ok and pval is not None:
                    # The client will compress with at most this window; inflate with the
                    # larger of it and 9 (a 256-byte window is stored as 512 by zlib).
                    client_bits = max(pval, 9)
                    answer.append(b"client_max_window_bits=%d" % pval)
            else:
                ok = False
            if not ok:
                break
        if ok:
            return (Deflate(compress, bits, client_bits, max_size, max_frame_size),
                    b"; ".join(answer))
    return None, None


def response_101(key: bytes, subprotocol: bytes | None = None, extensions: bytes | None = None,
                 extra: tuple = ()) -> bytes:
    """The 101 Switching Protocols response head."""
    out = [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Accept: ", accept_value(key), b"\r\n"]
    if subprotocol is not None:
        out += (b"Sec-WebSocket-Protocol: ", subprotocol, b"\r\n")
    if extensions is not None:
        out += (b"Sec-WebSocket-Extensions: ", extensions, b"\r\n")
    for name, value in extra:
        out += (name, b": ", value, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)
