"""Process-tree accounting from /proc: CPU seconds, RSS and PSS of a server and its children.

A multi-process server (nginx or ngxws: master + workers) is measured as the sum over its tree.
RSS counts shared pages once per process, so after fork it over-counts; PSS splits each shared
page between its sharers and is the honest figure for "what does this server cost".
"""
from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: the fields start after the last ')'
    return st[st.rindex(")") + 2:].split()


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _stat_fields(int(d))
            if f is not None:
                kids.setdefault(int(f[1]), []).append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    """pid first, then every descendant."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(sorted(kids.get(p, ())))
    return out


def cpu(pids) -> tuple[float, float]:
    """(user, system) CPU seconds of these processes (their reaped children excluded)."""
    u = s = 0
    for p in pids:
        f = _stat_fields(p)
        if f is not None:
            u += int(f[11])
            s += int(f[12])
    return u / CLK_TCK, s / CLK_TCK


def start_time(pid: int) -> int | None:
    """Kernel start time: tells a live process from a recycled pid."""
    f = _stat_fields(pid)
    return int(f[19]) if f is not None else None


def _kib(pid: int, fname: str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/{fname}") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pids) -> int:
    return sum(_kib(p, "status", "VmRSS:") for p in pids)


def pss_kib(pids) -> int:
    return sum(_kib(p, "smaps_rollup", "Pss:") for p in pids)


def name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def pin(pid: int, cpus) -> None:
    """Pin every thread of pid and of its descendants (sched_setaffinity on a pid pins one thread)."""
    for p in tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                os.sched_setaffinity(int(t), cpus)
            except OSError:
                pass


def machine_busy() -> float:
    """CPU seconds spent by the whole machine (all cores, everything but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


class CpuMeter:
    """CPU of fixed process sets over one window, in percent of one core and seconds. Also what
    everything else on the machine used meanwhile ('other'): on a shared 2-core box, a run
    with other work going on is a noisy run, and the table says so."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups

    def start(self):
        self.t0 = os.times().elapsed
        self.c0 = {k: cpu(v) for k, v in self.groups.items()}
        self.m0 = machine_busy()
        return self

    def stop(self) -> dict:
        wall = os.times().elapsed - self.t0
        out = {"wall_s": round(wall, 3)}
        self.seconds = {}
        for k, pids in self.groups.items():
            u1, s1 = cpu(pids)
            u0, s0 = self.c0[k]
            self.seconds[k] = (u1 - u0) + (s1 - s0)
            out[f"{k}_cpu_pct"] = round(self.seconds[k] / wall * 100, 1) if wall else None
            out[f"{k}_sys_pct"] = round((s1 - s0) / wall * 100, 1) if wall else None
        other = machine_busy() - self.m0 - sum(self.seconds.values())
        out["other_cpu_pct"] = round(max(0.0, other) / wall * 100, 1) if wall else None
        return out

    def us_per(self, group: str, n: int) -> float | None:
        return round(self.seconds[group] / n * 1e6, 2) if n else None
