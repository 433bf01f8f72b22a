"""Connection.close() as the only exit, and the worker_connections pool."""

import itertools
import selectors
import socket

import pytest

from ngxws.core.connection import Connection, ConnectionPool
from ngxws.core.log import ConnectionLog, ErrorLog
from ngxws.core.loop import Event, EventLoop
from .fakes import FakeClock, FakeLog


@pytest.fixture
def env():
    log = FakeLog()
    loop = EventLoop(log, clock_ns=FakeClock(1000), selector=selectors.DefaultSelector())
    pool = ConnectionPool(loop, log, 3, log_factory=lambda el, conn: el)
    socks = []

    def pair():
        a, b = socket.socketpair()
        a.setblocking(False)
        socks.extend((a, b))
        return a, b

    yield loop, pool, log, pair
    loop.selector.close()
    for s in socks:
        s.close()


def test_close_undoes_everything(env):
    loop, pool, log, pair = env
    a, _ = pair()
    conn = pool.get(a, ("127.0.0.1", 5555))
    fd = conn.fd
    loop.update(conn, True, True)
    loop.add_timer(conn.read, 1000)
    loop.add_timer(conn.write, 2000)
    loop.post(conn.read)
    loop.post(conn.write)
    assert pool.free_count == 2
    assert fd in loop.selector.get_map()

    conn.close()

    assert conn.closed
    assert fd not in loop.selector.get_map()
    assert len(loop.selector.get_map()) == 0
    assert len(loop.timers) == 0
    assert not conn.read.timer_set and not conn.write.timer_set
    assert not conn.read.active and not conn.write.active
    assert not conn.read.posted and not conn.write.posted
    assert pool.free_count == 3
    assert conn.fd == -1 and a.fileno() == -1
    assert log.records == []
    # nothing of it runs any more
    ran = []
    conn.read.handler = conn.write.handler = ran.append
    loop.post(Event(lambda ev: None))      # keeps select from blocking
    loop.run_once()
    assert ran == []


def test_second_close_logs_alert_and_returns(env):
    _, pool, log, pair = env
    a, _ = pair()
    conn = pool.get(a, ("127.0.0.1", 1))
    conn.close()
    conn.close()
    assert log.at("alert") == ["connection already closed"]
    assert pool.free_count == 3


def test_pool_caps_worker_connections(env):
    _, pool, _, pair = env
    conns = [pool.get(pair()[0], ("127.0.0.1", i)) for i in range(3)]
    assert all(conns)
    assert pool.free_count == 0 and pool.used == 3
    assert pool.get(pair()[0], ("127.0.0.1", 9)) is None
    conns[1].close()
    assert pool.free_count == 1
    again = pool.get(pair()[0], ("127.0.0.1", 10))
    assert again is not None and again is not conns[1]


def test_numbers_come_from_the_counter(env):
    loop, _, log, pair = env
    shared = itertools.count(41).__next__
    pool = ConnectionPool(loop, log, 10, counter=shared, log_factory=lambda el, c: el)
    a = pool.get(pair()[0], ("127.0.0.1", 1))
    b = pool.get(pair()[0], ("127.0.0.1", 2))
    assert (a.number, b.number) == (41, 42)


def test_fields_after_get(env):
    _, pool, _, pair = env
    a, _ = pair()
    conn = pool.get(a, ("::1", 4242, 0, 0), listening="LS")
    assert conn.addr_text == "::1"
    assert conn.peer == ("::1", 4242, 0, 0)
    assert conn.listening == "LS"
    assert conn.sock is a and conn.fd == a.fileno()
    assert conn.read.data is conn and conn.write.data is conn
    assert conn.write.write and not conn.read.write
    assert (conn.requests, conn.sent, conn.data, conn.closed, conn.close_requested) == (0, 0, None, False, False)
    assert conn.local == a.getsockname()
    assert not hasattr(conn, "__dict__")


def test_freed_slot_resumes_waiting_listenings(env):
    _, pool, _, pair = env

    class Ls:
        resumed = 0

        def resume_accept(self):
            self.resumed += 1

    ls = Ls()
    conns = [pool.get(pair()[0], ("127.0.0.1", i)) for i in range(3)]
    pool.wait_for_free(ls)
    pool.wait_for_free(ls)
    conns[0].close()
    conns[1].close()
    assert ls.resumed == 1


def test_default_log_is_connection_log(env):
    loop, _, _, pair = env
    pool = ConnectionPool(loop, ErrorLog(), 2)
    conn = pool.get(pair()[0], ("127.0.0.1", 1))
    assert isinstance(conn.log, ConnectionLog) and conn.log.conn is conn


def test_connection_is_small():
    # per-connection memory is a product goal (36k idle clients at <= 8 KiB each)
    import sys
    assert not hasattr(Connection, "__dict__") or "__slots__" in Connection.__dict__
    a, b = socket.socketpair()
    try:
        loop = EventLoop(FakeLog(), clock_ns=FakeClock())
        conn = ConnectionPool(loop, FakeLog(), 1, log_factory=lambda el, c: el).get(a, ("x", 1))
        size = sys.getsizeof(conn) + sys.getsizeof(conn.read) + sys.getsizeof(conn.write)
        assert size < 512
    finally:
        a.close()
        b.close()
