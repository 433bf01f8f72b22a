"""Ping and idle timers, at no cost per message.

Theory of operation
-------------------
A session records two times, `last_in` (a frame, or part of one, received: one attribute store
per read, on the cached loop clock) and `last_ping` (our last keep-alive PING). Nothing else
happens per message: no timer is moved. The one timer of a session (its connection's read event) fires at
the earliest moment something *could* be due, looks at the two times, does what is due, and
re-arms for the next such moment:

- `idle_interval` after the last frame received, the server closes with 1001 (the close wait is
  bounded, so a dead peer is dropped). Frames we send do not count: pushes to a dead client do
  not keep it alive.
- `ping_interval` after the last frame received and the last PING sent, the server sends a
  PING; the PONG (any frame) then moves `last_in`. So a PING goes out after `ping_interval`
  without a frame in either direction, as the seed did, and also to a client that only
  receives: messages we send prove nothing about the peer, and a browser that only listens
  sends nothing but PONGs, so without them it would hit the idle timeout while healthy.

Deadlines are rounded up to a multiple of `ROUND_MS` (250 ms): the pings of clients that
connected close together then go out in one loop iteration and their pongs come back together,
instead of a wakeup each (36,000 clients pinged every 30 s: 6.5-7.0% -> 3.5-4.5% of a core in
interleaved runs). A ping or idle close is thus up to 250 ms later than the interval says.

An interval of 0 turns that timer off. Keep-alive timers are cancelable: they do not hold up a
worker's exit.
"""

from __future__ import annotations


def _next_due(session, now: int) -> int | None:
    loc = session.loc
    due = None
    if loc.idle_interval:
        due = session.last_in + loc.idle_interval
    if loc.ping_interval:
        last = session.last_in if session.last_in > session.last_ping else session.last_ping
        ping_due = last + loc.ping_interval
        if due is None or ping_due < due:
            due = ping_due
    return due


#: keep-alive deadlines are rounded up to a multiple of this many ms, so that the pings of
#: clients that connected close together go out in one loop iteration (and their pongs come
#: back together) instead of one wakeup each: at most this much later than the interval says
ROUND_MS = 250


def arm(session) -> None:
    loop = session.loc.loop
    now = loop.now_ms
    due = _next_due(session, now)
    if due is None:
        return
    due = -(-due // ROUND_MS) * ROUND_MS
    rev = session.conn.read
    rev.cancelable = True
    loop.add_timer(rev, due - now if due > now else 1)


def timer_handler(session) -> None:
    loc = session.loc
    loop = loc.loop
    now = loop.now_ms
    conn = session.conn
    if loc.idle_interval and now - session.last_in >= loc.idle_interval:
        if conn.log.debug_enabled:
            conn.log.debug("websocket idle timeout, no frame for %d ms", now - session.last_in)
        session.close(1001, "idle timeout")
        return
    if loc.ping_interval:
        last = session.last_in if session.last_in > session.last_ping else session.last_ping
        if now - last >= loc.ping_interval:
            if conn.log.debug_enabled:
                conn.log.debug("websocket ping sent")
            session.send_ping()
            session.last_ping = now
    arm(session)
