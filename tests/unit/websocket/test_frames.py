"""frames.py against wsproto as the oracle: server frames byte-equal, and client data decoded by
the fast path + wsproto fallback exactly as by wsproto alone, however the bytes are split."""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from ngxws.websocket import frames

from tests.helpers.session import Harness


def mask(payload: bytes, key: bytes) -> bytes:
    # byte by byte on purpose: not the int XOR under test
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def raw_frame(b0: int, payload: bytes, masked=True, length_bytes=None) -> bytes:
    """A client frame built by hand, for what wsproto's client refuses to send."""
    n = len(payload)
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    if length_bytes == 0:
        head = bytes((b0, n))
    elif length_bytes == 2:
        head = bytes((b0, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return bytes((head[0], head[1] | 0x80)) + head[2:] + key + mask(payload, key)


class Reader:
    """What a session sees: whole messages, pongs, pings, the first close code."""

    def __init__(self, fast: bool):
        self.fast = fast
        self.ws = Connection(ConnectionType.SERVER)
        self.held = None
        self.messages = []
        self.pongs = 0
        self.pings = []
        self.close = None
        self.parts = []
        self.fast_bytes = 0

    def feed(self, data: bytes) -> None:
        if self.close is not None:
            return
        if self.fast and self.held is None:
            messages, pongs, end = frames.decode(data)
            self.messages.extend(messages)
            self.pongs += pongs
            self.fast_bytes += end
            if end == len(data):
                return
            data = data[end:]
        self.held = frames.follow(data, self.held)
        self.ws.receive_data(data)
        for ev in self.ws.events():
            if isinstance(ev, (TextMessage, BytesMessage)):
                self.parts.append(ev.data)
                if ev.message_finished:
                    self.messages.append(("" if isinstance(ev.data, str) else b"").join(self.parts))
                    self.parts = []
            elif isinstance(ev, Pong):
                self.pongs += 1
            elif isinstance(ev, Ping):
                self.pings.append(ev.payload)
            elif isinstance(ev, CloseConnection):
                self.close = ev.code
                return
        if self.held is None:
            # follow() says wsproto holds nothing: check it against wsproto's own state
            proto = self.ws._proto
            assert proto._frame_decoder.header is None
            assert len(proto._frame_decoder.buffer) == 0
            assert proto._message_decoder.opcode is None

    def result(self):
        return self.messages, self.pongs, self.pings, self.close


SIZES = st.sampled_from([0, 1, 2, 3, 4, 5, 31, 32, 124, 125, 126, 127, 65535, 65536])
CHARS = st.sampled_from(["a", "é", "€", "😀", "\x00", "ÿa"])


@st.composite
def texts(draw):
    if draw(st.booleans()):
        return draw(st.text(max_size=200))
    size = draw(SIZES)
    ch = draw(CHARS)
    return ch * (size // len(ch.encode()))


@st.composite
def binaries(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    return os.urandom(draw(SIZES))


@st.composite
def item(draw, client):
    """Wire bytes of one client item: mostly plain messages, sometimes something for wsproto."""
    kind = draw(st.sampled_from(["text"] * 4 + ["binary"] * 4 + [
        "ping", "pong", "fragments", "bad_utf8", "bad_utf8_fragmented", "unmasked", "rsv",
        "opcode", "long_length", "short_length", "close", "cont"]))
    if kind == "text":
        return client.send(TextMessage(draw(texts())))
    if kind == "binary":
        return client.send(BytesMessage(draw(binaries())))
    if kind == "ping":
        return client.send(Ping(draw(st.binary(max_size=125))))
    if kind == "pong":
        return client.send(Pong(draw(st.binary(max_size=125))))
    if kind == "fragments":
        text = draw(st.booleans())
        parts = draw(st.lists(texts() if text else binaries(), min_size=1, max_size=4))
        out = b""
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            cls = TextMessage if text else BytesMessage
            out += client.send(cls(part, message_finished=last))
            if not last and draw(st.booleans()):
                out += client.send(Ping(b"in between"))
        return out
    if kind == "bad_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\xe2\x82", b"\xf4\x90\x80\x80"]))
        return raw_frame(0x81, draw(st.binary(max_size=20)).replace(b"\x80", b"") + bad)
    if kind == "bad_utf8_fragmented":
        return raw_frame(0x01, "é".encode()[:1]) + raw_frame(0x80, b"a")
    if kind == "unmasked":
        return raw_frame(0x82, b"abc", masked=False)
    if kind == "rsv":
        return raw_frame(draw(st.sampled_from([0xC1, 0xA2, 0x91])), b"abc")
    if kind == "opcode":
        return raw_frame(draw(st.sampled_from([0x83, 0x87, 0x8B, 0x8F])), b"abc")
    if kind == "long_length":
        return raw_frame(0x82, os.urandom(draw(st.sampled_from([10, 300]))), length_bytes=8)
    if kind == "short_length":
        return raw_frame(0x81, b"short", length_bytes=2)
    if kind == "cont":
        return raw_frame(0x80, b"orphan")
    # by hand: wsproto's client refuses to send anything after its Close
    code = draw(st.sampled_from([1000, 1001, 3000, None, 999, 1006]))
    return raw_frame(0x88, b"" if code is None else code.to_bytes(2, "big"))


def run(chunks, fast):
    r = Reader(fast)
    for c in chunks:
        r.feed(c)
    return r


def split(wire, cuts):
    chunks, pos = [], 0
    for cut in sorted(set(c % (len(wire) + 1) for c in cuts)):
        chunks.append(wire[pos:cut])
        pos = cut
    chunks.append(wire[pos:])
    return [c for c in chunks if c]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.data(), st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12))
