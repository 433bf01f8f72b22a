"""One WebSocket client after the handshake: frames in, frames out, and the way out.

Theory of operation
-------------------
A Session owns its Connection once the HTTP module has handed the socket over. Frames are
parsed and built by wsproto's `Connection` (server side, no HTTP: the handshake is ours), fed
with whatever bytes arrived together with the request head.

Outgoing frames are appended to a chunk queue, and the first one of an empty queue *posts* the
connection's write event, so that all frames produced during one loop iteration (an echo, ten
pushes, a pong) leave in one `send()` at the end of that iteration. Two writes go to the socket
at once instead: a push to a client with nothing queued (`push()`: the frame reaches the client
before the backend gets its 204, still one send), and the 1001 close of a worker's exit
(`shutdown()`). If the kernel takes only part, EVENT_WRITE is enabled until the queue drains, and
disabled again then: an idle or up-to-date client has no write interest at all.

`queued` counts the unsent bytes. A push is refused (or the client closed, by policy) while
`queued` is over `websocket_send_buffer`, so a client is never more than one message over the
mark. Echoes apply the same mark as back-pressure: reading stops until the queue drains.

The way out, with the states below:

    OPEN --we send Close--> CLOSING --peer's Close or timeout--> LINGERING --EOF/timeout--> done
    OPEN --peer's Close--> (we answer) LINGERING
    OPEN --bad frame--> (we send Close with its code) LINGERING

LINGERING means: our last bytes are queued; once they are sent, the write side is shut down
(the server closes the TCP connection first, RFC 6455 7.1.1) and reads are discarded until the
peer's FIN or a short timeout, so that unread data cannot turn our close into an RST that
destroys the Close frame in flight. Every wait is bounded.

The connection's read event doubles as the session's only timer (as nginx uses c->read for
keep-alive): keep-alive while OPEN (see keepalive.py), the close wait while CLOSING, the
lingering bound while LINGERING.

Ids are 128 random bits from `secrets`, never the fd: fds are reused at once, and a push for
a client that left must get 404, not reach whoever got the same fd.
"""

from __future__ import annotations

import enum
import secrets
import socket

from wsproto.connection import Connection as WsConnection, ConnectionState, ConnectionType
from wsproto.events import (BytesMessage, CloseConnection, Ping, Pong, TextMessage)

from ..http.stub_status import stats as _stats
from . import frames, keepalive
from .handshake import MessageLimit

#: how long we wait for the peer's Close after sending ours
CLOSE_TIMEOUT = 5000
#: how long we read and discard after shutting our write side
LINGER_TIMEOUT = 2000
RECV_SIZE = 65536
#: iovecs per sendmsg() call (IOV_MAX is 1024 on Linux)
IOV_MAX = 1024

_OPEN = ConnectionState.OPEN
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
#: Session.held for a session whose frames always go through wsproto (permessage-deflate)
_WSPROTO = (-1, True, b"")


class State(enum.Enum):
    #: messages flow both ways
    OPEN = 1
    #: our Close is sent or queued; waiting (bounded) for the peer's
    CLOSING = 2
    #: the close handshake is over or failed: flush, shut down writes, drain until EOF
    LINGERING = 3
    #: the TCP connection is closed and the id forgotten
    CLOSED = 4


OPEN = State.OPEN
CLOSING = State.CLOSING
LINGERING = State.LINGERING
CLOSED = State.CLOSED


def new_id() -> str:
    return secrets.token_urlsafe(16)


class Location:
    """What sessions of one `websocket` location share in a worker (one object, many sessions)."""

    __slots__ = ("conf", "loop", "log", "ping_interval", "idle_interval", "max_message_size",
                 "max_frame_size", "send_buffer_size", "slow_close", "push_prefixes", "path",
                 "frame_limit", "sessions")

    def __init__(self, conf, loop, log=None, path="/", sessions=None):
        self.conf = conf
        self.loop = loop
        self.log = log
        #: id -> Session, the open sessions: the worker's registry (WebSocketMain.sessions,
        #: shared by all its locations), or this location's own
        self.sessions = {} if sessions is None else sessions
        self.ping_interval = conf.ping_interval
        self.idle_interval = conf.idle_interval
        self.max_message_size = conf.max_message_size
        self.max_frame_size = getattr(conf, "max_frame_size", 0) or 0
        self.send_buffer_size = conf.send_buffer_size
        self.slow_close = conf.slow_client == "close"
        #: the largest client frame frames.decode() takes; a larger one goes to wsproto, whose
        #: MessageLimit refuses it at its header when it is over either limit. Never over the
        #: message limit, so a message decode() returns is within it.
        self.frame_limit = min(self.max_frame_size or 65535, 65535, self.max_message_size)
        #: "HOST:PORT" of each push URL; filled when the push port is open
        self.push_prefixes = ()
        #: the location's URI as it appears in push URLs
        self.path = path

    def push_urls(self, sid: str, path: str | None = None) -> str:
        path = path or self.path
        return ",".join("http://%s@%s%s" % (sid, hp, path) for hp in self.push_prefixes)


