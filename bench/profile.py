"""Profile ngxws's workers under a workload with py-spy: where does a push, an echo go?

    python -m bench.profile push_max ngxws-w1 [--duration 10] [--rate 200]

Runs the workload as the suite does, attaches `py-spy record` to every worker for the measured
window, and writes results/profiles/<workload>-<target>.{raw,txt}: the collapsed stacks and a
summary (self time and inclusive time per function, in % of the samples in which the worker was
running; the collapsed stacks too with --keep-raw). py-spy slows the worker down a little (it stops it to sample); compare the timings of
the suite, not of a profiled run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

from .run import RESULTS, headline, run_one


def _func(frame: str) -> str:
    """'name (path/file.py:123)' -> 'name (path/file.py)': a function, all its lines together."""
    head, _, tail = frame.rpartition(":")
    return head + ")" if tail.endswith(")") and tail[:-1].isdigit() else frame


def summarize(raw_files: list[str], top: int = 25) -> str:
    """Self and inclusive time per function, and the hottest lines, from py-spy raw output."""
    self_f, incl_f, self_l, total = Counter(), Counter(), Counter(), 0
    for path in raw_files:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip().rpartition(" ")
                if not stack or not n.isdigit():
                    continue
                n = int(n)
                frames = [fr for fr in stack.split(";") if not fr.startswith(("process ", "thread "))]
                if not frames:
                    continue
                total += n
                self_l[frames[-1]] += n
                self_f[_func(frames[-1])] += n
                for fn in {_func(fr) for fr in frames}:
                    incl_f[fn] += n
    if not total:
        return "no samples\n"

    def block(title, counter, k):
        return [title] + [f"  {n / total * 100:5.1f}%  {fr}" for fr, n in counter.most_common(k)] + [""]

    return "\n".join([f"samples: {total}", ""]
                     + block("self time per function (the function itself, not its callees):", self_f, top)
                     + block("inclusive time per function (with everything it calls):", incl_f, top + 10)
                     + block("hottest lines (self):", self_l, 15))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload")
    ap.add_argument("target", help="e.g. ngxws-w1")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--out", default=os.path.join(RESULTS, "profiles"))
    ap.add_argument("--keep-raw", action="store_true", help="keep py-spy's collapsed stacks beside the summary")
    a = ap.parse_args(argv)
    spy = shutil.which("py-spy")
    if not spy:
        ap.error("py-spy is not installed (pip install py-spy)")
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, f"{a.workload}-{a.target}")
    rawbase = base if a.keep_raw else os.path.join(tempfile.mkdtemp(prefix="bench-prof-"), "p")
    spies, raws = [], []

    def on_go(target, pids):
        workers = pids[1:] if len(pids) > 1 else pids  # not the master: it sleeps on signals
        for k, pid in enumerate(workers):
            raw = f"{rawbase}.w{k}.raw"
            raws.append(raw)
            spies.append(subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(a.duration)),
                                           "-r", str(a.rate), "--nonblocking", "-f", "raw", "-o", raw],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    r = run_one(a.workload, a.target, a.duration + 1, a.scale, on_go=on_go)
    for p in spies:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    raws = [x for x in raws if os.path.exists(x)]
    summary = summarize(raws)
    if not a.keep_raw:
        shutil.rmtree(os.path.dirname(rawbase), ignore_errors=True)
    commit = subprocess.run(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "log", "-1", "--format=%h %cd", "--date=iso", "--", "ngxws"],
                            capture_output=True, text=True).stdout.strip()
    text = (f"# {a.workload} on {a.target}, py-spy at {a.rate} Hz over {a.duration:g} s; "
            f"ngxws work tree at {commit} (last commit touching ngxws/)\n"
            f"# run (profiled, so slower than the suite's): {headline(r)}; ok={r['ok']}\n\n"
            + summary)
    with open(base + ".txt", "w") as f:
        f.write(text)
    print(text)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
