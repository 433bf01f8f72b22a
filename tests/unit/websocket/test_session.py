"""Session over a real socketpair, driven by the real EventLoop on a fake clock."""

import socket
import tracemalloc

import pytest
from hypothesis import given, settings, strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from ngxws.websocket import session as session_mod
from ngxws.websocket.handshake import Deflate, negotiate_deflate
from ngxws.websocket.session import Location, Session, State

from tests.helpers.session import Harness, conf


def test_first_message_is_push_urls():
    h = Harness()
    (ev,) = h.events()
    assert h.head.startswith(b"HTTP/1.1 101")
    sid = h.session.id
    assert ev.data == "http://%s@127.0.0.1:9000/ws,http://%s@[::1]:9000/ws" % (sid, sid)
    assert len(sid) >= 22 and h.loc.sessions[sid] is h.session


def test_ids_are_unique_and_not_fds():
    loc = Location(conf(), None)
    ids = {Session(loc).id for _ in range(10000)}
    assert len(ids) == 10000
    assert all(not i.isdigit() for i in ids)


def test_echo_text_binary_fragmented():
    h = Harness()
    h.events()
    h.send(TextMessage("hello"))
    h.send(BytesMessage(b"\x00\x01"))
    h.send(TextMessage("frag", message_finished=False))
    h.send(TextMessage("ment", message_finished=True))
    evs = h.events(3)
    assert [(type(e), e.data) for e in evs] == [(TextMessage, "hello"), (BytesMessage, b"\x00\x01"),
                                                 (TextMessage, "fragment")]


def test_bytes_with_the_request_head_are_not_lost():
    client = Connection(ConnectionType.CLIENT)
    early = client.send(TextMessage("early"))
    h = Harness(trailing=early)
    evs = h.events(2)
    assert evs[1].data == "early"


def test_ping_answered():
    h = Harness()
    h.events()
    h.send(Ping(b"abc"))
    (ev,) = h.events()
    assert isinstance(ev, Pong) and ev.payload == b"abc"
    assert "websocket ping received" in h.sink.text()


def test_client_close_is_answered_and_tcp_closed():
    h = Harness()
    h.events()
    sid = h.session.id
    h.send(CloseConnection(code=1000, reason="bye"))
    evs = h.events(2)
    assert isinstance(evs[0], CloseConnection) and evs[0].code == 1000
    assert sid not in h.loc.sessions
    assert h.peer.recv(10) == b""           # our FIN
    h.peer.close()
    h.spin()
    assert h.conn.closed and h.session.state is State.CLOSED
    assert 'close code=1000 reason="bye" by client' in h.sink.text()


def test_oversize_message_closed_with_1009():
    h = Harness(max_message_size=100)
    h.events()
    h.send(TextMessage("é" * 60))      # 60 characters, 120 bytes
    (ev,) = h.events()
    assert isinstance(ev, CloseConnection) and ev.code == 1009
    h.peer.sendall(h.client.send(CloseConnection(code=1009)))
    h.spin()
    assert h.peer.recv(10) == b""


def test_oversize_fragmented_message():
    h = Harness(max_message_size=100)
    h.events()
    for _ in range(3):
        h.send(BytesMessage(b"x" * 40, message_finished=False))
    (ev,) = h.events()
    assert isinstance(ev, CloseConnection) and ev.code == 1009


