"""Run the benchmark suite side by side: ngxws, Nchan, aiohttp, websockets.

    python -m bench                          # the whole suite, ~10 minutes
    python -m bench --only push_max,echo_pingpong --targets ngxws-w2,aiohttp
    python -m bench --duration 3 --scale 0.2 # a quick look
    python -m bench one push_max ngxws-w2    # one run, JSON on stdout

For each run the runner starts the target (fresh state, temp prefix, loopback, free port), starts
the load generator process(es) (bench/loadgen.py), meters the server's process tree and the
generators over the measured window from /proc, stops everything by pid and checks that nothing
was lost, misrouted or failed. The suite writes results/bench-<stamp>.json, results/latest.md
(the tables) and results/latest.png (the chart).

Layout on a 2-core box: a single-process server (aiohttp, websockets, nchan-w1 and ngxws-w1: one
worker, plus an idle master) is pinned to CPU 0 and the generator to CPU 1; two-worker servers are
left to the scheduler and share both cores with the generator.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata

if __package__ in (None, ""):  # run as a script: bench/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"
from . import proc, targets  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(BENCH, "results")

# workload -> definition. conns scale with --scale; procs = generator processes.
WORKLOADS = {
    "push_max": dict(kind="push", conns=1000, args=["--rate", "0", "--http-conns", "32", "--msgsize", "64"],
                     targets=["ngxws-w1", "ngxws-w2", "nchan-w1", "nchan-w2", "aiohttp"],
                     what="1,000 subscribers; pushes as fast as 32 keep-alive HTTP connections allow, one "
                          "in flight each, 64-byte bodies, round robin"),
    "push_2000": dict(kind="push", conns=1000, args=["--rate", "2000", "--http-conns", "32", "--msgsize", "64"],
                      targets=["ngxws-w1", "ngxws-w2", "nchan-w1", "nchan-w2", "aiohttp"],
                      what="1,000 subscribers; open loop at 2,000 pushes/s (1 ms ticker) over 32 keep-alive "
                           "HTTP connections, 64-byte bodies"),
    "hold_10k": dict(kind="hold", conns=10000, hold=6.0,
                     targets=["ngxws-w1", "ngxws-w2", "nchan-w1", "nchan-w2", "aiohttp", "websockets"],
                     what="10,000 idle connections; server RSS and PSS growth per connection, summed over "
                          "master and workers"),
    "hold_36k": dict(kind="hold", conns=36000, procs=2, hold=40.0, idle_window=(5.0, 35.0),
                     opts={"ping": 30000}, targets=["ngxws-w2", "nchan-w2"], min_workers=2,
                     src=["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"],
                     what="36,000 connections over 2 workers with pings every 30 s (ngxws pingintvl=30000, "
                          "nchan_websocket_ping_interval 30), two generator processes on 127.0.0.2-5; "
                          "server CPU over a 30 s idle window"),
    "echo_pingpong": dict(kind="echo", conns=100, args=["--msgsize", "32", "--window", "1"],
                          targets=["ngxws-w1", "ngxws-w2", "aiohttp", "websockets"],
                          what="100 connections, 32-byte text messages, one in flight per connection"),
    "echo_window8": dict(kind="echo", conns=100, args=["--msgsize", "32", "--window", "8"],
                         targets=["ngxws-w1", "ngxws-w2", "aiohttp", "websockets"],
                         what="100 connections, 32-byte text messages, eight in flight per connection"),
    "handshakes": dict(kind="handshakes", conns=0, args=["--concurrency", "32"],
                       targets=["ngxws-w1", "ngxws-w2", "nchan-w1", "nchan-w2", "aiohttp", "websockets"],
                       src=["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"],
                       what="32 loops of connect, handshake, first message (push URL or id; none for nchan "
                            "and websockets), close handshake"),
}
ORDER = list(WORKLOADS)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def pinned(t: targets.Target) -> bool:
    return t.workers == 1


class Generators:
    """The load generator processes of one run, driven by the line protocol of loadgen.py."""

    def __init__(self, cmds: list[list[str]], cpus, errdir: str):
        self.procs = []
        for n, cmd in enumerate(cmds):
            err = open(os.path.join(errdir, f"loadgen{n}.err"), "wb")
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                 cwd=os.path.dirname(BENCH), start_new_session=True)
            err.close()
            if cpus:
                os.sched_setaffinity(p.pid, cpus)
            self.procs.append(p)
        self.sel = selectors.DefaultSelector()
        self.bufs = {}
        for p in self.procs:
            os.set_blocking(p.stdout.fileno(), False)
            self.sel.register(p.stdout, selectors.EVENT_READ, p)
            self.bufs[p.pid] = b""

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def expect(self, word: str, timeout: float) -> list[dict | None]:
        """Wait until every generator has printed a line starting with word; their JSON payloads."""
        got: dict[int, dict | None] = {}
        end = time.monotonic() + timeout
        while len(got) < len(self.procs):
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"load generator: no {word} after {timeout:.0f}s")
            for key, _ in self.sel.select(min(left, 0.5)):
                p = key.data
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    self.sel.unregister(p.stdout)
                    if p.pid not in got:
                        raise RuntimeError(f"load generator {p.pid} exited before {word}")
                    continue
                self.bufs[p.pid] += chunk
                while b"\n" in self.bufs[p.pid]:
                    line, _, self.bufs[p.pid] = self.bufs[p.pid].partition(b"\n")
                    w, _, payload = line.decode().partition(" ")
                    if w == word:
                        got[p.pid] = json.loads(payload) if payload else None
                    elif w == "DONE":  # a generator that gave up early says why
                        raise RuntimeError(f"load generator failed: {payload}")
        return [got[p.pid] for p in self.procs]

    def send(self, word: str):
        for p in self.procs:
            try:
                p.stdin.write(word.encode() + b"\n")
                p.stdin.flush()
            except BrokenPipeError:
                pass

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def merge(parts: list[dict]) -> dict:
    """Combine the reports of several generators: counters add up, durations take the longest,
    latency percentiles take the worst part's."""
    if len(parts) == 1:
        return parts[0]
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, bool) or v is None or isinstance(v, (str, list)):
                out.setdefault(k, v)
            elif isinstance(v, dict):
                d = out.setdefault(k, {})
                for kk, vv in v.items():
                    if isinstance(vv, (int, float)):
                        d[kk] = max(d.get(kk, 0), vv) if k.endswith("_ms") else d.get(kk, 0) + vv
            elif k.endswith("_s") and not k.endswith("_per_s"):
                out[k] = max(out.get(k, 0), v)
            else:
                out[k] = out.get(k, 0) + v
    return out