class Session:
    __slots__ = ("id", "conn", "loc", "ws", "state", "out", "queued", "parts", "last_in",
                 "last_ping", "upstream", "path", "paused", "close_code", "close_reason",
                 "closed_by", "held")

    def __init__(self, loc: Location, path: str | None = None):
        self.id = new_id()
        self.loc = loc
        self.conn = None
        self.ws = None
        self.state = OPEN
        #: queued chunks (bytes or memoryview), None when empty
        self.out = None
        self.queued = 0
        #: the bytes (UTF-8 for text) of a message in pieces, None between messages
        self.parts = None
        #: loop ms of the last bytes received, and of our last keep-alive PING
        self.last_in = 0
        self.last_ping = 0
        #: None: client messages are echoed; else an object with on_message/on_close
        self.upstream = None
        #: the request path when it differs from the location's (regex locations)
        self.path = path
        #: reading stopped because the queue is over the mark (echo back-pressure)
        self.paused = False
        self.close_code = None
        self.close_reason = ""
        #: "client" or "server": who started the close, for the log
        self.closed_by = None
        #: None: client bytes go to frames.decode() first; else frames.follow()'s state for the
        #: bytes wsproto holds, or _WSPROTO when an extension needs wsproto for every frame
        self.held = None

    # -- start --------------------------------------------------------------------------------

    @property
    def push_urls(self) -> str:
        return self.loc.push_urls(self.id, self.path)

    def attach(self, conn, response: bytes, trailing: bytes = b"", extensions=None) -> None:
        """Take over `conn`: queue the 101 `response` and the push URL message, start reading.

        `extensions`: the negotiated ones (permessage-deflate, which judges frame headers
        itself); without any, a MessageLimit applies the limits at each frame's header.
        """
        loc = self.loc
        loop = loc.loop
        self.conn = conn
        conn.data = self
        conn.read.handler = ws_read_handler
        conn.write.handler = ws_write_handler
        if conn.log is not None:
            conn.log.action = "serving websocket"
        if not extensions:
            extensions = [MessageLimit(loc.max_message_size, loc.max_frame_size)]
        elif any(type(ext) is not MessageLimit for ext in extensions):
            self.held = _WSPROTO
        self.ws = WsConnection(ConnectionType.SERVER, extensions)
        loc.sessions[self.id] = self
        now = loop.now_ms
        self.last_in = now
        self.last_ping = now
        if response:
            self._queue(response)
        if loc.push_prefixes:
            self._queue(self.ws.send(TextMessage(data=self.push_urls)))
        loop.update(conn, True, False)
        keepalive.arm(self)
        if trailing:
            self._input(trailing)

    # -- output -------------------------------------------------------------------------------

    def _queue(self, data) -> None:
        out = self.out
        if out is None:
            self.out = [data]
            conn = self.conn
            if not conn.write.active:
                self.loc.loop.post(conn.write)
        else:
            out.append(data)
        self.queued += len(data)

    def send_message(self, data) -> None:
        """Queue one whole message (str: text, bytes: binary), whatever the queue holds."""
        ws = self.ws
        if ws.state is not _OPEN:
            return
        if self.held is _WSPROTO:
            self._queue(ws.send(TextMessage(data=data) if type(data) is str
                                else BytesMessage(data=data)))
        elif type(data) is str:
            self._queue(frames.frame_text(data.encode("utf-8")))
        else:
            self._queue(frames.frame_binary(data))

    send_text = send_message
    send_bytes = send_message

    def send_ping(self, payload: bytes = b"") -> None:
        if self.ws.state is _OPEN:
            if self.held is _WSPROTO:
                self._queue(self.ws.send(Ping(payload=bytes(payload[:125]))))
            else:
                self._queue(frames.frame_ping(bytes(payload[:125])))

    def can_push(self) -> bool:
        """True when push() would queue the message (and answer 204)."""
        return (self.state is OPEN and self.ws.state is _OPEN
                and self.queued <= self.loc.send_buffer_size)

    def push(self, data, text: bool = False) -> int:
        """A push for this client: the HTTP status to answer (204, 404 or 429).

        `data`: str (a text message) or bytes: a binary message, or with `text` a text
        message whose UTF-8 the caller has checked (framed as it is, never decoded).
        """
        if self.state is not OPEN or self.ws.state is not _OPEN:
            return 404
        if self.queued > self.loc.send_buffer_size:
            if self.loc.slow_close:
                self.conn.log.info("websocket client too slow, %d bytes unsent", self.queued)
                self.close(1008, "client too slow")
            return 429
        if self.held is _WSPROTO:
            self.send_message(data.decode("utf-8") if text else data)
        elif self.out is None:
            # Nothing waits for this client: the frame goes out now, before the backend gets
            # its 204, instead of at the end of the loop iteration (one send either way).
            if text:
                frame = frames.frame_text(data)
            elif type(data) is str:
                frame = frames.frame_text(data.encode("utf-8"))
            else:
                frame = frames.frame_binary(data)
            self.out = [frame]
            self.queued = len(frame)
            self.flush()
        elif text:
            self._queue(frames.frame_text(data))
        else:
            self.send_message(data)
        return 204

    def flush(self) -> None:
        """Send what the kernel takes now; the rest waits for EVENT_WRITE."""
        out = self.out
        conn = self.conn
        if out is None or conn.closed:
            return
        sock = conn.sock
        try:
            if len(out) == 1:
                n = sock.send(out[0])
            else:
                n = sock.sendmsg(out[:IOV_MAX])
        except (BlockingIOError, InterruptedError):
            n = 0
        except (BrokenPipeError, ConnectionResetError) as e:
            conn.log.info("send() failed (%d: %s)", e.errno, e.strerror)
            self._finish(1006, "", "client")
            return
        except OSError as e:
            conn.log.alert("send() failed (%d: %s)", e.errno, e.strerror)
            self._finish(1006, "", "client")
            return
        conn.sent += n
        self.queued -= n
        if self.queued == 0:
            self.out = None
            if self.state is OPEN and not self.paused:
                # the common case, everything went: keep reading, stop watching for write
                if conn.write.active or not conn.read.active:
                    self.loc.loop.update(conn, True, False)
                return
        else:
            i = 0
            while n:
                size = len(out[i])
                if n >= size:
                    n -= size
                    i += 1
                else:
                    out[i] = memoryview(out[i])[n:]
                    n = 0
            if i:
                del out[:i]
        self._after_flush()

    def _after_flush(self) -> None:
        conn = self.conn
        reading = self.state is not CLOSED and not self.paused
        if self.out is None:
            if self.state is LINGERING:
                self._shutdown_write()
                return
            resume = self.paused
            if resume:
                self.paused = False
                reading = True
            self.loc.loop.update(conn, reading, False)
        else:
            resume = self.paused and self.queued <= self.loc.send_buffer_size
            if resume:
                self.paused = False
                reading = True
            self.loc.loop.update(conn, reading, True)
        if resume and self.state is OPEN:
            # frames that arrived while paused wait, parsed or not, in wsproto's buffer
            self._process()

    # -- input --------------------------------------------------------------------------------

    def _input(self, data) -> None:
        """Bytes from the client: plain frames by hand (frames.py), anything else via wsproto."""
        held = self.held
        if held is None and self.state is OPEN and not self.paused:
            messages, pongs, end = frames.decode(data, self.loc.frame_limit)
            if messages:
                done = 0
                for message in messages:
                    # within the message limit: Location.frame_limit is not over it
                    self._deliver(message, None)
                    done += 1
                    if self.paused or self.state is not OPEN:
                        # the messages not taken wait in wsproto's buffer, as _process() leaves
                        # them when the queue is over the mark
                        if done < len(messages):
                            end = frames.skip(data, done)
                            if pongs:
                                # the pongs past `end` go to wsproto, which logs them itself
                                pongs = frames.decode(data[:end], self.loc.frame_limit)[1]
                        break
            if pongs and self.conn.log.debug_enabled:
                for _ in range(pongs):
                    self.conn.log.debug("websocket pong received")
            if end == len(data):
                return
            state = self.state
            if state is not OPEN and state is not CLOSING:
                return
            data = data[end:]
        if held is not _WSPROTO:
            self.held = frames.follow(data, held)
        self.ws.receive_data(data)
        if not self.paused:
            self._process()

    def _process(self) -> None:
        ws = self.ws
        for event in ws.events():
            cls = type(event)
            if cls is TextMessage or cls is BytesMessage:
                self._on_data(event)
                if self.paused:
                    # Leave the rest in wsproto's buffer: parsing is lazy, so nothing is lost,
                    # and the queue stays within one message of the mark.
                    return
            elif cls is Ping:
                if ws.state is _OPEN:
                    self._queue(ws.send(Pong(payload=event.payload)))
                if self.conn.log.debug_enabled:
                    self.conn.log.debug("websocket ping received, %d bytes", len(event.payload))
                upstream = self.upstream
                if upstream is not None and hasattr(upstream, "on_ping"):
                    upstream.on_ping(self, event.payload)
            elif cls is Pong:
                if self.conn.log.debug_enabled:
                    self.conn.log.debug("websocket pong received")
            elif cls is CloseConnection:
                self._on_close(event)
                return
            if self.state is not OPEN and self.state is not CLOSING:
                return

    def _on_data(self, event) -> None:
        if self.state is not OPEN:
            return
        data = event.data
        limit = self.loc.max_message_size
        parts = self.parts
        if parts is None and event.message_finished:
            # The common case, a message in one piece: the exact UTF-8 size is needed only
            # when the character count could be over the limit.
            if len(data) * 4 > limit and self._size(data) > limit:
                self._too_big()
                return
        else:
            # A message in pieces (fragments, or a frame wsproto hands over as it arrives)
            # gathers as bytes in one bytearray: memory follows the message's size, not the
            # number of its pieces (a million 1-byte or empty fragments cost no more).
            text = type(data) is str
            chunk = data.encode("utf-8", "surrogatepass") if text else data
            if parts is None:
                if len(chunk) > limit:
                    self._too_big()
                    return
                parts = self.parts = bytearray(chunk)
            else:
                if len(parts) + len(chunk) > limit:
                    self._too_big()
                    return
                parts += chunk
            if not event.message_finished:
                return
            data = parts.decode("utf-8", "surrogatepass") if text else bytes(parts)
            self.parts = None
            event = None
        self._deliver(data, event)

    def _deliver(self, data, event) -> None:
        """A whole message to the upstream, or echoed with back-pressure."""
        loc = self.loc
        upstream = self.upstream
        if upstream is not None:
            if event is None or not event.frame_finished:
                event = (TextMessage if type(data) is str else BytesMessage)(data=data)
            upstream.on_message(self, event)
            return
        self.send_message(data)
        if self.queued > loc.send_buffer_size and not self.paused:
            # The client sends faster than it reads its echoes: stop reading until it catches up.
            self.paused = True
            loc.loop.update(self.conn, False, True)

    @staticmethod
    def _size(data) -> int:
        return len(data.encode("utf-8", "surrogatepass")) if type(data) is str else len(data)

    def _too_big(self) -> None:
        self.parts = None
        self.conn.log.info("websocket message over websocket_max_message_size %d",
                           self.loc.max_message_size)
        self.close(1009, "message too big")

    def _on_close(self, event) -> None:
        ws = self.ws
        log = self.conn.log
        if ws.state is _REMOTE_CLOSING:
            # The peer's Close: answer with its code and stop.
            code = event.code
            if self.state is OPEN:
                self.closed_by = "client"
                self.close_code = code
                self.close_reason = event.reason or ""
            self._queue(ws.send(CloseConnection(code=code)))
            self._linger()
        elif ws.state is _OPEN:
            # wsproto's verdict on a bad frame: fail the connection with that code.
            code = event.code
            reason = None
            if code == 1009:
                # a MessageLimit refusal at a frame's header, or Deflate's while inflating
                loc = self.loc
                log.info("websocket message over websocket_max_message_size %d%s",
                         loc.max_message_size,
                         " or frame over websocket_max_frame_size %d" % loc.max_frame_size
                         if loc.max_frame_size else "")
                reason = "message too big"
            elif log.debug_enabled:
                log.debug("websocket invalid frame: %s", event.reason)
            self.closed_by = "server"
            self.close_code = code
            self.close_reason = reason or event.reason or ""
            self._queue(ws.send(CloseConnection(code=code, reason=reason)))
            self._linger()
        else:
            # The answer to our Close.
            self._linger()

    # -- the way out --------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (our side): send Close, wait a bounded time for the peer's."""
        if self.state is not OPEN:
            return
        self.closed_by = "server"
        self.close_code = code
        self.close_reason = reason
        self.parts = None
        self.state = CLOSING
        if self.ws.state is _OPEN:
            self._queue(self.ws.send(CloseConnection(code=code, reason=reason or None)))
        rev = self.conn.read
        rev.cancelable = False
        loop = self.loc.loop
        loop.del_timer(rev)
        loop.add_timer(rev, CLOSE_TIMEOUT)
        if self.paused:
            self.paused = False
            if not self.conn.closed:
                loop.update(self.conn, True, self.out is not None)

    def _linger(self) -> None:
        self.state = LINGERING
        self.parts = None
        self._forget()
        rev = self.conn.read
        rev.cancelable = False
        loop = self.loc.loop
        loop.del_timer(rev)
        loop.add_timer(rev, LINGER_TIMEOUT)
        if self.out is None:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        conn = self.conn
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish(self.close_code, self.close_reason, self.closed_by)
            return
        self.loc.loop.update(conn, True, False)

    def _forget(self) -> None:
        """Leave the registry and tell the upstream, once."""
        sessions = self.loc.sessions
        if sessions.get(self.id) is self:
            del sessions[self.id]
            conn = self.conn
            if conn.log.debug_enabled:
                conn.log.debug("websocket close code=%s reason=\"%s\" by %s",
                               self.close_code if self.close_code is not None else 1006,
                               self.close_reason, self.closed_by or "client")
            upstream = self.upstream
            if upstream is not None:
                upstream.on_close(self, self.close_code if self.close_code is not None else 1006,
                                  self.close_reason)

    def _finish(self, code=None, reason="", by=None) -> None:
        """Close the TCP connection now."""
        if self.state is CLOSED:
            return
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self.closed_by = by
        self._forget()
        self.state = CLOSED
        self.out = None
        self.queued = 0
        conn = self.conn
        if not conn.closed:
            _stats.set_state(conn, None)
            conn.close()

    def abort(self) -> None:
        """Drop the client now, without a close frame (an upstream's DISCONNECT)."""
        self._finish(1006, "", "server")

    def timer(self) -> None:
        state = self.state
        if state is OPEN:
            keepalive.timer_handler(self)
        elif state is CLOSING:
            if self.conn.log.debug_enabled:
                self.conn.log.debug("websocket close timed out")
            self._finish()
        else:
            self._finish()

    def shutdown(self) -> None:
        """Worker exit: a 1001 close handshake, its first bytes handed to the kernel now."""
        if self.state is OPEN:
            self.close(1001, "server shutting down")
            self.flush()


# -- loop entry points --------------------------------------------------------------------------

def ws_read_handler(ev) -> None:
    conn = ev.data
    session = conn.data
    if ev.timedout:
        ev.timedout = False
        session.timer()
        return
    try:
        data = conn.sock.recv(RECV_SIZE)
    except (BlockingIOError, InterruptedError):
        return
    except ConnectionResetError as e:
        conn.log.info("recv() failed (%d: %s)", e.errno, e.strerror)
        session._finish(1006, "", "client")
        return
    except OSError as e:
        conn.log.alert("recv() failed (%d: %s)", e.errno, e.strerror)
        session._finish(1006, "", "client")
        return
    state = session.state
    if not data:
        if state is OPEN or state is CLOSING:
            if conn.log.debug_enabled:
                conn.log.debug("websocket client closed the connection without a close frame")
        session._finish(1006, "", "client")
        return
    if state is LINGERING:
        return
    session.last_in = session.loc.loop.now_ms
    session._input(data)


def ws_write_handler(ev) -> None:
    session = ev.data.data
    session.flush()
