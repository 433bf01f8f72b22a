"""Listening: open() in nginx's words, accept with its caps and pauses."""

import errno
import json
import os
import select
import selectors
import socket
import subprocess
import sys
import textwrap

import pytest

from ngxws.core.connection import ConnectionPool
from ngxws.core.listening import ACCEPT_DELAY, ListenError, Listening, accept_handler
from ngxws.core.loop import EventLoop
from .fakes import FakeClock, FakeLog


class NonBlockingSelector(selectors.DefaultSelector):
    """Never waits: a test that expected readiness wrongly fails instead of hanging."""

    def select(self, timeout=None):
        return super().select(0)


def has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def env():
    log = FakeLog()
    clock = FakeClock(10_000)
    loop = EventLoop(log, clock_ns=clock, selector=NonBlockingSelector())
    pool = ConnectionPool(loop, log, 8, log_factory=lambda el, conn: el)
    cleanup = []
    yield loop, pool, log, clock, cleanup
    for x in cleanup:
        x.close()
    loop.selector.close()


def run_until(loop, cond, limit=200):
    """Iterate the (never blocking) loop until cond() holds, at most `limit` times."""
    for _ in range(limit):
        if cond():
            return True
        loop.run_once()
    return cond()


def make_listening(env, host="127.0.0.1", port=0, **kw):
    loop, pool, _, _, cleanup = env
    accepted = []
    ls = Listening(host, port, handler=accepted.append, pool=pool, **kw)
    ls.open()
    cleanup.append(ls)
    loop.add_listening(ls)
    return ls, accepted


def connect(env, ls):
    c = socket.socket(ls.family)
    env[4].append(c)
    c.settimeout(5)
    c.connect((ls.host, ls.port))
    return c


def test_open_ipv4_ephemeral(env):
    ls, _ = make_listening(env)
    assert ls.port != 0
    assert ls.addr_text == "127.0.0.1:%d" % ls.port
    assert ls.sock.getsockname() == ("127.0.0.1", ls.port)
    assert ls.sock.getblocking() is False
    assert ls.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    assert ls.fd == ls.sock.fileno()


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_open_ipv6_ephemeral(env):
    ls, accepted = make_listening(env, host="[::1]")
    assert ls.host == "::1" and ls.family == socket.AF_INET6
    assert ls.addr_text == "[::1]:%d" % ls.port
    assert ls.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    connect(env, ls)
    assert run_until(env[0], lambda: accepted)
    assert accepted[0].addr_text == "::1"


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6")
def test_ipv6only_off(env):
    ls, _ = make_listening(env, host="::", ipv6only=False)
    assert ls.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


def test_reuseport(env):
    ls, _ = make_listening(env, reuseport=True)
    other = Listening("127.0.0.1", ls.port, reuseport=True)
    other.open()
    env[4].append(other)
    assert other.port == ls.port


def test_address_in_use_message_is_nginx(env):
    ls, _ = make_listening(env)
    again = Listening("127.0.0.1", ls.port)
    with pytest.raises(ListenError) as info:
        again.open()
    assert str(info.value) == "bind() to 127.0.0.1:%d failed (98: Address already in use)" % ls.port
    assert info.value.errno == errno.EADDRINUSE
    assert again.sock is None


def _two_adjacent_listening(env):
    """Bind two adjacent ports below the ephemeral range, where the kernel hands out none."""
    import random

    start = random.randrange(20000, 30000)
    for p in range(start, start + 2000, 3):
        first = Listening("127.0.0.1", p)
        try:
            first.open()
        except ListenError:
            continue
        second = Listening("127.0.0.1", p + 1)
        try:
            second.open()
        except ListenError:
            first.close()
            continue
        env[4].extend((first, second))
        return p
    pytest.fail("no two adjacent free ports between %d and %d" % (start, start + 2000))


def test_port_range_takes_next_free_port(env):
    p = _two_adjacent_listening(env)
    ls = Listening("127.0.0.1", "%d-%d" % (p, p + 40))
    ls.open()
    env[4].append(ls)
    assert p + 2 <= ls.port <= p + 40
    assert ls.addr_text == "127.0.0.1:%d" % ls.port


