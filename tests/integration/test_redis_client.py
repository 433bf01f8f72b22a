"""core/redis.py against a real redis-server: commands, pipelining, pub/sub, AUTH, a database
number, a unix socket, RESP3, Redis killed, stopped (SIGSTOP: a Redis that does not answer) and
restarted while the client runs: callbacks get errors, the queue stays bounded, the error log
says it once, the link comes back by itself. The client runs on a real EventLoop in this process;
what Redis holds is checked with redis-cli."""

import os
import signal
import time

import pytest

from ngxws.core import resp
from ngxws.core.connection import ConnectionPool
from ngxws.core.log import DEBUG, INFO, ErrorLog
from ngxws.core.loop import Event, EventLoop
from ngxws.core.redis import (RedisClient, RedisSubscriber, RedisUnavailable, ReplyError, State,
                              parse_redis_url)

from tests.helpers.redis import RedisServer, free_port
from tests.unit.core.fakes import MemorySink

READERS = {"ngxws": resp.Reader, "hiredis": resp._HiredisReader}


class Harness:
    """A loop, a pool and an error log in memory; ``run_until`` turns the loop, bounded."""

    def __init__(self, level=INFO):
        self.sink = MemorySink()
        self.log = ErrorLog([(self.sink, level)])
        self.loop = EventLoop(self.log)
        self.pool = ConnectionPool(self.loop, self.log, 64)
        # keeps select() from sleeping past the deadline check
        self._tick = Event(lambda ev: None, self)
        self.links = []

    def client(self, url, **kw):
        c = RedisClient(self.loop, self.pool, parse_redis_url(url), self.log, **kw)
        self.links.append(c)
        c.start()
        return c

    def subscriber(self, url, **kw):
        s = RedisSubscriber(self.loop, self.pool, parse_redis_url(url), self.log, **kw)
        self.links.append(s)
        s.start()
        return s

    def run_until(self, cond, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s; log:\n%s" % (what, self.sink.text()))
            self.loop.add_timer(self._tick, 20)
            self.loop.run_once()

    def call(self, client, *args):
        """One command, run to its reply."""
        out = []
        assert client.command(args, lambda reply, data: out.append(reply)) is not None
        self.run_until(lambda: out, what="reply to %r" % (args,))
        return out[0]

    def lines(self, level):
        return [ln for ln in self.sink.text().splitlines() if "[%s]" % level in ln]

    def close(self):
        for link in self.links:
            link.close()
        assert self.pool.used == 0
        text = self.sink.text()
        assert "Traceback" not in text and "[alert]" not in text, text


@pytest.fixture
def redis(tmp_path):
    r = RedisServer(tmp_path / "redis").start()
    yield r
    r.stop()


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


@pytest.mark.parametrize("reader", sorted(READERS))
def test_commands_and_reply_types(redis, h, reader):
    c = h.client(redis.url, reader_factory=READERS[reader])
    assert h.call(c, "SET", "k", b"v\r\n\x00") == b"OK"
    assert h.call(c, "GET", "k") == b"v\r\n\x00"
    assert h.call(c, "INCRBY", "n", 5) == 5
    assert h.call(c, "GET", "missing") is None
    assert h.call(c, "RPUSH", "l", "a", "b") == 2
    assert h.call(c, "LRANGE", "l", 0, -1) == [b"a", b"b"]
    err = h.call(c, "NOSUCHCOMMAND")
    assert isinstance(err, ReplyError) and "unknown command" in str(err)
    # the link is still good after an error reply
    assert h.call(c, "PING") == b"PONG"
    assert redis.cli("GET", "n").strip() == "5"


@pytest.mark.parametrize("reader", sorted(READERS))
def test_pipelined_in_order_with_data(redis, h, reader):
    c = h.client(redis.url, reader_factory=READERS[reader])
    h.run_until(lambda: c.ready, what="ready")
    got = []
    for i in range(2000):
        assert c.command(("INCR", "counter"), lambda reply, data: got.append((data, reply)), i)
    # one iteration: everything leaves together, nothing has come back yet
    assert c.pending == 2000
    h.run_until(lambda: len(got) == 2000, what="2000 replies")
    assert got == [(i, i + 1) for i in range(2000)]
    assert c.pending == 0
    assert redis.cli("GET", "counter").strip() == "2000"


def test_pubsub(redis, h):
    msgs, confirmed = [], []
    s = h.subscriber(redis.url, message_handler=lambda ch, data: msgs.append((ch, data)),
                     subscribed_handler=confirmed.append)
    s.subscribe(b"a")
    s.subscribe(b"b")
    s.subscribe(b"a")  # already wanted: nothing more
    h.run_until(lambda: sorted(confirmed) == [b"a", b"b"], what="subscriptions")
    assert redis.cli("PUBLISH", "a", "one").strip() == "1"
    redis.cli("PUBLISH", "b", "two")
    redis.cli("PUBLISH", "c", "nobody")
    h.run_until(lambda: len(msgs) == 2, what="two messages")
    assert msgs == [(b"a", b"one"), (b"b", b"two")]
    s.unsubscribe(b"a")
    h.run_until(lambda: redis.cli("PUBSUB", "NUMSUB", "a").split() == ["a", "0"],
                what="unsubscribed in redis")
    redis.cli("PUBLISH", "a", "gone")
    redis.cli("PUBLISH", "b", "three")
    h.run_until(lambda: len(msgs) == 3, what="third message")
    assert msgs[2] == (b"b", b"three")
    # the client and the subscriber are separate links
    c = h.client(redis.url)
    assert h.call(c, "PUBLISH", "b", "four") == 1
    h.run_until(lambda: len(msgs) == 4, what="fourth message")


def test_auth_with_password(tmp_path, h):
    r = RedisServer(tmp_path / "redis", password="s3cret:pw").start()
    try:
        good = "redis://:s3cret%%3Apw@127.0.0.1:%d" % r.port
        c = h.client(good)
        assert h.call(c, "SET", "k", "1") == b"OK"
        s = h.subscriber(good, message_handler=lambda ch, d: None)
        h.run_until(lambda: s.ready, what="subscriber ready")
        # a user name: redis 6 ACL's "default" user with the same password
        c2 = h.client("redis://default:s3cret%%3Apw@127.0.0.1:%d" % r.port)
        assert h.call(c2, "GET", "k") == b"1"

        bad = h.client("redis://:wrong@127.0.0.1:%d" % r.port, backoff_min=50, backoff_max=200)
        reply = h.call(bad, "GET", "k")
        assert isinstance(reply, RedisUnavailable)
        assert not bad.ready
        # a few retries fail the same way: one error line for the whole outage
        h.run_until(lambda: bad._attempts >= 4, what="retries")
        errors = [ln for ln in h.lines("error") if "wrong@" in ln or "refused the connection" in ln]
        assert len(errors) == 1, h.sink.text()
        assert "WRONGPASS" in errors[0] or "invalid" in errors[0]
        # the password never reaches the log
        assert "wrong" not in h.sink.text() and "s3cret" not in h.sink.text()
        # without a password: NOAUTH on the first command, which is an error reply, not a reset
        noauth = h.client("redis://127.0.0.1:%d" % r.port)
        reply = h.call(noauth, "GET", "k")
        assert isinstance(reply, ReplyError) and "NOAUTH" in str(reply)
    finally:
        r.stop()


def test_database_number(redis, h):
    c = h.client(redis.url + "/3")
    assert h.call(c, "SET", "in3", "yes") == b"OK"
    assert redis.cli("-n", "3", "GET", "in3").strip() == "yes"
    assert redis.cli("-n", "0", "EXISTS", "in3").strip() == "0"
    bad = h.client(redis.url + "/99999", backoff_min=50, backoff_max=100)
    reply = h.call(bad, "GET", "x")
    assert isinstance(reply, RedisUnavailable)
    assert any("DB index" in ln or "out of range" in ln for ln in h.lines("error")), h.sink.text()


def test_unix_socket(redis, h):
    c = h.client("unix:" + redis.unixsocket)
    assert h.call(c, "SET", "u", "1") == b"OK"
    c2 = h.client("unix://" + redis.unixsocket + "?db=2")
    assert h.call(c2, "SET", "u2", "2") == b"OK"
    assert redis.cli("-n", "2", "GET", "u2").strip() == "2"
    msgs = []
    s = h.subscriber("unix:" + redis.unixsocket, message_handler=lambda ch, d: msgs.append(d))
    s.subscribe(b"x")
    h.run_until(lambda: redis.cli("PUBSUB", "NUMSUB", "x").split() == ["x", "1"], what="subscribed")
    assert h.call(c, "PUBLISH", "x", "hi") == 1
    h.run_until(lambda: msgs == [b"hi"], what="message over unix socket")


def test_resp3(redis, h):
    url = parse_redis_url(redis.url)
    url.resp3 = True
    c = RedisClient(h.loop, h.pool, url, h.log)
    h.links.append(c)
    c.start()
    assert h.call(c, "HSET", "h", "f", "v") == 1
    assert h.call(c, "HGETALL", "h") == {b"f": b"v"}
    msgs = []
    s = RedisSubscriber(h.loop, h.pool, url, h.log, message_handler=lambda ch, d: msgs.append((ch, d)))
    h.links.append(s)
    s.start()
    s.subscribe(b"r3")
    h.run_until(lambda: redis.cli("PUBSUB", "NUMSUB", "r3").split() == ["r3", "1"], what="subscribed")
    assert h.call(c, "PUBLISH", "r3", "pushed") == 1
    h.run_until(lambda: msgs == [(b"r3", b"pushed")], what="RESP3 push")


def test_redis_down_at_start_then_up(tmp_path, h):
    port = free_port()
    c = h.client("redis://127.0.0.1:%d" % port, backoff_min=20, backoff_max=100)
    states = []
    c.state_handler = lambda link, up: states.append(up)
    reply = h.call(c, "PING")
    assert isinstance(reply, RedisUnavailable)
    h.run_until(lambda: c._attempts >= 5, what="retries")
    # refused at once while down
    got = []
    assert c.command(("PING",), lambda reply, data: got.append(reply)) is False
    assert got == []  # never from inside command()
    h.run_until(lambda: got, what="refusal")
    assert isinstance(got[0], RedisUnavailable)
    r = RedisServer(tmp_path / "redis")
    r.port = port
    r.start()
    try:
        h.run_until(lambda: c.ready, what="link up once redis is")
        assert h.call(c, "PING") == b"PONG"
        errors = h.lines("error")
        assert len(errors) == 1 and "Connection refused" in errors[0], errors
        notices = h.lines("notice")
        assert len(notices) == 1 and "is back after" in notices[0], notices
        assert states == [True]
    finally:
        r.stop()


def test_kill_and_restart_mid_run(redis, h):
    c = h.client(redis.url, backoff_min=20, backoff_max=200)
    msgs, confirmed, states = [], [], []
    s = h.subscriber(redis.url, message_handler=lambda ch, d: msgs.append(d),
                     subscribed_handler=confirmed.append, backoff_min=20, backoff_max=200,
                     state_handler=lambda link, up: states.append(up))
    s.subscribe(b"live")
    h.run_until(lambda: confirmed == [b"live"], what="subscribed")
    assert h.call(c, "PUBLISH", "live", "before") == 1
    h.run_until(lambda: msgs == [b"before"], what="first message")

    # commands in flight when Redis dies get an error; none is left hanging
    got = []
    for i in range(100):
        c.command(("INCR", "n"), lambda reply, data: got.append(reply))
    h.loop.run_once()
    redis.kill()
    h.run_until(lambda: len(got) == 100, what="every callback")
    assert all(isinstance(r, int) or isinstance(r, RedisUnavailable) for r in got)
    h.run_until(lambda: not c.ready and not s.ready, what="both links down")
    # while down: refused at once, many times, one error line per link
    for _ in range(20):
        reply = h.call(c, "PING")
        assert isinstance(reply, RedisUnavailable)
    h.run_until(lambda: c._attempts >= 3 and s._attempts >= 3, what="retries")
    errors = h.lines("error")
    assert len(errors) == 2, errors
    assert any("redis subscriber" in ln for ln in errors)

    redis.restart()
    h.run_until(lambda: c.ready and s.ready, what="both links back")
    # the subscriber subscribed again by itself, and said so
    h.run_until(lambda: confirmed == [b"live", b"live"], what="resubscribed")
    assert h.call(c, "PUBLISH", "live", "after") == 1
    h.run_until(lambda: msgs == [b"before", b"after"], what="message after restart")
    assert states == [True, False, True]
    assert len(h.lines("notice")) == 2
    assert len(h.lines("error")) == 2


def test_unanswered_redis_is_bounded_and_reset(redis, h):
    """SIGSTOP: Redis holds the connection and answers nothing (a slow or hung Redis)."""
    c = h.client(redis.url, max_pending=50, timeout=500, backoff_min=20, backoff_max=100)
    h.run_until(lambda: c.ready, what="ready")
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        got = []
        accepted = [c.command(("SET", "k", "x" * 100), lambda reply, data: got.append(reply))
                    for _ in range(80)]
        # the first 50 are queued, the rest refused at once
        assert accepted == [True] * 50 + [False] * 30
        h.run_until(lambda: len(got) >= 30, what="refusals")
        assert all(isinstance(r, RedisUnavailable) and "queue is full" in str(r) for r in got[:30])
        # no reply in `timeout`: the link is reset and the 50 get their error
        h.run_until(lambda: len(got) == 80, timeout=10, what="timeout of the queued commands")
        assert all(isinstance(r, RedisUnavailable) for r in got)
        assert not c.ready
        assert any("no reply in 500 ms" in ln for ln in h.lines("error")), h.sink.text()
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    h.run_until(lambda: c.ready, what="back after SIGCONT")
    assert h.call(c, "PING") == b"PONG"


def test_subscriber_ping_notices_a_hung_redis(redis, h):
    s = h.subscriber(redis.url, message_handler=lambda ch, d: None, ping_interval=200,
                     backoff_min=20, backoff_max=100)
    s.subscribe(b"x")
    h.run_until(lambda: s.ready, what="ready")
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        h.run_until(lambda: not s.ready, timeout=10, what="the PING to go unanswered")
        assert any("no answer to PING" in ln for ln in h.lines("error")), h.sink.text()
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    h.run_until(lambda: s.ready, what="back")
    h.run_until(lambda: redis.cli("PUBSUB", "NUMSUB", "x").split() == ["x", "1"], what="resubscribed")


def test_closed_client_refuses_and_frees_its_slot(redis, h):
    c = h.client(redis.url)
    h.run_until(lambda: c.ready, what="ready")
    assert h.pool.used == 1
    c.close()
    assert h.pool.used == 0
    reply = h.call(c, "PING")
    assert isinstance(reply, RedisUnavailable)
    assert c.state is State.CLOSED


def test_debug_log_tells_the_story(redis):
    h = Harness(level=DEBUG)
    try:
        c = h.client(redis.url)
        assert h.call(c, "PING") == b"PONG"
        assert "redis connected to redis://127.0.0.1:%d" % redis.port in h.sink.text()
    finally:
        h.close()