NICE = 0  # --nice: priority of servers and generators (the box is shared with other work)


def renice(pids, nice: int) -> None:
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else ():
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except OSError:
                pass


def run_one(workload: str, label: str, duration: float = 10.0, scale: float = 1.0,
            target_opts: dict | None = None, on_go=None) -> dict:
    """One workload against one target; returns the result record (also on failure: ok False).
    on_go(target, server_pids), if given, is called when the measured window opens (profilers)."""
    w = WORKLOADS[workload]
    opts = {**w.get("opts", {}), **(target_opts or {})}
    t = targets.make(label, **opts)
    kind = w["kind"]
    res = {"workload": workload, "target": label, "kind": kind, "ok": False, "checks": [],
           "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "duration": duration, "scale": scale,
           "loadavg": open("/proc/loadavg").read().split()[:3]}
    if kind == "push" and not t.push:
        res["error"] = "no push API"
        return res
    if kind == "echo" and not t.echo:
        res["error"] = "not an echo server"
        return res
    conns = max(1, int(w["conns"] * scale)) if w["conns"] else 0
    nprocs = w.get("procs", 1)
    pin = pinned(t)
    res["layout"] = "pin" if pin else "free"
    gens = None
    errdir = tempfile.mkdtemp(prefix="bench-loadgen-")
    try:
        t.start(cpus={0} if pin else None)
        server = t.pids()
        res["server_procs"] = len(server)
        if NICE:
            renice(server, NICE)
            res["nice"] = NICE
        time.sleep(0.3)
        rss0, pss0 = proc.rss_kib(server), proc.pss_kib(server)
        tag = f"{random.randrange(1 << 30):x}"
        spec = json.dumps(t.client_spec())
        cmds = []
        per = conns // nprocs
        for n in range(nprocs):
            c = per if n < nprocs - 1 else conns - per * (nprocs - 1)
            cmd = [sys.executable, "-m", "bench.loadgen", kind, "--spec", spec, "--tag", tag,
                   "--conns", str(c), "--first", str(per * n), "--duration", str(duration)]
            src = w.get("src")
            if src:
                half = len(src) // nprocs
                cmd += ["--src", ",".join(src[n * half:(n + 1) * half] if nprocs > 1 else src)]
            cmds.append(cmd + w.get("args", []))
        gens = Generators(cmds, {1} if pin else None, errdir)
        if NICE:
            renice(gens.pids, NICE)
        ready = gens.expect("READY", 120 + conns / 500)
        res["connect"] = merge(ready)
        aux = t.aux_pids() if hasattr(t, "aux_pids") else {}  # e.g. an upstream target's backend
        meter = proc.CpuMeter({"server": server, "loadgen": gens.pids, **aux})
        c0 = t.counters() if aux else {}  # before GO: the counted window covers the measured one
        gens.send("GO")
        meter.start()
        if on_go is not None:
            on_go(t, server)
        if kind == "hold":
            hold = w["hold"] if scale >= 1 else min(w["hold"], duration)
            t0 = time.monotonic()
            time.sleep(min(2.0, hold / 2))
            rss1, pss1 = proc.rss_kib(server), proc.pss_kib(server)
            lo, hi = w.get("idle_window", (0.0, hold))
            if scale < 1:
                lo, hi = 0.0, hold
            idle = None
            if lo > time.monotonic() - t0:
                time.sleep(lo - (time.monotonic() - t0))
            if hi > lo:
                idle = proc.CpuMeter({"server": server, "loadgen": gens.pids}).start()
                time.sleep(max(0.0, hi - (time.monotonic() - t0)))
                idle = idle.stop()
            time.sleep(max(0.0, hold - (time.monotonic() - t0)))
            rss2, pss2 = proc.rss_kib(server), proc.pss_kib(server)
            cpu = meter.stop()
            gens.send("STOP")
            done = merge(gens.expect("DONE", 60))
            n = max(1, res["connect"]["connected"])
            res.update(cpu)
            res.update(done)
            res.update({"server_rss_kib": [rss0, rss1, rss2], "server_pss_kib": [pss0, pss1, pss2],
                        "rss_per_conn_kib": round((max(rss1, rss2) - rss0) / n, 2),
                        "pss_per_conn_kib": round((max(pss1, pss2) - pss0) / n, 2),
                        "idle": idle})
        else:
            gens.expect("END", duration + 60)
            cpu = meter.stop()
            done = merge(gens.expect("DONE", 60))
            res.update(cpu)
            res.update(done)
            if kind == "push":
                res["delivered_per_s"] = round(done["delivered"] / done["elapsed_s"], 1) if done.get("elapsed_s") else 0
                res["server_us_per_push"] = meter.us_per("server", done.get("delivered", 0))
                res["loadgen_us_per_push"] = meter.us_per("loadgen", done.get("delivered", 0))
            elif kind == "echo":
                res["server_us_per_msg"] = meter.us_per("server", done.get("msgs", 0))
                res["loadgen_us_per_msg"] = meter.us_per("loadgen", done.get("msgs", 0))
                for g in aux:
                    res[f"{g}_us_per_msg"] = meter.us_per(g, done.get("msgs", 0))
                if aux:
                    res.update(t.counter_delta(c0, t.counters()))
            elif kind == "handshakes":
                res["server_us_per_handshake"] = meter.us_per("server", done.get("handshakes", 0))
                res["loadgen_us_per_handshake"] = meter.us_per("loadgen", done.get("handshakes", 0))
        res["checks"] = check(kind, res, expected=conns)
        res["ok"] = not res["checks"] and "error" not in res
    except Exception as e:  # noqa: BLE001 - a failed run is a result too
        res["error"] = f"{type(e).__name__}: {e}"
        res["server_log_tail"] = t.log_tail(1500)
    finally:
        if gens is not None:
            gens.stop()
            for n in range(len(gens.procs)):
                p = os.path.join(errdir, f"loadgen{n}.err")
                if os.path.getsize(p):
                    with open(p, errors="replace") as f:
                        res.setdefault("loadgen_stderr", []).append(f.read()[-1500:])
        shutil.rmtree(errdir, ignore_errors=True)
        t.stop()
        bad = t.error_lines()
        if bad:
            res["server_errors"] = bad[:10]
            res["ok"] = False
        t.cleanup()
    return res


