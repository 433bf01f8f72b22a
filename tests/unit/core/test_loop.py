"""EventLoop.run_once with real socketpair fds and a fake clock."""

import selectors
import socket

import pytest

from ngxws.core.connection import ConnectionPool
from ngxws.core.loop import MAX_SELECT_TIMEOUT, Event, EventLoop
from .fakes import FakeClock, FakeLog


class RecordingSelector(selectors.DefaultSelector):
    """Records the timeouts asked for and the epoll_ctl-level calls, but never blocks:
    a test that got the readiness wrong fails instead of hanging."""

    def __init__(self):
        super().__init__()
        self.timeouts = []
        self.calls = []

    def select(self, timeout=None):
        self.timeouts.append(timeout)
        return super().select(0)

    def register(self, fileobj, events, data=None):
        self.calls.append(("register", fileobj, events))
        return super().register(fileobj, events, data)

    def modify(self, fileobj, events, data=None):
        self.calls.append(("modify", fileobj, events))
        return super().modify(fileobj, events, data)

    def unregister(self, fileobj):
        self.calls.append(("unregister", fileobj))
        return super().unregister(fileobj)


@pytest.fixture
def env():
    log = FakeLog()
    clock = FakeClock(5000)
    sel = RecordingSelector()
    loop = EventLoop(log, clock_ns=clock, selector=sel)
    pool = ConnectionPool(loop, log, 16, log_factory=lambda el, conn: el)
    socks = []

    def pair():
        a, b = socket.socketpair()
        a.setblocking(False)
        socks.append(a)
        socks.append(b)
        return pool.get(a, ("127.0.0.1", 1)), b

    yield loop, pool, log, clock, sel, pair
    sel.close()
    for s in socks:
        s.close()


def test_selector_is_made_lazily():
    loop = EventLoop(FakeLog(), clock_ns=FakeClock())
    assert loop.selector is None
    ev = Event(lambda ev: None)
    loop.post(ev)
    loop.run_once()
    assert loop.selector is not None
    loop.selector.close()


def test_now_ms_is_cached_and_refreshed_once_per_iteration(env):
    loop, _, _, clock, _, _ = env
    assert loop.now_ms == 5000
    clock.advance(42)
    assert loop.now_ms == 5000
    loop.run_once()
    assert loop.now_ms == 5042


def test_read_interest_dispatches_read_handler(env):
    loop, _, _, _, sel, pair = env
    conn, peer = pair()
    got = []
    conn.read.handler = lambda ev: got.append(ev.data.sock.recv(10))
    conn.write.handler = lambda ev: got.append("write")
    loop.update(conn, True, False)
    assert sel.get_key(conn.fd).events == selectors.EVENT_READ
    loop.run_once()
    assert got == []
    peer.send(b"hello")
    loop.run_once()
    assert got == [b"hello"]


def test_write_interest_dispatches_write_handler_until_dropped(env):
    loop, _, _, _, sel, pair = env
    conn, _ = pair()
    got = []

    def write_handler(ev):
        got.append(ev.write)
        loop.update(ev.data, False, False)

    conn.write.handler = write_handler
    loop.update(conn, False, True)
    loop.run_once()
    assert got == [True]
    assert conn.fd not in sel.get_map()
    loop.run_once()
    assert got == [True]


def test_update_makes_a_selector_call_only_on_change(env):
    loop, _, _, _, sel, pair = env
    conn, _ = pair()
    fd = conn.fd
    loop.update(conn, True, False)
    loop.update(conn, True, False)
    loop.update(conn, True, True)
    loop.update(conn, True, True)
    loop.update(conn, False, True)
    loop.update(conn, False, False)
    loop.update(conn, False, False)
    assert sel.calls == [
        ("register", fd, selectors.EVENT_READ),
        ("modify", fd, selectors.EVENT_READ | selectors.EVENT_WRITE),
        ("modify", fd, selectors.EVENT_WRITE),
        ("unregister", fd),
    ]
    assert not conn.read.active and not conn.write.active


def test_write_interest_dropped_by_read_handler_is_not_dispatched(env):
    loop, _, _, _, _, pair = env
    conn, peer = pair()
    got = []

    def read_handler(ev):
        got.append("read")
        loop.update(ev.data, True, False)

    conn.read.handler = read_handler
    conn.write.handler = lambda ev: got.append("write")
    loop.update(conn, True, True)
    peer.send(b"x")
    loop.run_once()
    assert got == ["read"]


def test_timeout_is_time_to_nearest_timer_capped(env):
    loop, _, _, clock, sel, _ = env
    loop.run_once()
    assert sel.timeouts[-1] == MAX_SELECT_TIMEOUT / 1000
    ev = Event(lambda ev: None)
    loop.add_timer(ev, 1500)
    loop.run_once()
    assert sel.timeouts[-1] == 1.5
    far = Event(lambda ev: None)
    loop.del_timer(ev)
    loop.add_timer(far, 10 * MAX_SELECT_TIMEOUT)
    loop.run_once()
    assert sel.timeouts[-1] == MAX_SELECT_TIMEOUT / 1000
    clock.advance(10 * MAX_SELECT_TIMEOUT + 1)
    loop.time_update()
    loop.run_once()
    assert sel.timeouts[-1] == 0


