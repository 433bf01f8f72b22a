import base64
import random
import re
import zlib

import pytest
from hypothesis import given, strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.extensions import PerMessageDeflate

from ngxws.websocket import handshake
from ngxws.websocket.handshake import ProtocolError, check, check_origin, negotiate_deflate

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="

GOOD = [
    (b"host", b"example.com"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", KEY),
    (b"sec-websocket-version", b"13"),
]


def without(name):
    return [(n, v) for n, v in GOOD if n != name]


def replaced(name, value):
    return without(name) + [(name, value)]


def test_rfc_example_accept_value():
    # RFC 6455 section 1.3
    assert handshake.accept_value(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_good_request():
    assert check(b"GET", b"1.1", GOOD) == KEY


@pytest.mark.parametrize("headers", [
    replaced(b"upgrade", b"WebSocket"),
    replaced(b"upgrade", b"h2c, websocket"),
    replaced(b"connection", b"keep-alive, Upgrade"),
    replaced(b"connection", b"keep-alive") + [(b"connection", b"upgrade")],
])
def test_token_lists(headers):
    assert check(b"GET", b"1.1", headers) == KEY


@pytest.mark.parametrize("method,version,headers,status", [
    (b"POST", b"1.1", GOOD, 400),
    (b"GET", b"1.0", GOOD, 400),
    (b"GET", b"x", GOOD, 400),
    (b"GET", b"1.1", without(b"upgrade"), 400),
    (b"GET", b"1.1", replaced(b"upgrade", b"h2c"), 400),
    (b"GET", b"1.1", without(b"connection"), 400),
    (b"GET", b"1.1", replaced(b"connection", b"keep-alive"), 400),
    (b"GET", b"1.1", without(b"sec-websocket-key"), 400),
    (b"GET", b"1.1", replaced(b"sec-websocket-key", b"short"), 400),
    (b"GET", b"1.1", replaced(b"sec-websocket-key", base64.b64encode(b"x" * 15)), 400),
    (b"GET", b"1.1", replaced(b"sec-websocket-key", b"!!!!!!!!!!!!!!!!!!!!!!=="), 400),
    (b"GET", b"1.1", GOOD + [(b"sec-websocket-key", KEY)], 400),
    (b"GET", b"1.1", without(b"sec-websocket-version"), 400),
    (b"GET", b"1.1", replaced(b"sec-websocket-version", b"8"), 426),
    (b"GET", b"1.1", replaced(b"sec-websocket-version", b"13, 8"), 426),
])
def test_refused(method, version, headers, status):
    with pytest.raises(ProtocolError) as err:
        check(method, version, headers)
    assert err.value.status_hint == status
    if status == 426:
        assert (b"Sec-WebSocket-Version", b"13") in err.value.headers


@given(st.lists(st.tuples(st.sampled_from([b"upgrade", b"connection", b"sec-websocket-key",
                                           b"sec-websocket-version", b"origin", b"x"]),
                          st.binary(max_size=40)), max_size=8),
       st.binary(max_size=8), st.binary(max_size=5))
def test_arbitrary_input_accepts_or_refuses(headers, method, version):
    try:
        key = check(method, version, headers)
    except ProtocolError as e:
        assert e.status_hint in (400, 426)
    else:
        assert len(base64.b64decode(key)) == 16


def test_origin():
    allow = ("https://a.example", re.compile(r"^https://.*\.b\.example$"))
    check_origin(GOOD + [(b"origin", b"https://a.example")], allow)
    check_origin(GOOD + [(b"origin", b"https://x.b.example")], allow)
    check_origin(GOOD, allow)      # not a browser
    check_origin(GOOD + [(b"origin", b"https://evil.example")], None)
    for origin in (b"https://evil.example", b"https://a.example.evil", b"null"):
        with pytest.raises(ProtocolError) as err:
            check_origin(GOOD + [(b"origin", origin)], allow)
        assert err.value.status_hint == 403


def test_subprotocol():
    h = GOOD + [(b"sec-websocket-protocol", b"chat, superchat")]
    assert handshake.select_subprotocol(h, (b"superchat", b"chat")) == b"chat"
    assert handshake.select_subprotocol(h, (b"mqtt",)) is None
    assert handshake.select_subprotocol(h, ()) is None


def test_response_101():
    resp = handshake.response_101(KEY, b"chat", b"permessage-deflate")
    assert resp.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in resp
    assert b"\r\nSec-WebSocket-Protocol: chat\r\n" in resp
    assert resp.endswith(b"\r\n\r\n")


def ext(value):
    return GOOD + [(b"sec-websocket-extensions", value)]


@pytest.mark.parametrize("offer,answer", [
    (b"permessage-deflate",
     b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    (b"permessage-deflate; client_max_window_bits",
     b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    (b"permessage-deflate; server_max_window_bits=10",
     b"permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
     b" server_max_window_bits=10"),
    (b"permessage-deflate; server_max_window_bits=8",
     b"permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
     b" server_max_window_bits=8"),
    (b'permessage-deflate; client_max_window_bits="12"',
     b"permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
     b" client_max_window_bits=12"),
    (b"x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=16,"
     b" permessage-deflate",
     b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
])
def test_deflate_accepted(offer, answer):
    d, value = negotiate_deflate(ext(offer), 1 << 20)
    assert value == answer
    assert d.enabled()


@pytest.mark.parametrize("offer", [
    b"x-webkit-deflate-frame",
    b"permessage-deflate; server_max_window_bits",
    b"permessage-deflate; server_max_window_bits=7",
    b"permessage-deflate; client_max_window_bits=16",
    b"permessage-deflate; server_no_context_takeover=1",
    b"permessage-deflate; unknown",
    b"permessage-deflate; client_no_context_takeover; client_no_context_takeover",
])
def test_deflate_declined(offer):
    assert negotiate_deflate(ext(offer), 1 << 20) == (None, None)


def pair(offer):
    """A wsproto client and our server extension, both negotiated from `offer`."""
    server_ext, answer = negotiate_deflate(ext(offer), 1 << 16)
    client_ext = PerMessageDeflate()
    # wsproto's own client cannot inflate with a 256-byte window; 512 reads the same streams.
    client_ext.finalize(answer.replace(b"bits=8", b"bits=9").decode())
    client = Connection(ConnectionType.CLIENT, [client_ext])
    server = Connection(ConnectionType.SERVER, [server_ext])
    return client, server


def roundtrip(a, b, event):
    b.receive_data(a.send(event))
    return list(b.events())


@pytest.mark.parametrize("offer", [b"permessage-deflate",
                                   b"permessage-deflate; server_max_window_bits=8",
                                   b"permessage-deflate; server_max_window_bits=9"])
def test_deflate_roundtrip(offer):
    client, server = pair(offer)
    for text in ("hello" * 50, "second message, new context", "x"):
        (ev,) = roundtrip(client, server, TextMessage(text))
        assert ev.data == text and ev.message_finished
        (ev,) = roundtrip(server, client, BytesMessage(text.encode()))
        assert ev.data == text.encode()
    # Neither side keeps zlib state between messages.
    assert server._proto.extensions[0]._compressor is None
    assert server._proto.extensions[0]._decompressor is None


def test_deflate_bomb_is_1009():
    client, server = pair(b"permessage-deflate")
    (ev,) = roundtrip(client, server, BytesMessage(b"\0" * (1 << 20)))
    assert isinstance(ev, CloseConnection) and ev.code == 1009


def test_frame_limit():
    limit = handshake.MessageLimit(1 << 20, 100)
    client = Connection(ConnectionType.CLIENT)
    server = Connection(ConnectionType.SERVER, [limit])
    (ev,) = roundtrip(client, server, TextMessage("a" * 100))
    assert ev.data == "a" * 100
    (ev,) = roundtrip(client, server, TextMessage("a" * 101))
    assert isinstance(ev, CloseConnection) and ev.code == 1009


def test_compressed_size_per_window():
    # server_max_window_bits=8 means: never compress, RSV1 clear.
    client, server = pair(b"permessage-deflate; server_max_window_bits=8")
    frame = server.send(TextMessage("a" * 1000))
    assert frame[0] & 0x40 == 0 and len(frame) > 1000
    client, server = pair(b"permessage-deflate")
    frame = server.send(TextMessage("a" * 1000))
    assert frame[0] & 0x40 and len(frame) < 100
    assert zlib  # used by the extension under test


# -- the limits at a frame's header (MessageLimit) ------------------------------------------

def head(opcode, length, fin=True, rsv1=False):
    """A masked client frame header (mask key included) announcing `length` payload bytes."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        out = bytes((b0, 0x80 | length))
    elif length < 65536:
        out = bytes((b0, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        out = bytes((b0, 0x80 | 127)) + length.to_bytes(8, "big")
    return out + b"\0\0\0\0"     # a zero mask: the payload goes as it is


def frame(opcode, payload, fin=True, rsv1=False):
    return head(opcode, len(payload), fin, rsv1) + payload


def limited(max_message_size=1024, max_frame_size=0):
    return Connection(ConnectionType.SERVER,
                      [handshake.MessageLimit(max_message_size, max_frame_size)])


def feed(server, data):
    server.receive_data(data)
    return list(server.events())


@pytest.mark.parametrize("length", [(1 << 63) - 1, 1 << 40, 65536, 1025])
def test_frame_over_message_limit_refused_at_its_header(length):
    server = limited(1024)
    # the header alone, not one payload byte
    (ev,) = feed(server, head(0x2, length))
    assert isinstance(ev, CloseConnection) and ev.code == 1009


def test_frame_at_the_message_limit_passes():
    server = limited(1024)
    (ev,) = feed(server, frame(0x2, b"x" * 1024))
    assert ev.data == b"x" * 1024 and ev.message_finished


def test_length_with_top_bit_is_wsprotos_protocol_error():
    # 2^63 and above are invalid lengths (RFC 6455 5.2): 1002, not 1009
    (ev,) = feed(limited(1024), head(0x2, 1 << 63))
    assert isinstance(ev, CloseConnection) and ev.code == 1002


def test_continuation_over_message_limit_refused_at_its_header():
    server = limited(1024)
    events = feed(server, frame(0x1, b"a" * 600, fin=False))
    assert [e.data for e in events] == ["a" * 600]
    # a PING between the fragments is not part of the message and does not reset its count
    (ping,) = feed(server, frame(0x9, b"p"))
    assert ping.payload == b"p"
    (ev,) = feed(server, head(0x0, 425))
    assert isinstance(ev, CloseConnection) and ev.code == 1009


def test_message_count_starts_again_after_fin():
    server = limited(1024)
    for _ in range(3):
        events = feed(server, frame(0x1, b"a" * 600, fin=False) + frame(0x0, b"b" * 424))
        assert "".join(e.data for e in events) == "a" * 600 + "b" * 424
        assert events[-1].message_finished


def test_frame_limit_applies_to_continuations():
    server = limited(1 << 20, 100)
    assert feed(server, frame(0x2, b"x" * 100, fin=False))[0].data == b"x" * 100
    (ev,) = feed(server, head(0x0, 101))
    assert isinstance(ev, CloseConnection) and ev.code == 1009


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_control_frame_over_125_is_protocol_error(opcode):
    (ev,) = feed(limited(1 << 20), head(opcode, 126))
    assert isinstance(ev, CloseConnection) and ev.code == 1002


def test_control_frames_do_not_count_against_the_message():
    server = limited(130)
    events = feed(server, frame(0x2, b"x" * 100, fin=False) + frame(0x9, b"p" * 125)
                  + frame(0x0, b"y" * 30))
    assert b"".join(e.data for e in events if isinstance(e, BytesMessage)) == b"x" * 100 + b"y" * 30


def deflate_server(limit, max_frame_size=0):
    d, _ = negotiate_deflate(ext(b"permessage-deflate"), limit, max_frame_size=max_frame_size)
    return d, Connection(ConnectionType.SERVER, [d])


def compressed(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_compressed_frame_past_deflate_bound_refused_at_its_header():
    limit = 1024
    _, server = deflate_server(limit)
    (ev,) = feed(server, head(0x2, handshake.deflate_bound(limit) + 1, rsv1=True))
    assert isinstance(ev, CloseConnection) and ev.code == 1009
    _, server = deflate_server(limit)
    (ev,) = feed(server, head(0x2, (1 << 63) - 1, rsv1=True))
    assert isinstance(ev, CloseConnection) and ev.code == 1009


def test_incompressible_message_at_the_limit_passes_compressed():
    # random bytes grow a little when deflated: their frame is over the limit, within the bound
    data = random.Random(7).randbytes(1024)
    payload = compressed(data)
    assert 1024 < len(payload) <= handshake.deflate_bound(1024)
    _, server = deflate_server(1024)
    (ev,) = feed(server, frame(0x2, payload, rsv1=True))
    assert ev.data == data


def test_uncompressed_message_in_deflate_session_is_exact():
    _, server = deflate_server(1024)
    (ev,) = feed(server, head(0x2, 1025))
    assert isinstance(ev, CloseConnection) and ev.code == 1009


def test_inflation_bounded_over_the_whole_message():
    # each fragment inflates to less than the limit, together they are over it
    limit = 1 << 16
    _, server = deflate_server(limit)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    part = c.compress(b"\0" * 40000) + c.flush(zlib.Z_SYNC_FLUSH)
    events = feed(server, frame(0x2, part, fin=False, rsv1=True))
    assert sum(len(e.data) for e in events) == 40000
    part = c.compress(b"\0" * 40000) + c.flush(zlib.Z_SYNC_FLUSH)
    events = feed(server, frame(0x0, part, fin=False))
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1009
    assert sum(len(e.data) for e in events[:-1]) <= limit - 40000


def test_bomb_inflates_no_further_than_the_limit():
    # 1 GiB of zeros in about 1 MB: what is inflated stays within the limit plus one byte
    limit = 1 << 20
    d, server = deflate_server(limit)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * (1 << 24))
    body = block * 64 + c.flush(zlib.Z_SYNC_FLUSH)
    inflated = []
    real = d.frame_inbound_payload_data

    def spy(proto, data):
        out = real(proto, data)
        if isinstance(out, bytes):
            inflated.append(len(out))
        return out

    d.frame_inbound_payload_data = spy
    events = feed(server, frame(0x2, body[:len(body) // 2], fin=False, rsv1=True))
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1009
    assert sum(inflated) <= limit


def test_ping_between_compressed_fragments():
    # RFC 6455 5.4: control frames may come between fragments; the message stays compressed
    _, server = deflate_server(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    p1 = c.compress(b"hello " * 10) + c.flush(zlib.Z_SYNC_FLUSH)
    p2 = (c.compress(b"world " * 10) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    events = feed(server, frame(0x2, p1, fin=False, rsv1=True) + frame(0x9, b"p")
                  + frame(0x0, p2))
    assert [type(e).__name__ for e in events] == ["BytesMessage", "Ping", "BytesMessage"]
    assert events[0].data + events[2].data == b"hello " * 10 + b"world " * 10
    # and the next message starts afresh
    (ev,) = feed(server, frame(0x1, compressed(b"next"), rsv1=True))
    assert ev.data == "next"
