"""Upstream vs Pushpin: echo through a WebSocket-over-HTTP backend, side by side with plain echo.

    python -m bench.upstream                        # 3 repetitions, 10 s runs -> results/upstream-STAMP.*
    python -m bench.upstream --reps 1 --duration 3  # a quick look
    python -m bench one echo_pingpong pushpin       # one run, its JSON on stdout

Targets (in each repetition, one after the other):
    ngxws-w1   ngxws echoing itself (no backend): the floor
    ngxws-up   ngxws, 1 worker, websocket_pass to servers/wsoh_backend.py
    pushpin    Debian's Pushpin, over_http route to the same backend

Workloads: the suite's echo_pingpong and echo_window8 (100 connections, 32-byte text messages, 1 or
8 in flight per connection; every echo checked for order and content). Each run is the suite's
run_one: fresh server in a temp prefix on 127.0.0.1, server tree pinned to CPU 0 and the load
generator to CPU 1 (the backend too), CPU from /proc, everything stopped by pid. The backend's CPU
is reported apart ('backend µs/msg') and its request counter gives 'backend req/msg'.

Writes results/upstream-STAMP.json (every run) and results/upstream-STAMP.md (medians).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

if __package__ in (None, ""):  # run as a script: bench/upstream.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"
from . import proc, run  # noqa: E402

WORKLOADS = ("echo_pingpong", "echo_window8")
TARGETS = ("ngxws-w1", "ngxws-up", "pushpin")

COLUMNS = [  # header, path in a run record, digits
    ("msgs/s", ("msgs_per_s",), 0),
    ("p50 ms", ("latency_ms", "p50"), 2),
    ("p99 ms", ("latency_ms", "p99"), 2),
    ("server µs/msg", ("server_us_per_msg",), 1),
    ("backend µs/msg", ("backend_us_per_msg",), 1),
    ("server+backend µs/msg", ("total_us_per_msg",), 1),
    ("backend req/msg", ("backend_req_per_msg",), 3),
    ("server CPU%", ("server_cpu_pct",), 0),
    ("backend CPU%", ("backend_cpu_pct",), 0),
    ("loadgen CPU%", ("loadgen_cpu_pct",), 0),
    ("other CPU%", ("other_cpu_pct",), 0),
]


class ByProcess:
    """CPU% of each process of the server over the measured window (run_one's on_go hook opens it;
    a timer thread closes it `duration` seconds later, before the server is stopped)."""

    def __init__(self, duration: float):
        self.duration = duration
        self.result: dict[str, float] = {}
        self.thread = None

    def __call__(self, target, pids):
        c0 = {p: sum(proc.cpu([p])) for p in pids}
        t0 = time.monotonic()

        def close():
            time.sleep(self.duration * 0.95)
            wall = time.monotonic() - t0
            out: dict[str, float] = {}
            for p, c in c0.items():
                name = proc.name(p)
                out[name] = round(out.get(name, 0.0) + (sum(proc.cpu([p])) - c) / wall * 100, 1)
            self.result = out

        self.thread = threading.Thread(target=close, daemon=True)
        self.thread.start()

    def get(self) -> dict[str, float]:
        if self.thread is not None:
            self.thread.join(self.duration + 5)
        return self.result


def dpkg_version(pkg: str) -> str | None:
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return r.stdout.strip() or None


def get(rec: dict, path: tuple):
    for k in path:
        if not isinstance(rec, dict):
            return None
        rec = rec.get(k)
    return rec


def fmt(v, digits: int) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if digits else f"{v:,.0f}"


def cell(vals: list, digits: int) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt(vals[0], digits)
    return f"{fmt(statistics.median(vals), digits)} ({fmt(min(vals), digits)}–{fmt(max(vals), digits)})"


def markdown(doc: dict) -> str:
    env = doc["env"]
    lines = [f"# Upstream vs Pushpin ({doc['stamp']})", "",
             f"Machine: {env['machine']} (host {env['host']}), Python {env['python']}, ngxws at "
             f"{env['ngxws_commit']}; pushpin {env['pushpin']}, condure {env['condure']}, zurl {env['zurl']}; "
             f"packages {env['packages']}.", "",
             f"{doc['reps']} repetition(s) of {doc['duration']:g} s per run, scale {doc['scale']:g}, nice "
             f"{doc.get('nice', 0)} (servers, backends, generators); each cell: "
             "median (min–max). Server = the gateway's process tree (ngxws: master + 1 worker; pushpin: runner, "
             "condure, zurl, pushpin-proxy, pushpin-handler), pinned to CPU 0; load generator and backend on "
             "CPU 1. Backend = bench/servers/wsoh_backend.py (aiohttp on uvloop, one process), the same behind "
             "both gateways; 'backend req/msg' = backend HTTP requests / client messages it saw. "
             "'other CPU%' = the rest of the machine during the window (200% = both cores busy): high values "
             "mean a noisy run; compare µs/msg rather than rates then.", ""]
    for wid in doc["workloads"]:
        lines += [f"## {wid}", "", run.WORKLOADS[wid]["what"], "",
                  "| target | " + " | ".join(c[0] for c in COLUMNS) + " | runs ok |",
                  "|---" * (len(COLUMNS) + 2) + "|"]
        for label in doc["targets"]:
            recs = [r for r in doc["runs"] if r["workload"] == wid and r["target"] == label]
            if not recs:
                continue
            ok = [r for r in recs if r["ok"]]
            row = [cell([get(r, p) for r in ok], d) for _, p, d in COLUMNS]
            lines.append(f"| **{label}** | " + " | ".join(row) + f" | {len(ok)}/{len(recs)} |")
        lines.append("")
        for label in doc["targets"]:
            recs = [r for r in doc["runs"] if r["workload"] == wid and r["target"] == label and r["ok"]
                    and r.get("server_cpu_pct_by_process")]
            names = sorted({n for r in recs for n in r["server_cpu_pct_by_process"]})
            if recs and len(names) > 1:
                parts = [f"{n} {cell([r['server_cpu_pct_by_process'].get(n) for r in recs], 1)}" for n in names]
                lines.append(f"- {label} server CPU% by process: " + ", ".join(parts))
        for r in doc["runs"]:
            if r["workload"] == wid and not r["ok"]:
                lines.append(f"- failed: {r['target']} rep {r['rep'] + 1}: {r.get('checks') or r.get('error')}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10, help="measured seconds per run")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply connection counts")
    ap.add_argument("--out", default=run.RESULTS)
    ap.add_argument("--nice", type=int, default=0, help="run servers, backends and generators at this nice "
                    "value (e.g. -5 on a box shared with other work; needs root for < 0)")
    a = ap.parse_args(argv)
    run.NICE = a.nice
    workloads, labels = a.only.split(","), a.targets.split(",")
    for w in workloads:
        if w not in run.WORKLOADS or run.WORKLOADS[w]["kind"] != "echo":
            ap.error(f"not an echo workload: {w!r}")
    env = run.env_info()
    env.update({p: dpkg_version(p) for p in ("pushpin", "condure", "zurl")})
    doc = {"stamp": time.strftime("%Y%m%d-%H%M%S"), "env": env, "duration": a.duration, "scale": a.scale,
           "reps": a.reps, "nice": a.nice, "workloads": workloads, "targets": labels, "runs": []}
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, f"upstream-{doc['stamp']}")
    for rep in range(a.reps):
        for wid in workloads:
            for label in labels:
                run.log(f"[{rep + 1}/{a.reps}] {wid} {label} ...")
                split = ByProcess(a.duration)
                r = run.run_one(wid, label, a.duration, a.scale, on_go=split)
                r["rep"] = rep
                r["server_cpu_pct_by_process"] = split.get()
                if r.get("server_us_per_msg") is not None:
                    r["total_us_per_msg"] = round(r["server_us_per_msg"] + (r.get("backend_us_per_msg") or 0), 2)
                run.log(f"    {'ok' if r['ok'] else 'FAILED'} {run.headline(r)} backend "
                        f"{r.get('backend_us_per_msg')} us/msg {r.get('backend_req_per_msg')} req/msg"
                        + ("" if r["ok"] else f"  {r.get('checks') or r.get('error')}"))
                doc["runs"].append(r)
                with open(base + ".json", "w") as f:
                    json.dump(doc, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(markdown(doc))
    run.log(f"wrote {base}.json and {base}.md")
    return 0 if all(r["ok"] for r in doc["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