def check(kind: str, r: dict, expected: int) -> list[str]:
    """What went wrong in a finished run (empty: nothing lost, misrouted or failed)."""
    bad = []
    c = r.get("connect", {})
    if kind != "handshakes" and c.get("connected") != expected:
        bad.append(f"connected {c.get('connected')} of {expected}: {c.get('connect_errors')}")
    if r.get("error"):
        bad.append(r["error"])
    if kind == "push":
        for k in ("lost", "misrouted", "failed", "http_conn_lost"):
            if r.get(k):
                bad.append(f"{k} {r[k]}")
        if not r.get("delivered"):
            bad.append("nothing delivered")
    elif kind == "echo":
        for k in ("unanswered", "mismatched"):
            if r.get(k):
                bad.append(f"{k} {r[k]}")
        if not r.get("msgs"):
            bad.append("nothing echoed")
    elif kind == "handshakes":
        for k in ("failed", "dup_ids"):
            if r.get(k):
                bad.append(f"{k} {r[k]}: {r.get('errors')}")
        if not r.get("handshakes"):
            bad.append("no handshake completed")
    elif kind == "hold":
        if r.get("alive") != c.get("connected"):
            bad.append(f"alive {r.get('alive')} of {c.get('connected')} at the end of the hold")
    if kind != "hold" and r.get("disconnects"):
        bad.append(f"server dropped {r['disconnects']} connections")
    return bad