def test_port_range_all_busy(env):
    p = _two_adjacent_listening(env)
    ls = Listening("127.0.0.1", "%d-%d" % (p, p + 1))
    with pytest.raises(ListenError) as info:
        ls.open()
    assert str(info.value) == "bind() to 127.0.0.1:%d-%d failed (98: Address already in use)" % (p, p + 1)


def test_other_bind_error_is_not_retried(env):
    ls = Listening("192.0.2.1", 0)     # TEST-NET: not an address of this host
    with pytest.raises(ListenError) as info:
        ls.open()
    assert str(info.value) == "bind() to 192.0.2.1:0 failed (99: Cannot assign requested address)"


def test_bad_port():
    with pytest.raises(ListenError):
        Listening("127.0.0.1", "9100-9000")
    with pytest.raises(ListenError):
        Listening("127.0.0.1", "http")


def test_accept_hands_nonblocking_nodelay_connections(env):
    loop, pool, _, _, _ = env
    ls, accepted = make_listening(env)
    clients = [connect(env, ls) for _ in range(3)]
    assert run_until(loop, lambda: len(accepted) == 3)
    for conn in accepted:
        env[4].append(conn.sock)
        assert conn.sock.getblocking() is False
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert conn.listening is ls
        assert conn.addr_text == "127.0.0.1"
    assert {c.peer for c in accepted} == {c.getsockname() for c in clients}
    assert pool.free_count == 5


class FakeListenSock:
    """Stands in for a listen socket: hands out socketpair ends, then raises."""

    def __init__(self, socks, then=BlockingIOError):
        self.socks = list(socks)
        self.then = then
        self.calls = 0

    def accept(self):
        self.calls += 1
        if self.socks:
            return self.socks.pop(0), ("127.0.0.1", 1000 + self.calls)
        raise self.then


def pairs(env, n):
    out = []
    for _ in range(n):
        a, b = socket.socketpair()
        env[4].extend((a, b))
        out.append(a)
    return out


def fake_listening(env, sock, backlog=511):
    loop, pool, _, _, cleanup = env
    accepted = []
    ls = Listening("127.0.0.1", 8080, handler=accepted.append, pool=pool, backlog=backlog)
    real = socket.socket()       # a real fd for the selector
    cleanup.append(real)
    ls.sock, ls.fd = sock, real.fileno()
    ls.family = socket.AF_UNIX   # socketpair ends take no TCP_NODELAY
    loop.add_listening(ls)
    return ls, accepted


def test_accept_at_most_backlog_per_wakeup(env):
    fake = FakeListenSock(pairs(env, 5))
    ls, accepted = fake_listening(env, fake, backlog=2)
    accept_handler(ls.read)
    assert len(accepted) == 2
    accept_handler(ls.read)
    assert len(accepted) == 4
    accept_handler(ls.read)
    assert len(accepted) == 5 and fake.calls == 6


def test_pool_exhausted_closes_and_pauses_until_a_slot_frees(env):
    loop, _, log, _, _ = env
    pool = ConnectionPool(loop, log, 1, log_factory=lambda el, conn: el)
    accepted = []
    ls = Listening("127.0.0.1", 0, handler=accepted.append, pool=pool)
    ls.open()
    env[4].append(ls)
    loop.add_listening(ls)
    c1 = connect(env, ls)
    c2 = connect(env, ls)
    assert run_until(loop, lambda: log.at("alert"))
    assert log.at("alert") == ["1 worker_connections are not enough while accepting new connection on %s"
                               % ls.addr_text]
    assert len(accepted) == 1
    # the refused client sees the close, the accepted one does not
    c2.settimeout(5)
    assert c2.recv(1) == b""
    # paused: the listen socket is out of the selector, so a waiting client cannot spin the loop
    assert ls.paused and ls.fd not in loop.selector.get_map()
    connect(env, ls)
    for _ in range(5):
        loop.run_once()
    assert len(accepted) == 1 and len(log.at("alert")) == 1
    accepted[0].close()
    assert not ls.paused and ls.fd in loop.selector.get_map()
    assert run_until(loop, lambda: len(accepted) == 2)
    accepted[1].close()
    c1.close()