def test_timer_expiry_sets_timedout_then_calls_handler(env):
    loop, _, _, clock, _, _ = env
    seen = []
    ev = Event(lambda ev: seen.append((ev.timedout, ev.timer_set)))
    loop.add_timer(ev, 100)
    clock.advance(99)
    loop.run_once()
    assert seen == []
    clock.advance(1)
    loop.run_once()
    assert seen == [(True, False)]
    clock.advance(1000)
    loop.run_once()
    assert seen == [(True, False)]


def test_timer_handler_can_cancel_a_later_timer_of_the_same_batch(env):
    loop, _, _, clock, _, _ = env
    seen = []
    second = Event(lambda ev: seen.append("second"))

    def first_handler(ev):
        seen.append("first")
        loop.del_timer(second)

    first = Event(first_handler)
    loop.add_timer(first, 10)
    loop.add_timer(second, 10)
    clock.advance(10)
    loop.run_once()
    assert seen == ["first"]


def test_posted_events_make_select_not_block_and_run_once(env):
    loop, _, _, _, sel, _ = env
    seen = []
    ev = Event(lambda ev: seen.append(ev.posted))
    loop.add_timer(Event(lambda ev: None), 60_000)
    loop.post(ev)
    loop.post(ev)
    loop.run_once()
    assert sel.timeouts[-1] == 0
    assert seen == [False]
    loop.run_once()
    assert seen == [False]
    assert sel.timeouts[-1] == 60.0


def test_delete_posted(env):
    loop, _, _, _, _, _ = env
    seen = []
    a = Event(lambda ev: seen.append("a"))
    b = Event(lambda ev: (seen.append("b"), loop.delete_posted(a)))
    loop.post(a)
    loop.delete_posted(a)
    loop.run_once()
    assert seen == []
    loop.post(b)
    loop.post(a)
    loop.run_once()
    assert seen == ["b"]


def test_self_reposting_event_runs_once_per_iteration(env):
    loop, _, _, _, _, _ = env
    seen = []

    def again(ev):
        seen.append(1)
        loop.post(ev)

    loop.post(Event(again))
    for i in range(3):
        loop.run_once()
        assert len(seen) == i + 1


def test_order_io_then_timers_then_posted(env):
    loop, _, _, clock, _, pair = env
    conn, peer = pair()
    order = []
    posted = Event(lambda ev: order.append("posted"))
    timer = Event(lambda ev: order.append("timer"))

    def read_handler(ev):
        order.append("read")
        ev.data.sock.recv(10)
        loop.post(posted)

    conn.read.handler = read_handler
    loop.update(conn, True, False)
    loop.add_timer(timer, 5)
    clock.advance(5)
    peer.send(b"x")
    loop.run_once()
    assert order == ["read", "timer", "posted"]


def test_raising_handler_closes_only_its_connection(env):
    loop, pool, log, _, sel, pair = env
    bad, bad_peer = pair()
    good, good_peer = pair()
    got = []

    def bad_handler(ev):
        1 / 0

    bad.read.handler = bad_handler
    good.read.handler = lambda ev: got.append(ev.data.sock.recv(10))
    bad_fd = bad.fd
    loop.update(bad, True, False)
    loop.update(good, True, False)
    bad_peer.send(b"x")
    good_peer.send(b"y")
    loop.run_once()
    assert got == [b"y"]
    assert bad.closed and not good.closed
    assert bad_fd not in sel.get_map() and good.fd in sel.get_map()
    alerts = log.at("alert")
    assert len(alerts) == 1
    assert "bad_handler" in alerts[0] and "ZeroDivisionError" in alerts[0] and "Traceback" in alerts[0]
    assert bad.sock.fileno() == -1 and bad.fd == -1
    good_peer.send(b"z")
    loop.run_once()
    assert got == [b"y", b"z"]


def test_raising_timer_handler_without_connection_keeps_loop(env):
    loop, _, log, clock, _, _ = env

    def boom_handler(ev):
        raise RuntimeError("boom")

    loop.add_timer(Event(boom_handler, data=None), 1)
    clock.advance(1)
    loop.run_once()
    assert "RuntimeError: boom" in log.at("alert")[0]


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt])
def test_system_exit_and_keyboard_interrupt_propagate(env, exc):
    loop, _, _, _, _, _ = env

    def handler(ev):
        raise exc()

    loop.post(Event(handler))
    with pytest.raises(exc):
        loop.run_once()


def test_closed_connection_event_in_same_batch_is_skipped(env):
    loop, _, _, _, sel, pair = env
    c1, p1 = pair()
    c2, p2 = pair()
    called = []

    def closer_handler(ev):
        called.append(ev.data)
        other = c2 if ev.data is c1 else c1
        other.close()

    for c in (c1, c2):
        c.read.handler = closer_handler
        loop.update(c, True, False)
    p1.send(b"x")
    p2.send(b"x")
    loop.run_once()
    # whichever ran first closed the other, whose ready key was then skipped
    assert len(called) == 1
    assert sum(c.closed for c in (c1, c2)) == 1
    assert len(sel.get_map()) == 1
