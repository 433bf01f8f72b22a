"""The event loop: nginx's ngx_process_events_and_timers on top of ``selectors``.

Theory of operation
-------------------
One iteration (``run_once``) does, always in this order:

1. pick the select timeout: 0 when events are posted, else the time to the
   nearest timer, capped at 24 h;
2. ``selector.select()``, then refresh the cached clock ``now_ms`` (nginx's
   ``ngx_current_msec``: one clock read per iteration, not one per handler);
3. dispatch each ready key: its ``data`` is the owner (a Connection or a
   Listening), whose ``read``/``write`` Event handler is called.  An owner closed
   by an earlier handler of the same batch is skipped: its fd may already belong
   to a new connection, and the key still names the old owner;
4. fire due timers (``ev.timedout = True``, then the handler), one at a time,
   so that a handler can still cancel a later timer of the same batch;
5. run the events posted before this step.  Events posted while they run wait
   for the next iteration (whose select does not block), so a handler that
   re-posts itself cannot starve the sockets.

The selector is created on first use, not in ``__init__``: a worker builds its
loop after fork, and an epoll object shared across fork keeps reporting fds of
the other process (trio's ``_io_epoll.py`` explains the mess).

Interest is tracked on the events (``ev.active``) so that ``update()`` makes an
epoll_ctl call only when the interest really changes.  Registrations use the
plain fd, which spares selectors a ``fileno()`` call per change.

Listening sockets are watched with EPOLLEXCLUSIVE (``update_accept``), as nginx
does since 1.11.3: every worker's epoll holds the same listen sockets, and
without the flag each new connection wakes all of them, one accepts and the
rest find EAGAIN (the thundering herd).  With it the kernel wakes one epoll
that has a waiter blocked in it; a worker busy elsewhere is skipped, so the
connection goes to one that is idle.  ``selectors`` cannot pass the flag, so
the fd is registered through the selector as usual (its map stays the
bookkeeping that ``select()`` and shutdown read) and then re-added to the same
epoll instance with the flag, through a second ``select.epoll`` handle on a
dup of the selector's epoll fd (``select.epoll.fromfd``: public API only).
The kernel refuses EPOLL_CTL_MOD on an exclusive fd, so accept is only ever
switched on and off by register/unregister, never ``modify``.  Of several
idle workers the kernel wakes the first registered, which would take a whole
light load alone; ``requeue_accept`` (called by the accept handler) re-adds
the registration so that this worker goes last and idle workers take turns.
Without the flag (Python or kernel lacks it, EINVAL, a selector that is not
epoll) the registration stays plain: correct, merely herd-prone.

Handlers are called through ``_call``, which holds the worker's only
``except Exception``: a bug in one connection's handler is logged at ``alert``
with its traceback and closes that connection (its owner's ``error_handler``),
and the worker goes on serving the others.
"""

import errno
import os
import select
import selectors
import time
import traceback

from .timers import TimerHeap

__all__ = ["Event", "EventLoop", "TIMER_LAZY_DELAY", "MAX_SELECT_TIMEOUT"]

#: nginx's NGX_TIMER_LAZY_DELAY: re-arming a timer within this many ms of its
#: current deadline keeps the old one, so a busy client costs no heap operation.
TIMER_LAZY_DELAY = 300

#: select timeout when no timer is armed, ms.
MAX_SELECT_TIMEOUT = 24 * 60 * 60 * 1000

#: epoll's EPOLLEXCLUSIVE (Linux 4.5, Python 3.6); 0 where Python lacks it
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Event:
    """One readiness or timer event of an owner (nginx's ngx_event_t)."""

    __slots__ = ("handler", "data", "write", "timedout", "timer_set", "deadline", "timer_seq",
                 "posted", "cancelable", "active")

    def __init__(self, handler=None, data=None, write=False):
        #: called as ``handler(ev)`` by the loop
        self.handler = handler
        #: the owner: a Connection, a Listening, or anything a timer needs
        self.data = data
        self.write = write
        #: set by the loop before it calls the handler of an expired timer
        self.timedout = False
        self.timer_set = False
        #: ms, on the loop's clock; meaningful while timer_set
        self.deadline = 0
        #: identifies this event's live entry in the TimerHeap
        self.timer_seq = 0
        self.posted = False
        #: a pending timer that need not hold up a graceful exit (nginx's ev->cancelable)
        self.cancelable = False
        #: registered with the selector for this direction
        self.active = False


