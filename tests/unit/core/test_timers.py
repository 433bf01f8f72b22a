"""TimerHeap against a plain reference model, plus compaction and the loop's lazy re-arm."""

from hypothesis import given, settings, strategies as st

from ngxws.core.loop import Event, EventLoop
from ngxws.core.timers import TimerHeap
from .fakes import FakeClock, FakeLog


class Model:
    """What a timer set means, with none of the heap's cleverness."""

    def __init__(self):
        self.armed = {}     # id -> (deadline, seq)
        self.seq = 0

    def add(self, i, deadline):
        self.seq += 1
        self.armed[i] = (deadline, self.seq)

    def cancel(self, i):
        self.armed.pop(i, None)

    def expire(self, now):
        due = sorted((d, s, i) for i, (d, s) in self.armed.items() if d <= now)
        for _, _, i in due:
            del self.armed[i]
        return [i for _, _, i in due]

    def next_deadline(self):
        return min((d for d, _ in self.armed.values()), default=None)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 149), st.integers(0, 1000)),
        st.tuples(st.just("cancel"), st.integers(0, 149)),
        st.tuples(st.just("advance"), st.integers(0, 400)),
        # bursts, so that heaps past 100 entries with many dead ones (compaction) are common
        st.tuples(st.just("add_range"), st.integers(0, 149), st.integers(0, 150), st.integers(0, 1000)),
        st.tuples(st.just("cancel_range"), st.integers(0, 149), st.integers(0, 150)),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_heap_matches_model(script):
    heap = TimerHeap()
    model = Model()
    events = [Event(data=i) for i in range(150)]
    now = 0
    for op in script:
        if op[0] == "add":
            heap.add(events[op[1]], now + op[2])
            model.add(op[1], now + op[2])
        elif op[0] == "cancel":
            heap.cancel(events[op[1]])
            model.cancel(op[1])
        elif op[0] == "add_range":
            for i in range(op[1], min(150, op[1] + op[2])):
                heap.add(events[i], now + op[3] + i % 7)
                model.add(i, now + op[3] + i % 7)
        elif op[0] == "cancel_range":
            for i in range(op[1], min(150, op[1] + op[2])):
                heap.cancel(events[i])
                model.cancel(i)
        else:
            now += op[1]
            fired = [ev.data for ev in heap.expire(now)]
            assert fired == model.expire(now)
            assert all(not events[i].timer_set for i in fired)
        assert len(heap) == len(model.armed)
        assert heap.next_deadline() == model.next_deadline()
        # as the loop sees it each iteration: a big heap is at most half dead
        assert len(heap._heap) <= 100 or heap._cancelled * 2 <= len(heap._heap)
        assert heap._cancelled == len(heap._heap) - len(model.armed)
    assert [ev.data for ev in heap.expire(10 ** 9)] == model.expire(10 ** 9)
    assert len(heap) == 0 and heap.next_deadline() is None


def test_equal_deadlines_fire_in_arming_order():
    heap = TimerHeap()
    evs = [Event(data=i) for i in range(5)]
    for ev in reversed(evs):
        heap.add(ev, 50)
    assert [ev.data for ev in heap.expire(50)] == [4, 3, 2, 1, 0]


def test_rearm_moves_the_timer():
    heap = TimerHeap()
    ev = Event()
    heap.add(ev, 100)
    heap.add(ev, 300)
    assert len(heap) == 1
    assert heap.expire(200) == []
    assert heap.expire(300) == [ev]
    assert heap.expire(10 ** 6) == []


def test_compaction_past_100_entries_when_over_half_cancelled():
    heap = TimerHeap()
    evs = [Event(data=i) for i in range(200)]
    for i, ev in enumerate(evs):
        heap.add(ev, 1000 + i)
    for ev in evs[:100]:
        heap.cancel(ev)
    assert len(heap._heap) == 200          # exactly half: not yet
    heap.cancel(evs[100])
    assert len(heap._heap) == 99 == len(heap)
    assert [ev.data for ev in heap.expire(10 ** 6)] == list(range(101, 200))


def test_small_heap_is_never_compacted():
    heap = TimerHeap()
    evs = [Event() for _ in range(50)]
    for ev in evs:
        heap.add(ev, 10)
    for ev in evs[:49]:
        heap.cancel(ev)
    assert len(heap._heap) == 50 and len(heap) == 1


def test_only_cancelable_left():
    heap = TimerHeap()
    a, b = Event(), Event()
    a.cancelable = True
    assert heap.only_cancelable_left()
    heap.add(a, 10)
    assert heap.only_cancelable_left()
    heap.add(b, 20)
    assert not heap.only_cancelable_left()
    heap.cancel(b)
    assert heap.only_cancelable_left()


def test_lazy_rearm_within_300ms_keeps_deadline():
    clock = FakeClock(1000)
    loop = EventLoop(FakeLog(), clock_ns=clock)
    ev = Event()
    loop.add_timer(ev, 60_000)
    assert ev.deadline == 61_000
    entries = len(loop.timers._heap)
    clock.advance(299)
    loop.time_update()
    loop.add_timer(ev, 60_000)              # would be 61_299: within the lazy delay
    assert ev.deadline == 61_000
    assert len(loop.timers._heap) == entries
    loop.add_timer(ev, 59_800)              # earlier, but within 300 ms too
    assert ev.deadline == 61_000
    clock.advance(1)
    loop.time_update()
    loop.add_timer(ev, 60_000)              # 300 ms later: moved
    assert ev.deadline == 61_300
    assert len(loop.timers) == 1


def test_del_timer_of_unarmed_event_is_harmless():
    loop = EventLoop(FakeLog(), clock_ns=FakeClock())
    ev = Event()
    loop.del_timer(ev)
    loop.add_timer(ev, 10)
    loop.del_timer(ev)
    loop.del_timer(ev)
    assert len(loop.timers) == 0 and not ev.timer_set
