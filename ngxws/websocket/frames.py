"""Plain frames by hand, in front of wsproto: server framing and a fast decoder for client data.

Theory of operation
-------------------
wsproto is the frame engine and the referee of RFC 6455: every frame this module does not
understand completely goes to wsproto unchanged, and wsproto decides. This module only takes
the cases that make up nearly all traffic, at a tenth of wsproto's cost per frame:

- Out: a server frame is unmasked, FIN set, RSV clear: a 2-, 4- or 10-byte header and the
  payload (`frame_text`, `frame_binary`, `frame_ping`, `frame_close`). Byte-equal to what
  wsproto sends for a connection without extensions; with permessage-deflate negotiated the
  session keeps using wsproto.
- In: `decode` reads a prefix of the received bytes made only of complete client frames that
  are masked, FIN=1, RSV=0, text or binary with a 7- or 16-bit length (or PONG, which only
  counts as activity), unmasks them with one int XOR and checks text with the strict UTF-8
  decoder (what RFC 6455 8.1 asks for). It stops at the first thing it does not handle: any
  other control frame, a fragment, a 64-bit length, a non-minimal length, bad UTF-8, an
  unmasked frame, a frame over the limit, a frame cut by the read. The caller hands the rest
  to wsproto.

Once bytes went to wsproto, the next bytes must go there too until wsproto holds no partial
frame and no fragmented message, or the two decoders would disagree on where a frame starts.
`follow` tracks that from the bytes themselves (header walks only, no payload work): its
state is None exactly when everything handed over so far ends on a frame boundary outside a
fragmented message. wsproto parses lazily, so None also needs its events drained; the session
knows when they are (it drains them unless reading is paused).
"""

from __future__ import annotations

_TEXT = tuple(bytes((0x81, n)) for n in range(126))
_BINARY = tuple(bytes((0x82, n)) for n in range(126))


def _frame(b0: int, heads: tuple, payload) -> bytes:
    n = len(payload)
    if n < 126:
        return heads[n] + payload
    if n < 65536:
        return bytes((b0, 126, n >> 8, n & 255)) + payload
    return bytes((b0, 127)) + n.to_bytes(8, "big") + payload


def frame_text(payload) -> bytes:
    """A whole text message, `payload` already UTF-8 (bytes-like)."""
    return _frame(0x81, _TEXT, payload)


def frame_binary(payload) -> bytes:
    return _frame(0x82, _BINARY, payload)


def frame_ping(payload=b"") -> bytes:
    """A PING; payloads over 125 bytes are refused, as control frames cannot carry them."""
    n = len(payload)
    if n > 125:
        raise ValueError("a ping payload is at most 125 bytes")
    return bytes((0x89, n)) + payload


def frame_close(code: int | None = None, reason: str = "") -> bytes:
    """A CLOSE with wsproto's rules: 1005 (or None) sends no code, the codes that never go on
    the wire (1006, 1015) become 1000, the reason is cut to 123 bytes at a character boundary."""
    if code is None or code == 1005:
        if reason:
            raise TypeError("a close reason needs a code")
        return b"\x88\x00"
    if code == 1006 or code == 1015:
        code = 1000
    payload = code.to_bytes(2, "big")
    if reason:
        data = reason.encode("utf-8")
        if len(data) > 123:
            data = data[:123].decode("utf-8", "ignore").encode("utf-8")
        payload += data
    return bytes((0x88, len(payload))) + payload


def decode(data, limit: int = 65535):
    """Decode the plain frames at the start of `data` (bytes or bytearray).

    Returns ``(messages, pongs, end)``: the whole messages in order (str for text, bytes for
    binary), the number of PONG frames among them, and how many bytes they took; ``data[end:]``
    is for wsproto. Frames with a payload over `limit` are left to wsproto.
    """
    messages = []
    pongs = 0
    n = len(data)
    pos = 0
    while n - pos >= 6:
        b0 = data[pos]
        b1 = data[pos + 1]
        if b1 < 0x80:
            break                       # unmasked: wsproto fails the connection
        length = b1 & 0x7F
        if b0 == 0x81 or b0 == 0x82:
            if length < 126:
                start = pos + 6
            elif length == 126:
                if n - pos < 8:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                if length < 126:
                    break               # non-minimal length: wsproto's verdict
                start = pos + 8
            else:
                break
            if length > limit:
                break
        elif b0 == 0x8A and length < 126:
            end = pos + 6 + length
            if end > n:
                break
            pongs += 1
            pos = end
            continue
        else:
            break
        end = start + length
        if end > n:
            break
        if length:
            key = data[start - 4:start]
            payload = (int.from_bytes(data[start:end], "little")
                       ^ int.from_bytes((key * ((length >> 2) + 1))[:length], "little")
                       ).to_bytes(length, "little")
        else:
            payload = b""
        if b0 == 0x81:
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError:
                break                   # wsproto closes with 1007
        messages.append(payload)
        pos = end
    return messages, pongs, pos


def skip(data, count: int) -> int:
    """Where the `count`-th message frame that `decode` read from `data` ends (PONGs are walked
    over, not counted): the caller took only the first `count` messages."""
    pos = 0
    while True:
        b0 = data[pos]
        length = data[pos + 1] & 0x7F
        head = 6
        if length == 126:
            length = (data[pos + 2] << 8) | data[pos + 3]
            head = 8
        pos += head + length
        if b0 != 0x8A:
            count -= 1
            if count == 0:
                return pos


def follow(data, held):
    """Frame boundaries of the bytes handed to wsproto, one read after the other.

    `held` is None (everything before `data` ended on a frame boundary outside a fragmented
    message) or what the previous call returned; the result is the same for everything up to
    the end of `data`. A header walk only: wsproto checks what the frames contain.
    """
    if held is None:
        remaining = 0
        fragmented = False
    else:
        remaining, fragmented, tail = held
        if tail:
            data = tail + data
    n = len(data)
    if remaining > n:
        return (remaining - n, fragmented, b"")
    pos = remaining
    while True:
        if n - pos < 2:
            break
        b0 = data[pos]
        b1 = data[pos + 1]
        length = b1 & 0x7F
        head = 2
        if length == 126:
            head = 4
        elif length == 127:
            head = 10
        if b1 & 0x80:
            head += 4
        if n - pos < head:
            break
        if length == 126:
            length = (data[pos + 2] << 8) | data[pos + 3]
        elif length == 127:
            length = int.from_bytes(data[pos + 2:pos + 10], "big")
        if b0 & 0x0F < 8:
            # a data frame: a message is in progress until a frame with FIN ends it
            fragmented = not b0 & 0x80
        pos += head + length
        if pos >= n:
            if pos == n and not fragmented:
                return None
            return (pos - n, fragmented, b"")
    if pos == n:
        return (0, True, b"") if fragmented else None
    return (0, fragmented, bytes(data[pos:]))
