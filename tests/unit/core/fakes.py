"""Stand-ins shared by the unit tests: a log that records, a clock that tests move, a log file in memory."""


class FakeLog:
    debug_enabled = False

    def __init__(self):
        self.records = []

    def _rec(level):
        def f(self, fmt, *args):
            self.records.append((level, fmt % args if args else fmt))
        return f

    emerg, alert, crit, error = _rec("emerg"), _rec("alert"), _rec("crit"), _rec("error")
    warn, notice, info, debug = _rec("warn"), _rec("notice"), _rec("info"), _rec("debug")

    def at(self, level):
        return [m for lvl, m in self.records if lvl == level]


class FakeClock:
    def __init__(self, ms=0):
        self.ns = ms * 1_000_000

    def __call__(self):
        return self.ns

    def advance(self, ms):
        self.ns += ms * 1_000_000


class MemorySink:
    """An ErrorLog sink that keeps its lines."""

    path = "memory"
    #: as LogFile's: the last write did not go through (never, here)
    failing = False

    def __init__(self):
        self.lines = []

    def write(self, data):
        self.lines.append(data.decode())

    def reopen(self):
        pass

    def close(self):
        pass

    def text(self):
        return "".join(self.lines)
