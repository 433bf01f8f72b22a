"""stub_status counters: slot arithmetic on a shared mapping, nginx's page byte for byte."""

import mmap
import os
import tracemalloc

import pytest

from ngxws.http import stub_status
from ngxws.http.stub_status import FIELDS, SLOTS, Stats, stub_status_handler


class Conn:
    def __init__(self, fd):
        self.fd = fd


@pytest.fixture
def s():
    return Stats(mmap.mmap(-1, SLOTS * FIELDS * 8))


def counts(stats):
    ac, ha, rq, act, rd, wr, wa = stats.totals()
    return dict(accepts=ac, handled=ha, requests=rq, active=act, reading=rd, writing=wr, waiting=wa)


def test_page_is_nginx_byte_for_byte(s):
    # nginx 1.22's body after one keep-alive request and one idle new connection
    s.attach(0)
    for _ in range(11):
        s.on_accept()
        s.on_handled()
        s.on_request()
    s.set_state(Conn(5), "waiting")
    s.set_state(Conn(6), "writing")
    assert s.text() == (b"Active connections: 2 \nserver accepts handled requests\n 11 11 11 \n"
                        b"Reading: 0 Writing: 1 Waiting: 1 \n")


def test_connection_life(s):
    s.attach(0)
    c = Conn(7)
    s.on_accept()
    s.on_handled()
    s.set_state(c, "waiting")            # accepted, nothing read yet: nginx says Waiting
    assert counts(s) == dict(accepts=1, handled=1, requests=0, active=1, reading=0, writing=0, waiting=1)
    s.on_request()
    s.set_state(c, "reading")
    assert counts(s)["reading"] == 1 and counts(s)["waiting"] == 0
    s.set_state(c, "writing")
    s.set_state(c, "writing")            # idempotent
    assert counts(s) == dict(accepts=1, handled=1, requests=1, active=1, reading=0, writing=1, waiting=0)
    s.set_state(c, "waiting")            # keep-alive
    s.set_state(c, None)                 # closed
    assert counts(s) == dict(accepts=1, handled=1, requests=1, active=0, reading=0, writing=0, waiting=0)
    s.set_state(c, None)                 # a second close changes nothing
    assert counts(s)["active"] == 0


def test_closed_fd_and_big_fds(s):
    s.attach(0)
    s.set_state(Conn(-1), "reading")
    assert counts(s)["active"] == 0
    s.set_state(Conn(100000), None)
    s.set_state(Conn(100000), "reading")
    assert counts(s)["active"] == 1 and counts(s)["reading"] == 1


def test_fd_reuse_corrects_a_forgotten_close(s):
    s.attach(0)
    s.set_state(Conn(9), "waiting")
    # the owner closed fd 9 without set_state(None); a new connection gets fd 9
    s.set_state(Conn(9), "reading")
    assert counts(s)["active"] == 1 and counts(s)["waiting"] == 0 and counts(s)["reading"] == 1


def test_slots_sum_and_respawn_keeps_history(s):
    for slot in (0, 1, SLOTS - 1):
        s.attach(slot)
        for i in range(slot + 1):
            s.on_accept()
            s.on_handled()
            s.on_request()
            s.set_state(Conn(10 + i), "waiting")
    assert counts(s) == dict(accepts=1 + 2 + SLOTS, handled=1 + 2 + SLOTS, requests=1 + 2 + SLOTS,
                             active=1 + 2 + SLOTS, reading=0, writing=0, waiting=1 + 2 + SLOTS)
    # the worker of slot 1 died with 2 open connections; its successor takes slot 1
    s.attach(1)
    assert counts(s) == dict(accepts=1 + 2 + SLOTS, handled=1 + 2 + SLOTS, requests=1 + 2 + SLOTS,
                             active=1 + SLOTS, reading=0, writing=0, waiting=1 + SLOTS)
    with pytest.raises(ValueError):
        s.attach(SLOTS)


def test_workers_share_the_mapping_across_fork(s):
    """Two forked 'workers' count in their own slots; the parent sees the sum."""
    pids = []
    for slot, n in ((0, 3), (1, 5)):
        pid = os.fork()
        if pid == 0:
            try:
                s.attach(slot)
                for i in range(n):
                    s.on_accept()
                    s.on_handled()
                    s.on_request()
                    s.on_request()
                s.set_state(Conn(20), "writing")
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert status == 0
    assert counts(s) == dict(accepts=8, handled=8, requests=16, active=2, reading=0, writing=2, waiting=0)


def test_state_change_allocates_nothing(s):
    s.attach(0)
    conns = [Conn(fd) for fd in range(30, 60)]
    states = ("reading", "writing", "waiting")

    def churn():
        for k in range(200):
            for c in conns:
                s.set_state(c, states[k % 3])

    churn()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    churn()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(st.size_diff for st in after.compare_to(before, "filename")
                if st.traceback[0].filename == stub_status.__file__)
    assert grown <= 0


class FakeRequest:
    def __init__(self, method):
        self.method = method
        self.sent = None
        self.finalized = None

    def send_response(self, status, headers, body):
        self.sent = (status, headers, body)

    def finalize(self, status):
        self.finalized = status


def test_handler_get_and_head(monkeypatch, s):
    monkeypatch.setattr(stub_status, "stats", s)
    s.attach(0)
    s.on_accept()
    r = FakeRequest(b"GET")
    stub_status_handler(r)
    status, headers, body = r.sent
    assert status == 200
    assert (b"Content-Type", b"text/plain") in headers
    assert body == s.text()
    r = FakeRequest("HEAD")
    stub_status_handler(r)
    assert r.sent[0] == 200


def test_handler_refuses_other_methods(monkeypatch, s):
    monkeypatch.setattr(stub_status, "stats", s)
    r = FakeRequest(b"POST")
    stub_status_handler(r)
    assert r.finalized == 405 and r.sent is None


def test_connections_variables():
    from ngxws.http.variables import get_variable
    for name in ("connections_active", "connections_reading", "connections_writing",
                 "connections_waiting"):
        assert get_variable(name)(None).isdigit()


def test_init_process_takes_the_worker_slot(monkeypatch, s):
    monkeypatch.setattr(stub_status, "stats", s)
    said = []

    class Log:
        def warn(self, fmt, *args):
            said.append(fmt % args)

    class Cycle:
        worker_slot = 3
        log = Log()
    stub_status.StubStatusModule().init_process(Cycle())
    s.on_accept()
    assert s.view[3 * FIELDS] == 1 and not said
    Cycle.worker_slot = SLOTS + 2
    stub_status.StubStatusModule().init_process(Cycle())
    s.on_accept()
    assert s.view[2 * FIELDS] == 1
    assert said == ["worker slot %d is past the %d stub_status slots, counts may be off" % (SLOTS + 2, SLOTS)]