# ------------------------------------------------------------------ the suite

def env_info() -> dict:
    def out(*cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip()
        except OSError as e:
            return str(e)
    pk = {}
    for p in ("picows", "uvloop", "aiohttp", "websockets", "wsproto", "h11"):
        try:
            pk[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pk[p] = None
    cpu = out("sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = out("git", "-C", os.path.dirname(BENCH), "rev-parse", "--short", "HEAD")
    return {"machine": f"{os.cpu_count()} cores ({cpu.strip()}), {mem:.0f} GiB, Linux {platform.release()}",
            "host": platform.node(), "python": platform.python_version(), "nginx": out("nginx", "-v"),
            "nchan": out("dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"),
            "packages": pk, "ngxws_commit": commit, "loadavg": open("/proc/loadavg").read().split()[:3]}


def suite(only, labels, reps, duration, scale, out_dir=RESULTS) -> dict:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    doc = {"stamp": stamp, "env": env_info(), "duration": duration, "scale": scale, "reps": reps,
           "nice": NICE, "runs": []}
    for rep in range(reps):
        for wid in only:
            for label in (labels or WORKLOADS[wid]["targets"]):
                if labels and not accepts(wid, label):
                    continue
                log(f"[{rep + 1}/{reps}] {wid} {label} ...")
                r = run_one(wid, label, duration, scale)
                r["rep"] = rep
                log(f"    {'ok' if r['ok'] else 'FAILED'} {headline(r)}"
                    + ("" if r["ok"] else f"  {r.get('checks') or r.get('error')} {r.get('server_errors', '')}"))
                doc["runs"].append(r)
                save(doc, out_dir)
    from . import report
    report.write(doc, out_dir)
    return doc


def accepts(wid: str, label: str) -> bool:
    t = targets.make(label)
    w = WORKLOADS[wid]
    if t.workers < w.get("min_workers", 1):
        return False
    return not ((w["kind"] == "push" and not t.push) or (w["kind"] == "echo" and not t.echo))


def headline(r: dict) -> str:
    k = r.get("kind")
    if k == "push":
        return (f"delivered/s {r.get('delivered_per_s')} p99 {r.get('latency_ms', {}).get('p99')} ms "
                f"server {r.get('server_us_per_push')} us/push loadgen {r.get('loadgen_cpu_pct')}%")
    if k == "echo":
        return (f"msgs/s {r.get('msgs_per_s')} server {r.get('server_us_per_msg')} us/msg "
                f"loadgen {r.get('loadgen_cpu_pct')}%")
    if k == "hold":
        idle = (r.get("idle") or {}).get("server_cpu_pct")
        return (f"connected {r.get('connect', {}).get('connected')} PSS {r.get('pss_per_conn_kib')} KiB/conn "
                f"RSS {r.get('rss_per_conn_kib')} idle CPU {idle}% pings {r.get('pings_in_hold')}")
    if k == "handshakes":
        return f"handshakes/s {r.get('handshakes_per_s')} server {r.get('server_us_per_handshake')} us/each"
    return ""


def save(doc: dict, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"bench-{doc['stamp']}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help=f"comma-separated workloads (default all: {','.join(ORDER)})")
    ap.add_argument("--targets", help="comma-separated targets instead of each workload's list, e.g. "
                    "ngxws-w1,ngxws-w2,nchan-w2,aiohttp,websockets")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10, help="measured seconds per run")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply connection counts (0.1: a quick look)")
    ap.add_argument("--out", default=RESULTS, help="results folder")
    ap.add_argument("--nice", type=int, default=0, help="run servers and generators at this nice value "
                    "(e.g. -5 on a box shared with other work; needs root for < 0)")
    ap.add_argument("one", nargs="*", help="'one WORKLOAD TARGET': a single run, JSON on stdout")
    a = ap.parse_args(argv)
    global NICE
    NICE = a.nice
    if a.one:
        if len(a.one) != 3 or a.one[0] != "one":
            ap.error("positional form: one WORKLOAD TARGET")
        r = run_one(a.one[1], a.one[2], a.duration, a.scale)
        print(json.dumps(r, indent=1))
        return 0 if r["ok"] else 1
    only = a.only.split(",") if a.only else ORDER
    for w in only:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; known: {', '.join(ORDER)}")
    labels = a.targets.split(",") if a.targets else None
    doc = suite(only, labels, a.reps, a.duration, a.scale, a.out)
    return 0 if all(r["ok"] for r in doc["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
