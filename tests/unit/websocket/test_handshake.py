import base64
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
    limit = handshake.FrameLimit(100)
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