def raw(opcode, payload=b"", fin=True, length=None):
    """A masked client frame (zero mask); `length` announces another length than the payload's."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        out = bytes((b0, 0x80 | n))
    elif n < 65536:
        out = bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        out = bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
    return out + b"\0\0\0\0" + payload


@pytest.mark.parametrize("length", [(1 << 63) - 1, 1025, 200])
def test_frame_header_over_the_limit_closes_before_its_payload(length):
    # in the fast path's reach (7- and 16-bit lengths) and not (64-bit): 1009 at the header
    h = Harness(max_message_size=100 if length == 200 else 1024)
    h.events()
    h.peer.sendall(raw(0x2, length=length))
    h.spin()
    (ev,) = h.events()
    assert isinstance(ev, CloseConnection) and ev.code == 1009
    assert "websocket message over websocket_max_message_size" in h.sink.text()


@pytest.mark.parametrize("data", [
    raw(0x2, length=1 << 63),               # lengths with the top bit set are invalid (5.2)
    raw(0xA, length=126),                   # control frames carry at most 125 bytes
    raw(0x9, length=126),
    raw(0xA, b"p", fin=False),              # and are never fragmented
])
def test_invalid_headers_are_protocol_errors_in_either_path(data):
    for trailing in (b"", raw(0x1, b"ok")):
        h = Harness()
        h.events()
        if trailing:
            # the frame after a plain one: frames.decode() takes the first, wsproto the rest
            h.peer.sendall(trailing + data)
        else:
            h.peer.sendall(data)
        h.spin()
        events = h.events(2 if trailing else 1)
        assert isinstance(events[-1], CloseConnection) and events[-1].code == 1002, events
        if trailing:
            assert events[0].data == "ok"


def test_continuation_header_over_the_limit_closes_before_its_payload():
    h = Harness(max_message_size=1024)
    h.events()
    h.peer.sendall(raw(0x1, b"a" * 1000, fin=False) + raw(0x0, length=25))
    h.spin()
    (ev,) = h.events()
    assert isinstance(ev, CloseConnection) and ev.code == 1009


def test_many_fragments_cost_what_the_message_holds():
    # 20,000 empty fragments and 10,000 one-byte ones: memory follows the bytes, not the count
    h = Harness(max_message_size=1 << 20, send_buffer_size=1 << 22)
    h.events()
    tracemalloc.start()
    try:
        h.peer.sendall(raw(0x2, b"a", fin=False))
        h.spin()
        empty = raw(0x0, fin=False) * 4000
        for _ in range(5):
            h.session._input(empty)
        grown_empty = tracemalloc.get_traced_memory()[0]
        one = raw(0x0, b"b", fin=False) * 2000
        for _ in range(5):
            h.session._input(one)
        grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert grown_empty < 64 * 1024
    assert grown < 64 * 1024 + 2 * 10_000
    h.session._input(raw(0x0, b"c"))
    (ev,) = h.events()
    assert ev.data == b"a" + b"b" * 10_000 + b"c"


def test_fragmented_text_split_inside_a_character():
    h = Harness()
    h.events()
    data = "é€😀".encode()
    h.peer.sendall(b"".join(raw(0x1 if i == 0 else 0x0, data[i:i + 1], fin=i == len(data) - 1)
                            for i in range(len(data))))
    (ev,) = h.events()
    assert ev.data == "é€😀"


def test_bad_frame_fails_connection():
    h = Harness()
    h.events()
    h.peer.sendall(b"\x8f\x80\x00\x00\x00\x00")   # opcode 0xF, masked
    (ev,) = h.events()
    assert isinstance(ev, CloseConnection) and ev.code == 1002
    assert h.peer.recv(10) == b""


def test_ping_then_idle_close_then_drop():
    h = Harness(ping_interval=1000, idle_interval=3000)
    h.events()
    h.advance(1000)
    (ev,) = h.events()
    assert isinstance(ev, Ping)
    # Our pushes do not keep a silent client alive.
    assert h.session.push("x") == 204
    h.advance(1000)
    evs = h.events(2)
    assert isinstance(evs[0], TextMessage) and isinstance(evs[1], Ping)
    h.advance(1000)
    (ev,) = h.events()
    assert isinstance(ev, CloseConnection) and ev.code == 1001
    assert h.session.state is State.CLOSING
    h.advance(session_mod.CLOSE_TIMEOUT)
    assert h.conn.closed
    text = h.sink.text()
    assert "websocket ping sent" in text and "websocket idle timeout" in text
    assert "close timed out" in text


def test_pong_resets_idle():
    h = Harness(ping_interval=1000, idle_interval=1500)
    h.events()
    for _ in range(5):
        h.advance(1000)
        (ev,) = h.events()
        assert isinstance(ev, Ping)
        h.send(Pong(ev.payload))
    assert h.session.state is State.OPEN


def test_push_and_slow_client():
    h = Harness(send_buffer_size=10000)
    h.events()
    h.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    statuses = [h.session.push("y" * 1000) for _ in range(5000)]
    h.spin()
    # The queue reached the mark, then pushes were refused; never more than one message over.
    assert statuses.count(429) > 0
    assert h.session.queued <= 10000 + 1010
    got = h.events(statuses.count(204))
    assert len(got) == statuses.count(204)


def test_echo_back_pressure():
    h = Harness(send_buffer_size=3000)
    h.events()
    h.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    h.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    wire = b"".join(h.client.send(TextMessage("%04d" % i + "e" * 996)) for i in range(200))
    sent = 0
    h.peer.setblocking(False)
    while sent < len(wire):
        try:
            sent += h.peer.send(wire[sent:sent + 65536])
        except BlockingIOError:
            pass
        h.spin(1)
        # never more than one message (1004 bytes framed) over the mark
        assert h.session.queued <= 3000 + 1004
        if h.session.paused:
            break
    assert h.session.paused
    h.peer.setblocking(True)
    h.peer.settimeout(2)
    got = []
    while len(got) < 200:
        if sent < len(wire):
            h.peer.setblocking(False)
            try:
                sent += h.peer.send(wire[sent:sent + 65536])
            except BlockingIOError:
                pass
            h.peer.settimeout(2)
        got.extend(h.events(1))
        assert h.session.queued <= 3000 + 1004
    assert [e.data[:4] for e in got] == ["%04d" % i for i in range(200)]


def test_slow_client_close_policy():
    h = Harness(send_buffer_size=1000, slow_client="close")
    h.events()
    # a client that reads nothing: pushes go to the kernel until its buffers are full, then
    # queue here; the first push that finds more than send_buffer_size queued closes it
    h.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    h.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    statuses = []
    while 429 not in statuses and len(statuses) < 10000:
        statuses.append(h.session.push("z" * 600))
    assert statuses[-1] == 429 and set(statuses[:-1]) == {204}
    assert h.session.state is State.CLOSING


def test_push_goes_out_at_once_when_nothing_waits():
    h = Harness()
    h.events()
    assert h.session.push(b"now", text=True) == 204
    # no loop iteration in between: the frame is in the peer's socket already
    assert h.session.out is None and h.peer.recv(100) == b"\x81\x03now"


def test_upstream_hooks():
    calls = []

    class Up:
        def on_message(self, session, event):
            calls.append(("msg", type(event).__name__, event.data))
            session.send_text("from backend")

        def on_close(self, session, code, reason):
            calls.append(("close", code))

    h = Harness()
    h.session.upstream = Up()
    h.events()
    h.send(TextMessage("up"))
    (ev,) = h.events()
    assert ev.data == "from backend"
    h.send(CloseConnection(code=1000))
    assert calls == [("msg", "TextMessage", "up"), ("close", 1000)]


def test_shutdown_sends_1001():
    h = Harness()
    h.events()
    h.session.shutdown()
    (ev,) = h.events()
    assert isinstance(ev, CloseConnection) and ev.code == 1001


def test_deflate_session():
    from wsproto.extensions import PerMessageDeflate
    ext, answer = negotiate_deflate([(b"sec-websocket-extensions", b"permessage-deflate")], 1 << 20)
    client_ext = PerMessageDeflate()
    client_ext.finalize(answer.decode())
    h = Harness(extensions=[ext], client_ext=[client_ext])
    h.events()
    for i in range(3):
        h.send(TextMessage("compress me " * 100))
        (ev,) = h.events()
        assert ev.data == "compress me " * 100
    assert isinstance(ext, Deflate) and ext._compressor is None and ext._decompressor is None


@pytest.mark.parametrize("deflate", [False, True])
def test_push_checked_text_bytes(deflate):
    # push_handler hands text over as the UTF-8 bytes it checked: the client gets the same text
    # message as from a str, framed directly or (deflate) through wsproto
    kw = {}
    if deflate:
        from wsproto.extensions import PerMessageDeflate
        ext, answer = negotiate_deflate([(b"sec-websocket-extensions", b"permessage-deflate")],
                                        1 << 20)
        client_ext = PerMessageDeflate()
        client_ext.finalize(answer.decode())
        kw = dict(extensions=[ext], client_ext=[client_ext])
    h = Harness(**kw)
    h.events()
    text = "héllo wörld " * 20
    assert h.session.push(text.encode(), text=True) == 204
    assert h.session.push(text) == 204
    assert h.session.push(b"\xff\x00", text=False) == 204
    evs = h.events(3)
    assert [type(e) for e in evs] == [TextMessage, TextMessage, BytesMessage]
    assert evs[0].data == evs[1].data == text and evs[2].data == b"\xff\x00"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), min_size=1,
                max_size=5),
       st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20))
def test_split_anywhere(messages, cuts):
    h = Harness()
    h.events()
    wire = b"".join(h.client.send(TextMessage(m) if isinstance(m, str) else BytesMessage(m))
                    for m in messages)
    pos = 0
    for cut in cuts:
        h.peer.sendall(wire[pos:pos + cut])
        pos += cut
        h.spin(1)
    h.peer.sendall(wire[pos:])
    got = h.events(len(messages))
    assert [e.data for e in got] == messages
    h.peer.close()
    h.spin()