def test_emfile_pauses_accept_for_500ms(env):
    loop, _, log, clock, _ = env
    fake = FakeListenSock([], then=OSError(errno.EMFILE, "Too many open files"))
    ls, accepted = fake_listening(env, fake)
    accept_handler(ls.read)
    assert log.at("crit") == [
        "accept4() failed (24: Too many open files) while accepting new connection on 127.0.0.1:8080"]
    assert ls.paused and ls.fd not in loop.selector.get_map()
    assert ls.read.timer_set and ls.read.deadline == loop.now_ms + ACCEPT_DELAY
    fake.socks = pairs(env, 1)
    fake.then = BlockingIOError
    clock.advance(ACCEPT_DELAY - 1)
    loop.run_once()
    assert ls.paused and accepted == []
    clock.advance(1)
    loop.run_once()
    assert not ls.paused and ls.fd in loop.selector.get_map()
    assert len(accepted) == 1 and not ls.read.timedout


def test_enfile_too_and_other_errors(env):
    _, _, log, _, _ = env
    fake = FakeListenSock([], then=OSError(errno.ENFILE, "Too many open files in system"))
    ls, _ = fake_listening(env, fake)
    accept_handler(ls.read)
    assert log.at("crit")[0].startswith("accept4() failed (23: Too many open files in system)")
    ls.resume_accept()
    ls.loop.del_timer(ls.read)
    fake.then = OSError(errno.ENOBUFS, "No buffer space available")
    accept_handler(ls.read)
    assert log.at("alert")[0].startswith("accept4() failed (105: No buffer space available)")
    assert not ls.paused


def test_connection_aborted_is_skipped(env):
    _, _, log, _, _ = env
    socks = pairs(env, 1)

    class Aborting(FakeListenSock):
        def accept(self):
            if self.calls == 0:
                self.calls += 1
                raise ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort")
            return super().accept()

    ls, accepted = fake_listening(env, Aborting(socks))
    accept_handler(ls.read)
    assert len(accepted) == 1
    assert log.at("error")[0].startswith("accept4() failed (103: ")


def test_disable_accept_stops_for_good(env):
    loop, _, _, clock, _ = env
    fake = FakeListenSock([], then=OSError(errno.EMFILE, "Too many open files"))
    ls, accepted = fake_listening(env, fake)
    accept_handler(ls.read)
    ls.disable_accept()
    assert not ls.read.timer_set and ls.fd not in loop.selector.get_map()
    fake.socks = pairs(env, 1)
    ls.resume_accept()                   # a freed slot must not undo a shutdown
    assert ls.fd not in loop.selector.get_map()
    accept_handler(ls.read)
    assert accepted == []
    ls.enable_accept()
    assert ls.fd in loop.selector.get_map()
    accept_handler(ls.read)
    assert len(accepted) == 1


def test_handler_exception_closes_the_new_connection_and_keeps_listening(env):
    loop, pool, log, _, _ = env
    ls, _ = make_listening(env)
    got = []

    def init_connection(conn):
        got.append(conn)
        raise ValueError("bad init")

    ls.handler = init_connection
    connect(env, ls)
    assert run_until(loop, lambda: got)
    assert got[0].closed and pool.free_count == 8
    assert "ValueError: bad init" in log.at("alert")[0]
    assert ls.fd in loop.selector.get_map() and not ls.closed


def test_close(env):
    loop, _, _, _, _ = env
    ls, _ = make_listening(env)
    fd = ls.fd
    ls.close()
    assert ls.closed and fd not in loop.selector.get_map() and ls.sock.fileno() == -1
    ls.close()