class EventLoop:
    __slots__ = ("log", "now_ms", "selector", "timers", "exiting", "_clock_ns", "_posted", "_epoll")

    def __init__(self, log, clock_ns=time.monotonic_ns, selector=None):
        self.log = log
        self._clock_ns = clock_ns
        self.now_ms = clock_ns() // 1_000_000
        #: made on first use (after fork) unless one is given
        self.selector = selector
        self.timers = TimerHeap()
        self.exiting = False
        # an insertion-ordered set: O(1) append and O(1) removal by close()
        self._posted = {}
        #: the handle that adds EPOLLEXCLUSIVE registrations: None until first
        #: needed, False where exclusive registration is not available
        self._epoll = None

    def _create_selector(self):
        self.selector = selectors.DefaultSelector()
        return self.selector

    def time_update(self):
        """Refresh ``now_ms`` outside the once-per-iteration refresh (ngx_time_update)."""
        self.now_ms = self._clock_ns() // 1_000_000

    # timers

    def add_timer(self, ev, ms):
        deadline = self.now_ms + ms
        if ev.timer_set:
            if -TIMER_LAZY_DELAY < deadline - ev.deadline < TIMER_LAZY_DELAY:
                return
        self.timers.add(ev, deadline)

    def del_timer(self, ev):
        if ev.timer_set:
            self.timers.cancel(ev)

    # posted events

    def post(self, ev):
        if not ev.posted:
            ev.posted = True
            self._posted[ev] = None

    def delete_posted(self, ev):
        if ev.posted:
            ev.posted = False
            self._posted.pop(ev, None)

    # selector interest

    def update(self, conn, read, write):
        """Make the selector watch ``conn.fd`` for exactly ``read``/``write``."""
        rev = conn.read
        wev = conn.write
        was_read = rev.active
        was_write = wev.active
        if was_read == read and was_write == write:
            return
        sel = self.selector or self._create_selector()
        events = (EVENT_READ if read else 0) | (EVENT_WRITE if write else 0)
        if not (was_read or was_write):
            sel.register(conn.fd, events, conn)
        elif events:
            sel.modify(conn.fd, events, conn)
        else:
            sel.unregister(conn.fd)
        rev.active = bool(read)
        wev.active = bool(write)

    def add_listening(self, ls):
        """Start accepting on ``ls`` (a Listening whose ``pool`` is set)."""
        ls.loop = self
        ls.enable_accept()

    def update_accept(self, ls, on):
        """Watch listening ``ls`` for reads (EPOLLIN|EPOLLEXCLUSIVE where possible), or stop.

        Only register and unregister: never ``modify``, which the kernel refuses
        (EINVAL) on an fd added with EPOLLEXCLUSIVE.
        """
        rev = ls.read
        if rev.active == on:
            return
        sel = self.selector or self._create_selector()
        if on:
            sel.register(ls.fd, EVENT_READ, ls)
            self._make_exclusive(sel, ls.fd)
        else:
            sel.unregister(ls.fd)
        rev.active = on

    def requeue_accept(self, ls):
        """Move this worker to the back of the line for ``ls``'s next exclusive wakeup.

        The kernel wakes the first epoll, in registration order, that has a
        waiter: with idle workers that is always the same one, which then gets
        every connection of a light load.  Deleting and re-adding the exclusive
        registration puts this epoll last, so idle workers take turns.
        """
        ep = self._epoll
        if ep and ls.read.active:
            fd = ls.fd
            ep.unregister(fd)
            try:
                ep.register(fd, select.EPOLLIN | EPOLLEXCLUSIVE)
            except OSError:
                # keep accepting, herd-prone, rather than not at all
                ep.register(fd, select.EPOLLIN)

    def _epoll_handle(self, sel):
        ep = self._epoll
        if ep is None:
            ep = False
            if EPOLLEXCLUSIVE and isinstance(sel, selectors.EpollSelector):
                try:
                    # the dup names the same epoll instance as the selector's own fd
                    ep = select.epoll.fromfd(os.dup(sel.fileno()))
                except OSError:
                    # EMFILE: plain this time, try again on the next registration
                    return False
            self._epoll = ep
        return ep

    def _make_exclusive(self, sel, fd):
        """Swap the selector's plain EPOLLIN registration of ``fd`` for an exclusive one."""
        ep = self._epoll_handle(sel)
        if not ep:
            return
        # EPOLL_CTL_MOD cannot add EPOLLEXCLUSIVE: delete, then add with it
        ep.unregister(fd)
        try:
            ep.register(fd, select.EPOLLIN | EPOLLEXCLUSIVE)
            return
        except OSError as e:
            refused = e.errno == errno.EINVAL
        try:
            ep.register(fd, select.EPOLLIN)
        except OSError:
            # keep the selector's map true to the epoll set
            sel.unregister(fd)
            raise
        finally:
            if refused:
                # this kernel will not take the flag: plain registrations from now on
                self._epoll = False
                ep.close()

    # the iteration

    def run_once(self):
        sel = self.selector or self._create_selector()
        if self._posted:
            timeout = 0
        else:
            deadline = self.timers.next_deadline()
            if deadline is None:
                timeout = MAX_SELECT_TIMEOUT
            else:
                timeout = deadline - self.now_ms
                if timeout < 0:
                    timeout = 0
                elif timeout > MAX_SELECT_TIMEOUT:
                    timeout = MAX_SELECT_TIMEOUT

        ready = sel.select(timeout / 1000)
        self.now_ms = self._clock_ns() // 1_000_000

        call = self._call
        for key, mask in ready:
            owner = key.data
            if owner.closed:
                continue
            if mask & EVENT_READ:
                ev = owner.read
                # an earlier handler may have dropped this interest
                if ev.active:
                    call(ev)
                    if owner.closed:
                        continue
            if mask & EVENT_WRITE:
                ev = owner.write
                if ev.active:
                    call(ev)

        timers = self.timers
        now = self.now_ms
        ev = timers.pop_due(now)
        while ev is not None:
            ev.timedout = True
            call(ev)
            ev = timers.pop_due(now)

        if self._posted:
            batch = self._posted
            self._posted = {}
            for ev in batch:
                # delete_posted() of an event of this batch only clears the flag
                if ev.posted:
                    ev.posted = False
                    call(ev)

    def _call(self, ev):
        try:
            ev.handler(ev)
        except Exception:
            self._handler_failed(ev)

    def _handler_failed(self, ev):
        owner = ev.data
        log = getattr(owner, "log", None) or self.log
        log.alert("unhandled exception in %s handler %s\n%s",
                  "write" if ev.write else "read", _name(ev.handler),
                  traceback.format_exc().rstrip())
        error_handler = getattr(owner, "error_handler", None)
        if error_handler is not None:
            error_handler()


def _name(fn):
    return getattr(fn, "__qualname__", None) or repr(fn)
