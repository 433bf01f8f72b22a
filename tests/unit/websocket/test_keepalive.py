from types import SimpleNamespace

from ngxws.core.loop import Event
from ngxws.websocket import keepalive


class FakeLoop:
    def __init__(self, now):
        self.now_ms = now
        self.armed = None

    def add_timer(self, ev, ms):
        self.armed = ms


def fake(now=10_000, last_in=10_000, last_ping=10_000, ping=1000, idle=3000):
    loop = FakeLoop(now)
    log = SimpleNamespace(debug_enabled=True, lines=[])
    log.debug = lambda fmt, *a: log.lines.append(fmt % a)
    conn = SimpleNamespace(read=Event(), log=log)
    s = SimpleNamespace(loc=SimpleNamespace(loop=loop, ping_interval=ping, idle_interval=idle),
                        conn=conn, last_in=last_in, last_ping=last_ping, queued=[], closed=None,
                        ws=SimpleNamespace(send=lambda ev: b"PING"))
    s._queue = s.queued.append
    s.send_ping = lambda payload=b"": s.queued.append(b"PING")
    s.close = lambda code, reason: setattr(s, "closed", (code, reason))
    return s, loop


def test_arm_picks_the_earliest_due_time():
    s, loop = fake()
    keepalive.arm(s)
    assert loop.armed == 1000 and s.conn.read.cancelable


def test_both_off_arms_nothing():
    s, loop = fake(ping=0, idle=0)
    keepalive.arm(s)
    assert loop.armed is None


def test_ping_when_nothing_received():
    s, loop = fake(now=11_000)
    keepalive.timer_handler(s)
    assert s.queued == [b"PING"] and s.last_ping == 11_000 and s.closed is None
    # next: the idle deadline or the next ping, whichever is first
    assert loop.armed == 1000
    assert "websocket ping sent" in s.conn.log.lines


def test_received_frame_postpones_everything():
    s, loop = fake(now=11_000, last_in=10_900)
    keepalive.timer_handler(s)
    assert s.queued == [] and s.closed is None
    # due at 11,900, rounded up to the next multiple of ROUND_MS
    assert loop.armed == 12_000 - 11_000


def test_nearby_deadlines_share_one_wakeup():
    # clients whose pings fall due within one ROUND_MS window get the same deadline
    deadlines = set()
    for last_in in range(10_001, 10_001 + keepalive.ROUND_MS - 1, 7):
        s, loop = fake(now=10_300, last_in=last_in, last_ping=0, idle=0)
        keepalive.arm(s)
        due = loop.now_ms + loop.armed
        assert last_in + 1000 <= due < last_in + 1000 + keepalive.ROUND_MS
        deadlines.add(due)
    assert len(deadlines) == 1


def test_idle_closes_with_1001():
    s, loop = fake(now=13_000, last_in=10_000, last_ping=12_000)
    keepalive.timer_handler(s)
    assert s.closed == (1001, "idle timeout")
    assert any("idle timeout" in line for line in s.conn.log.lines)


def test_ping_only():
    s, loop = fake(now=50_000, last_in=10_000, last_ping=10_000, idle=0)
    keepalive.timer_handler(s)
    assert s.queued == [b"PING"] and s.closed is None and loop.armed == 1000
