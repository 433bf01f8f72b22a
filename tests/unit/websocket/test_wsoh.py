import pytest
from hypothesis import given, strategies as st

from ngxws.websocket import wsoh
from ngxws.websocket.wsoh import (
    BINARY, CLOSE, DISCONNECT, NAMES, OPEN, PING, PONG, TEXT, EventsError,
    close_content, decode, encode, encode_into, parse_close,
)

gripcontrol = pytest.importorskip("gripcontrol")
from gripcontrol import WebSocketEvent, decode_websocket_events, encode_websocket_events  # noqa: E402


SPEC_EXAMPLES = [
    (b"OPEN\r\n", [(OPEN, None)]),
    (b"OPEN 0\r\n\r\n", [(OPEN, b"")]),
    (b"TEXT B\r\nhello world\r\n", [(TEXT, b"hello world")]),
    (b"TEXT 5\r\nworld\r\nTEXT 1C\r\nhere is another nice message\r\n",
     [(TEXT, b"world"), (TEXT, b"here is another nice message")]),
    (b"CLOSE 2\r\n\x03\xe8\r\n", [(CLOSE, b"\x03\xe8")]),
    (b"BINARY 3\r\n\x00\r\n\r\n", [(BINARY, b"\x00\r\n")]),
    (b"PING\r\nPONG 2\r\nhi\r\nDISCONNECT\r\n", [(PING, None), (PONG, b"hi"), (DISCONNECT, None)]),
    (b"", []),
]


@pytest.mark.parametrize("body, events", SPEC_EXAMPLES)
def test_decode_spec_examples(body, events):
    assert decode(body) == events
    assert decode(bytearray(body)) == events


@pytest.mark.parametrize("body, events", SPEC_EXAMPLES)
def test_encode_spec_examples(body, events):
    # the spec's examples write upper-case hex; ours is lower-case, as gripcontrol's
    expected = body.replace(b"TEXT B\r\n", b"TEXT b\r\n").replace(b"TEXT 1C\r\n", b"TEXT 1c\r\n")
    assert encode(events) == expected


def test_encode_exact_bytes():
    assert encode([(TEXT, b"hello world")]) == b"TEXT b\r\nhello world\r\n"
    assert encode([(OPEN, None), (CLOSE, b"\x03\xe8")]) == b"OPEN\r\nCLOSE 2\r\n\x03\xe8\r\n"
    buf = bytearray(b"x")
    encode_into(buf, DISCONNECT)
    encode_into(buf, BINARY, b"")
    assert bytes(buf) == b"xDISCONNECT\r\nBINARY 0\r\n\r\n"


def test_names_are_interned_constants():
    (name, _), = decode(b"TEXT 1\r\na\r\n")
    assert name is TEXT


@pytest.mark.parametrize("body, message", [
    (b"OPEN", 'invalid event line "OPEN" at byte 0'),
    (b"OPEN\n", 'invalid event line "OPEN\\n" at byte 0'),
    (b"FOO\r\n", 'unknown event "FOO" at byte 0'),
    (b"text 1\r\na\r\n", 'unknown event "text" at byte 0'),
    (b"OPEN\r\nTEXT 0x1\r\na\r\n", 'invalid event line "TEXT 0x1" at byte 6'),
    (b"TEXT +1\r\na\r\n", 'invalid event line "TEXT +1" at byte 0'),
    (b"TEXT  1\r\na\r\n", 'invalid event line "TEXT  1" at byte 0'),
    (b"TEXT 1_0\r\n", 'invalid event line "TEXT 1_0" at byte 0'),
    (b"TEXT \r\n", 'invalid event line "TEXT " at byte 0'),
    (b"TEXT 123456789\r\n", 'invalid event line "TEXT 123456789" at byte 0'),
    (b"TEXT 5\r\nabc", "truncated TEXT event: 5 content bytes announced, 3 present"),
    (b"TEXT 3\r\nabc", "truncated TEXT event: 3 content bytes announced, 3 present"),
    (b"TEXT 3\r\nabcde", "TEXT event content not followed by CRLF at byte 11"),
    (b"TEXT 3\r\nabc\n\n", "TEXT event content not followed by CRLF at byte 11"),
    (b"\r\n", 'invalid event line "" at byte 0'),
])
def test_decode_errors(body, message):
    with pytest.raises(EventsError) as exc:
        decode(body)
    assert str(exc.value) == message


def test_decode_error_is_value_error():
    with pytest.raises(ValueError):
        decode(b"\xff\xfe\r\n")


@given(st.binary(max_size=64))
def test_decode_arbitrary_bytes_never_crashes(body):
    try:
        events = decode(body)
    except EventsError:
        return
    assert decode(encode(events)) == events


def test_close_content():
    assert close_content() is None
    assert close_content(1000) == b"\x03\xe8"
    assert close_content(4001, "bye é") == b"\x0f\xa1bye \xc3\xa9"
    assert parse_close(None) == (None, "")
    assert parse_close(b"") == (None, "")
    assert parse_close(b"\x0f\xa1bye \xc3\xa9") == (4001, "bye é")
    with pytest.raises(EventsError, match="1 byte"):
        parse_close(b"\x03")
    with pytest.raises(EventsError, match="UTF-8"):
        parse_close(b"\x03\xe8\xff")


event_st = st.tuples(st.sampled_from(NAMES), st.none() | st.binary(max_size=300))


@given(st.lists(event_st, max_size=20))
def test_gripcontrol_decodes_what_we_encode(events):
    body = encode(events)
    theirs = decode_websocket_events(body)
    assert [(e.type, e.content) for e in theirs] == events


@given(st.lists(event_st, max_size=20))
def test_we_decode_what_gripcontrol_encodes(events):
    body = encode_websocket_events([WebSocketEvent(n, c) for n, c in events])
    assert decode(body) == events
    assert encode(decode(body)) == body


@given(st.lists(event_st, max_size=20), st.data())
def test_round_trip_and_every_strict_prefix_fails_or_is_a_prefix(events, data):
    body = encode(events)
    assert decode(body) == events
    cut = data.draw(st.integers(0, len(body)))
    try:
        got = decode(body[:cut])
    except EventsError:
        return
    assert got == events[:len(got)]


def test_module_exports():
    assert wsoh.CONTENT_TYPE == "application/websocket-events"
    assert set(NAMES) == {"OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE", "DISCONNECT"}