def test_fast_path_matches_wsproto(data, cuts):
    client = Connection(ConnectionType.CLIENT)
    wire = b"".join(data.draw(st.lists(item(client), min_size=1, max_size=8)))
    chunks = split(wire, cuts)
    fast = run(chunks, True)
    slow = run(chunks, False)
    assert fast.result() == slow.result()
    # both consumed the same bytes: whatever wsproto still holds came through the same path
    if fast.close is None:
        assert (fast.held is None) == (slow.held is None)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(st.lists(st.one_of(texts(), binaries()), min_size=1, max_size=6),
       st.lists(st.integers(min_value=0, max_value=1 << 18), max_size=6))
def test_plain_messages_take_the_fast_path(messages, cuts):
    client = Connection(ConnectionType.CLIENT)
    wire = b"".join(client.send(TextMessage(m) if isinstance(m, str) else BytesMessage(m))
                    for m in messages)
    whole = run([wire], True)
    assert whole.messages == messages
    if all(len(m.encode() if isinstance(m, str) else m) < 65536 for m in messages):
        assert whole.fast_bytes == len(wire)
    chunks = split(wire, cuts)
    assert run(chunks, True).result() == run(chunks, False).result() == (messages, 0, [], None)


def test_pongs_are_counted_and_consumed():
    client = Connection(ConnectionType.CLIENT)
    wire = client.send(Pong(b"")) + client.send(TextMessage("hi")) + client.send(Pong(b"x" * 125))
    assert frames.decode(wire) == (["hi"], 2, len(wire))


@pytest.mark.parametrize("wire,stop", [
    (raw_frame(0x81, b"ok") + raw_frame(0x89, b"ping"), 8),
    (raw_frame(0x81, b"ok") + raw_frame(0x01, b"frag"), 8),
    (raw_frame(0x81, b"ok") + raw_frame(0x81, b"\xff"), 8),
    (raw_frame(0x81, b"ok") + raw_frame(0x82, b"x", masked=False), 8),
    (raw_frame(0x81, b"ok") + raw_frame(0x82, b"x" * 70000), 8),
    (raw_frame(0x81, b"ok") + raw_frame(0x82, b"x" * 300)[:100], 8),
    (raw_frame(0x81, b"ok") + raw_frame(0x88, b"\x03\xe8"), 8),
])
def test_decode_stops_at_what_it_does_not_handle(wire, stop):
    messages, pongs, end = frames.decode(wire)
    assert (messages, pongs, end) == (["ok"], 0, stop)


def test_decode_limit_leaves_big_frames():
    wire = raw_frame(0x82, b"x" * 10) + raw_frame(0x82, b"y" * 11)
    assert frames.decode(wire, limit=10) == ([b"x" * 10], 0, 16)


def test_skip_finds_the_end_of_a_message():
    client = Connection(ConnectionType.CLIENT)
    a = client.send(TextMessage("a" * 200))
    p = client.send(Pong(b"p"))
    b = client.send(BytesMessage(b"b"))
    wire = a + p + b + client.send(TextMessage("c"))
    assert frames.skip(wire, 1) == len(a)
    assert frames.skip(wire, 2) == len(a + p + b)


def test_follow_tracks_partial_headers_and_fragments():
    client = Connection(ConnectionType.CLIENT)
    first = client.send(TextMessage("x" * 300, message_finished=False))
    last = client.send(TextMessage("y", message_finished=True))
    held = frames.follow(first[:3], None)
    assert held == (0, False, first[:3])
    held = frames.follow(first[3:], held)
    assert held == (0, True, b"")
    held = frames.follow(last[:-1], held)
    assert held == (1, False, b"")
    assert frames.follow(last[-1:], held) is None
    # a read that ends exactly where a fragment's payload ends: still inside the message
    assert frames.follow(first[10:], frames.follow(first[:10], None)) == (0, True, b"")
    assert frames.follow(b"", None) is None


