"""stub_status: nginx's connection counters, summed over every worker.

Theory of operation
-------------------
The counters live in one anonymous shared mapping (``MAP_SHARED``), made when
this module is first imported, which is in the master before any fork.  It is
cut into ``SLOTS`` slots of ``FIELDS`` 64-bit counters, one cache line each.
A worker writes only its own slot (``cycle.worker_slot``), so no lock is needed:
an aligned 8-byte store is atomic on every platform CPython runs workers on, and
the stub_status handler just adds the slots up.

The mapping outlives cycles: a reload keeps the totals, as nginx's shared
counters do.  A worker that takes a slot over (a respawn, or a new generation
after a reload) keeps the slot's accepts, handled and requests, which are
history, and zeroes active/reading/writing/waiting, which described connections
that died with the previous owner.  Slots must therefore be unique among live
workers, old generation included.

Per connection the state is one byte in a table indexed by the fd: changing a
connection's state costs no allocation, and because an fd names at most one
open connection, a table entry left behind by a connection that was closed
without ``set_state(conn, None)`` is corrected when the fd is reused.
"""

import mmap

from ngxws.core.directives import Args, ConfigError, Ctx, Directive, Slot
from ngxws.http.module import HttpModule
from ngxws.http.variables import VARIABLES

__all__ = ["Stats", "stats", "StubStatusModule", "stub_status_handler", "SLOTS", "FIELDS"]

#: how many workers (and respawns/reloads overlapping them) can count at once
SLOTS = 128
#: counters per slot: one 64-byte cache line
FIELDS = 8

ACCEPTS, HANDLED, REQUESTS, ACTIVE, READING, WRITING, WAITING = range(7)

_STATE_CODE = {None: 0, "reading": READING, "writing": WRITING, "waiting": WAITING}


class Stats:
    """The counters of this process's slot, and the sum over all slots."""

    __slots__ = ("shm", "view", "base", "states")

    def __init__(self, shm=None):
        if shm is None:
            shm = mmap.mmap(-1, SLOTS * FIELDS * 8)
        self.shm = shm
        self.view = memoryview(shm).cast("q")
        self.base = 0
        #: fd -> READING/WRITING/WAITING or 0
        self.states = bytearray(1024)

    def attach(self, slot):
        """This process counts in ``slot`` from now on (a worker, after fork)."""
        if not 0 <= slot < SLOTS:
            raise ValueError("worker slot %d out of range 0..%d" % (slot, SLOTS - 1))
        self.base = slot * FIELDS
        v = self.view
        for f in (ACTIVE, READING, WRITING, WAITING):
            v[self.base + f] = 0
        self.states = bytearray(len(self.states))

    def on_accept(self):
        self.view[self.base + ACCEPTS] += 1

    def on_handled(self):
        self.view[self.base + HANDLED] += 1

    def on_request(self):
        self.view[self.base + REQUESTS] += 1

    def set_state(self, conn, state):
        """``state``: "reading", "writing", "waiting", or None when the connection closes."""
        fd = conn.fd
        if fd < 0:
            return
        new = _STATE_CODE[state]
        states = self.states
        if fd >= len(states):
            if not new:
                return
            states.extend(bytes(max(fd + 1, 2 * len(states)) - len(states)))
        old = states[fd]
        if old == new:
            return
        v = self.view
        b = self.base
        if old:
            v[b + old] -= 1
        else:
            v[b + ACTIVE] += 1
        if new:
            v[b + new] += 1
        else:
            v[b + ACTIVE] -= 1
        states[fd] = new

    def totals(self):
        """[accepts, handled, requests, active, reading, writing, waiting] over every slot."""
        v = self.view
        return [sum(v[f::FIELDS]) for f in range(7)]

    def text(self):
        """nginx's stub_status page, byte for byte."""
        ac, ha, rq, act, rd, wr, wa = self.totals()
        return ("Active connections: %d \nserver accepts handled requests\n %d %d %d \n"
                "Reading: %d Writing: %d Waiting: %d \n" % (act, ac, ha, rq, rd, wr, wa)).encode()


#: made at import, i.e. in the master before fork: every worker shares it
stats = Stats()


def stub_status_handler(r):
    """The location's content handler (nginx's ngx_http_stub_status_handler)."""
    method = r.method
    if method.__class__ is str:
        method = method.encode("latin-1")
    if method not in (b"GET", b"HEAD"):
        r.finalize(405)
        return
    r.send_response(200, [(b"Content-Type", b"text/plain")], stats.text())


def _stub_status(cf, node, conf):
    if node.args and node.args[0] not in ("on",):
        # nginx 1.7.5+ takes no argument; the old "stub_status on;" still reads fine
        raise ConfigError('invalid parameter "%s"' % node.args[0])
    _core_loc_conf(cf).handler = stub_status_handler


def _core_loc_conf(cf):
    # nginx's ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module)
    return cf.confs.get("http", Slot.LOC)


def _var(field):
    def get(r):
        return str(stats.totals()[field])
    return get


VARIABLES.update({
    "connections_active": _var(ACTIVE),
    "connections_reading": _var(READING),
    "connections_writing": _var(WRITING),
    "connections_waiting": _var(WAITING),
})


class StubStatusModule(HttpModule):
    name = "http_stub_status"
    DIRECTIVES = (
        Directive("stub_status", Ctx.SRV | Ctx.LOC, Args.NOARGS | Args.TAKE1, _stub_status, Slot.LOC),
    )

    def init_process(self, cycle):
        slot = getattr(cycle, "worker_slot", 0) or 0
        if slot >= SLOTS:
            # sharing a slot loses an increment now and then; refusing to start would be worse
            log = getattr(cycle, "log", None)
            if log is not None:
                log.warn("worker slot %d is past the %d stub_status slots, counts may be off", slot, SLOTS)
            slot %= SLOTS
        stats.attach(slot)


module = StubStatusModule()
