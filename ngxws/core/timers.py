"""Timers: a binary heap of ``(deadline_ms, seq, event)`` with lazy cancellation.

Theory of operation
-------------------
nginx keeps its timers in a red-black tree so that deletion is O(log n).  A heapq
cannot delete from the middle cheaply, so a cancelled timer stays in the heap and
is only *marked* dead: the event's ``timer_set`` goes false, or its ``timer_seq``
stops matching the entry's ``seq`` because the event was armed again.  Dead entries
are dropped when they reach the top.  When the heap holds more than 100 entries and
over half of them are dead, it is rebuilt from the live ones (asyncio does the same),
so memory stays proportional to the live timers even when every client re-arms its
idle timer on every message.

``seq`` orders timers that share a deadline by the time they were armed (nginx's
rbtree puts equal keys to the right, so it fires them in insertion order too), and
keeps tuple comparison from ever reaching the event.

The heap never reads a clock: callers pass ``now_ms`` (the loop's cached
``ngx_current_msec``), which is what makes it testable with a fake clock.
"""

import heapq
import itertools

__all__ = ["TimerHeap"]

#: below this size a rebuild costs more than the dead entries do.
COMPACT_MIN = 100


class TimerHeap:
    __slots__ = ("_heap", "_cancelled", "_seq")

    def __init__(self):
        self._heap = []
        #: dead entries still in ``_heap``
        self._cancelled = 0
        self._seq = itertools.count(1).__next__

    def __len__(self):
        return len(self._heap) - self._cancelled

    def add(self, ev, deadline_ms):
        """Arm ``ev`` for ``deadline_ms``; an already armed event is moved."""
        if ev.timer_set:
            self.cancel(ev)
        seq = self._seq()
        ev.timer_seq = seq
        ev.deadline = deadline_ms
        ev.timer_set = True
        heapq.heappush(self._heap, (deadline_ms, seq, ev))

    def cancel(self, ev):
        if not ev.timer_set:
            return
        ev.timer_set = False
        self._cancelled += 1
        heap = self._heap
        if len(heap) > COMPACT_MIN and self._cancelled * 2 > len(heap):
            self._compact()

    def _compact(self):
        live = [e for e in self._heap if e[2].timer_set and e[2].timer_seq == e[1]]
        heapq.heapify(live)
        self._heap = live
        self._cancelled = 0

    def _drop_dead_top(self):
        heap = self._heap
        while heap:
            _, seq, ev = heap[0]
            if ev.timer_set and ev.timer_seq == seq:
                return
            heapq.heappop(heap)
            self._cancelled -= 1

    def next_deadline(self):
        """The earliest live deadline, or None when no timer is armed.

        The loop asks once per iteration, which is also when dead entries left
        behind by expiry (not only by cancel()) get their chance to be compacted.
        """
        heap = self._heap
        if len(heap) > COMPACT_MIN and self._cancelled * 2 > len(heap):
            self._compact()
        self._drop_dead_top()
        heap = self._heap
        return heap[0][0] if heap else None

    def pop_due(self, now_ms):
        """Disarm and return the earliest event due at ``now_ms``, or None.

        The loop fires timers one at a time through this, so that a handler that
        deletes a later timer of the same batch really stops it (nginx's
        ngx_event_expire_timers works the same way).
        """
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            _, seq, ev = heapq.heappop(heap)
            if ev.timer_set and ev.timer_seq == seq:
                ev.timer_set = False
                return ev
            self._cancelled -= 1
        return None

    def expire(self, now_ms):
        """Disarm and return every event due at ``now_ms``, earliest first."""
        due = []
        ev = self.pop_due(now_ms)
        while ev is not None:
            due.append(ev)
            ev = self.pop_due(now_ms)
        return due

    def only_cancelable_left(self):
        """True when every armed timer may be dropped by a graceful exit.

        Called once per iteration only while the worker is exiting; it stops at the
        first timer that must still run, which is usually near the front.
        """
        for _, seq, ev in self._heap:
            if ev.timer_set and ev.timer_seq == seq and not ev.cancelable:
                return False
        return True