@settings(max_examples=200, deadline=None)
@given(st.one_of(texts(), binaries()))
def test_server_data_frames_match_wsproto(payload):
    ws = Connection(ConnectionType.SERVER)
    if isinstance(payload, str):
        assert frames.frame_text(payload.encode()) == ws.send(TextMessage(payload))
    else:
        assert frames.frame_binary(payload) == ws.send(BytesMessage(payload))


@given(st.binary(max_size=125))
def test_server_ping_matches_wsproto(payload):
    assert frames.frame_ping(payload) == Connection(ConnectionType.SERVER).send(Ping(payload))


def test_server_ping_over_125_bytes_refused():
    with pytest.raises(ValueError):
        frames.frame_ping(b"x" * 126)


@given(st.sampled_from([None, 1000, 1001, 1002, 1005, 1006, 1007, 1009, 1011, 1015, 3000, 4999]),
       st.one_of(st.none(), st.text(max_size=130), st.just("é" * 70)))
def test_server_close_matches_wsproto(code, reason):
    if code is None or code == 1005:
        reason = None
    ws = Connection(ConnectionType.SERVER)
    # wsproto sends no code for the enum member only (a plain 1005 would become 1000)
    event = CloseConnection(CloseReason.NO_STATUS_RCVD if code == 1005 else code, reason)
    assert frames.frame_close(code, reason or "") == ws.send(event)


# -- through the real Session (websocket/session.py wires decode/follow into its read path) --

@st.composite
def session_item(draw, client):
    """(wire bytes, what the session sends back) for one client item."""
    kind = draw(st.sampled_from(["text", "text", "binary", "binary", "ping", "pong", "fragments"]))
    if kind == "text":
        m = draw(st.one_of(st.text(max_size=130), st.sampled_from(["é" * 63, "a" * 126])))
        return client.send(TextMessage(m)), [(TextMessage, m)]
    if kind == "binary":
        m = draw(st.one_of(st.binary(max_size=130), st.sampled_from([b"b" * 125, b"b" * 126])))
        return client.send(BytesMessage(m)), [(BytesMessage, m)]
    if kind == "ping":
        p = draw(st.binary(max_size=20))
        return client.send(Ping(p)), [(Pong, p)]
    if kind == "pong":
        return client.send(Pong(draw(st.binary(max_size=20)))), []
    parts = draw(st.lists(st.text(max_size=40), min_size=1, max_size=3))
    wire, back = b"", []
    for i, part in enumerate(parts):
        wire += client.send(TextMessage(part, message_finished=i == len(parts) - 1))
        if i < len(parts) - 1 and draw(st.booleans()):
            wire += client.send(Ping(b"mid"))
            back.append((Pong, b"mid"))
    return wire, back + [(TextMessage, "".join(parts))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=10),
       st.sampled_from([64 * 1024, 200]))
def test_session_answers_as_with_wsproto_alone(data, cuts, send_buffer_size):
    h = Harness(send_buffer_size=send_buffer_size)
    h.events()
    items = data.draw(st.lists(session_item(h.client), min_size=1, max_size=8))
    wire = b"".join(w for w, _ in items)
    expected = [e for _, back in items for e in back]
    for chunk in split(wire, cuts):
        h.peer.sendall(chunk)
        h.spin(1)
    got = h.events(len(expected))
    assert [(type(e), e.payload if isinstance(e, Pong) else e.data) for e in got] == expected
    assert h.session.held is None and not h.session.paused
    pongs = sum(1 for w, back in items if not back and w)
    assert h.sink.text().count("websocket pong received") == pongs
    h.peer.close()
    h.spin()


def test_session_fast_path_stops_at_the_mark():
    h = Harness(send_buffer_size=3000)
    h.events()
    wire = b"".join(h.client.send(BytesMessage(b"%04d" % i + b"m" * 996)) for i in range(50))
    # one read holding 50 messages: parsing stops one message over the mark, the rest waits
    h.session._input(wire)
    assert h.session.paused and 3000 < h.session.queued <= 3000 + 1004
    assert h.session.held is None
    got = h.events(50)
    assert [e.data[:4] for e in got] == [b"%04d" % i for i in range(50)]
    assert not h.session.paused
    h.peer.close()
    h.spin()


def test_a_pong_after_the_mark_is_logged_once():
    # hypothesis found it: the fast path paused after the second message (over the 200-byte
    # mark) and handed the rest, the pong included, to wsproto, having logged that pong already
    h = Harness(send_buffer_size=200)
    h.events()
    wire = b"".join([h.client.send(TextMessage("é" * 63)), h.client.send(TextMessage("é" * 63)),
                     h.client.send(TextMessage("")), h.client.send(Pong(b""))])
    h.peer.sendall(wire)
    h.spin(1)
    assert [e.data for e in h.events(3)] == ["é" * 63, "é" * 63, ""]
    assert h.sink.text().count("websocket pong received") == 1
    h.peer.close()
    h.spin()