EMFILE_SCRIPT = textwrap.dedent("""
    import json, os, resource, socket, sys
    sys.path.insert(0, sys.argv[1])
    from ngxws.core.connection import ConnectionPool
    from ngxws.core.listening import Listening
    from ngxws.core.loop import EventLoop

    class Log:
        debug_enabled = False
        def __init__(self): self.records = []
        def __getattr__(self, level):
            return lambda fmt, *a: self.records.append([level, fmt % a if a else fmt])

    class Clock:
        ns = 0
        def __call__(self): return self.ns

    log, clock = Log(), Clock()
    loop = EventLoop(log, clock_ns=clock)
    pool = ConnectionPool(loop, log, 16, log_factory=lambda el, c: el)
    accepted = []
    ls = Listening("127.0.0.1", 0, handler=accepted.append, pool=pool)
    ls.open()
    loop.add_listening(ls)
    client = socket.create_connection(("127.0.0.1", ls.port))
    # use up every descriptor below a lowered limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    fillers = []
    try:
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    loop.run_once()
    out = {"crit": [m for l, m in log.records if l == "crit"], "paused": ls.paused,
           "timer": ls.read.timer_set, "accepted": len(accepted)}
    for fd in fillers:
        os.close(fd)
    clock.ns += 500 * 1000000
    for _ in range(10):
        if accepted:
            break
        loop.run_once()
    out["after"] = len(accepted)
    out["paused_after"] = ls.paused
    print(json.dumps(out))
""")


def test_real_emfile_in_subprocess():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    proc = subprocess.run([sys.executable, "-c", EMFILE_SCRIPT, root], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["crit"] == ["accept4() failed (24: Too many open files) while accepting new connection "
                           "on 127.0.0.1:%s" % out["crit"][0].rsplit(":", 1)[1]]
    assert out["paused"] and out["timer"] and out["accepted"] == 0
    assert out["after"] == 1 and not out["paused_after"]


# EPOLLEXCLUSIVE: the kernel's own record of each registration is read back from
# /proc/self/fdinfo of the selector's epoll fd ("tfd: FD events: HEX ...").

EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)
needs_exclusive = pytest.mark.skipif(not EXCLUSIVE or not os.path.exists("/proc/self/fdinfo"),
                                     reason="no EPOLLEXCLUSIVE or no /proc here")


def epoll_events(loop, fd):
    """The event mask the kernel holds for ``fd`` in the loop's epoll, None if not registered."""
    with open("/proc/self/fdinfo/%d" % loop.selector.fileno()) as f:
        for line in f:
            if line.startswith("tfd:"):
                words = line.split()
                if int(words[1]) == fd:
                    return int(words[3], 16)
    return None


@needs_exclusive
def test_listening_is_registered_with_epollexclusive(env):
    loop, _, _, _, _ = env
    ls, accepted = make_listening(env)
    events = epoll_events(loop, ls.fd)
    assert events & EXCLUSIVE and events & select.EPOLLIN and not events & select.EPOLLOUT
    connect(env, ls)
    assert run_until(loop, lambda: len(accepted) == 1)
    env[4].append(accepted[0].sock)


@needs_exclusive
def test_accept_on_and_off_round_trips_without_einval(env):
    # every switch is a delete and an add: EPOLL_CTL_MOD on an exclusive fd is EINVAL
    loop, _, _, _, _ = env
    ls, accepted = make_listening(env)
    ls.disable_accept()                      # graceful shutdown, reload
    assert epoll_events(loop, ls.fd) is None and not ls.read.active
    ls.enable_accept()
    assert epoll_events(loop, ls.fd) & EXCLUSIVE
    ls.pause_accept()                        # EMFILE or a full pool
    assert epoll_events(loop, ls.fd) is None
    ls.resume_accept()
    assert epoll_events(loop, ls.fd) & EXCLUSIVE and ls.fd in loop.selector.get_map()
    for _ in range(3):
        connect(env, ls)
    assert run_until(loop, lambda: len(accepted) == 3)
    env[4].extend(c.sock for c in accepted)
    # each accepting wakeup re-adds the fd (requeue_accept), with the flag again
    assert epoll_events(loop, ls.fd) & EXCLUSIVE
    fd = ls.fd
    ls.close()
    assert epoll_events(loop, fd) is None and fd not in loop.selector.get_map()


@needs_exclusive
def test_one_wakeup_drains_every_pending_connection(env):
    # one exclusive wakeup may stand for several connections: all of them are taken
    loop, _, _, _, _ = env
    ls, accepted = make_listening(env)
    for _ in range(5):
        connect(env, ls)
    ready = loop.selector.select(1)
    assert [key.data for key, _ in ready] == [ls]
    accept_handler(ls.read)
    assert len(accepted) == 5
    env[4].extend(c.sock for c in accepted)


@needs_exclusive
def test_emfile_pause_and_resume_keep_the_flag(env):
    loop, _, _, clock, _ = env
    fake = FakeListenSock([], then=OSError(errno.EMFILE, "Too many open files"))
    ls, accepted = fake_listening(env, fake)
    assert epoll_events(loop, ls.fd) & EXCLUSIVE
    accept_handler(ls.read)
    assert epoll_events(loop, ls.fd) is None
    fake.socks = pairs(env, 1)
    fake.then = BlockingIOError
    clock.advance(ACCEPT_DELAY)
    loop.run_once()
    assert len(accepted) == 1 and epoll_events(loop, ls.fd) & EXCLUSIVE


class RefusingEpoll:
    """A kernel that refuses EPOLLEXCLUSIVE with EINVAL (as for an fd that is itself an epoll)."""

    def __init__(self, real):
        self.real = real
        self.closed = False

    def register(self, fd, events):
        if events & EXCLUSIVE:
            raise OSError(errno.EINVAL, "Invalid argument")
        self.real.register(fd, events)

    def unregister(self, fd):
        self.real.unregister(fd)

    def close(self):
        self.closed = True
        self.real.close()


@needs_exclusive
def test_einval_falls_back_to_plain_registration_for_good(env):
    loop, _, _, _, _ = env
    refusing = RefusingEpoll(select.epoll.fromfd(os.dup(loop.selector.fileno())))
    loop._epoll = refusing
    ls, accepted = make_listening(env)
    events = epoll_events(loop, ls.fd)
    assert events & select.EPOLLIN and not events & EXCLUSIVE
    assert loop._epoll is False and refusing.closed
    ls.disable_accept()
    ls.enable_accept()
    assert not epoll_events(loop, ls.fd) & EXCLUSIVE
    connect(env, ls)
    assert run_until(loop, lambda: len(accepted) == 1)
    env[4].append(accepted[0].sock)


def test_plain_registration_without_the_flag(env, monkeypatch):
    # a Python without select.EPOLLEXCLUSIVE
    from ngxws.core import loop as loop_module
    monkeypatch.setattr(loop_module, "EPOLLEXCLUSIVE", 0)
    loop, _, _, _, _ = env
    ls, accepted = make_listening(env)
    if os.path.exists("/proc/self/fdinfo") and isinstance(loop.selector, selectors.EpollSelector):
        assert not epoll_events(loop, ls.fd) & (1 << 28)   # EPOLLEXCLUSIVE's bit
    ls.disable_accept()
    ls.enable_accept()
    connect(env, ls)
    assert run_until(loop, lambda: len(accepted) == 1)
    env[4].append(accepted[0].sock)


def test_plain_registration_on_a_selector_that_is_not_epoll():
    log = FakeLog()
    sel = selectors.PollSelector()
    loop = EventLoop(log, clock_ns=FakeClock(), selector=sel)
    pool = ConnectionPool(loop, log, 4, log_factory=lambda el, conn: el)
    ls = Listening("127.0.0.1", 0, handler=lambda conn: conn.close(), pool=pool)
    ls.open()
    try:
        loop.add_listening(ls)
        ls.pause_accept()
        ls.resume_accept()
        assert ls.fd in sel.get_map() and loop._epoll is False
    finally:
        ls.close()
        sel.close()
