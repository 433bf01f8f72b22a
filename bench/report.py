"""Tables (markdown) and a chart (PNG) from a suite's JSON: results/latest.md, results/latest.png.

    python -m bench.report results/bench-STAMP.json     # redo the table and chart of an old run
"""
from __future__ import annotations

import json
import os
import statistics
import sys

from .run import RESULTS, WORKLOADS

LAT = [("p50 ms", "latency_ms.p50"), ("p99 ms", "latency_ms.p99")]
LOSS = ("lost / misrouted / failed", "_loss")
OTHER = ("other CPU%", "other_cpu_pct")  # everything else on the machine during the window: noise
COLUMNS = {
    "push_max": [("delivered/s", "delivered_per_s")] + LAT + [
        ("server µs/push", "server_us_per_push"), ("server CPU%", "server_cpu_pct"),
        ("loadgen CPU%", "loadgen_cpu_pct"), ("loadgen µs/push", "loadgen_us_per_push"), LOSS, OTHER],
    "push_2000": [("delivered/s", "delivered_per_s")] + LAT + [
        ("max ms", "latency_ms.max"), ("ticker lag p99 ms", "schedule_lag_ms.p99"),
        ("server µs/push", "server_us_per_push"), ("server CPU%", "server_cpu_pct"),
        ("loadgen CPU%", "loadgen_cpu_pct"), LOSS, OTHER],
    "hold_10k": [("connected", "connect.connected"), ("RSS KiB/conn", "rss_per_conn_kib"),
                 ("PSS KiB/conn", "pss_per_conn_kib"), ("connects/s", "connect.connects_per_s"),
                 ("idle server CPU%", "idle.server_cpu_pct")],
    "hold_36k": [("connected", "connect.connected"), ("alive at end", "alive"),
                 ("pings answered in window", "pings_in_hold"), ("RSS KiB/conn", "rss_per_conn_kib"),
                 ("PSS KiB/conn", "pss_per_conn_kib"), ("idle server CPU%", "idle.server_cpu_pct"),
                 ("idle loadgen CPU%", "idle.loadgen_cpu_pct"), ("other CPU%", "idle.other_cpu_pct")],
    "echo_pingpong": [("msgs/s", "msgs_per_s")] + LAT + [
        ("server µs/msg", "server_us_per_msg"), ("server CPU%", "server_cpu_pct"),
        ("loadgen CPU%", "loadgen_cpu_pct"), ("loadgen µs/msg", "loadgen_us_per_msg"),
        ("unanswered / mismatched", "_echo_loss"), OTHER],
    "handshakes": [("handshakes/s", "handshakes_per_s")] + LAT + [
        ("server µs/handshake", "server_us_per_handshake"), ("server CPU%", "server_cpu_pct"),
        ("loadgen CPU%", "loadgen_cpu_pct"), ("failed / dup ids", "_shake_loss"), OTHER],
}
COLUMNS["echo_window8"] = COLUMNS["echo_pingpong"]

# the chart: (workload, metric path, title, lower is better)
PANELS = [
    ("push_max", "delivered_per_s", "push_max: delivered/s", False),
    ("push_max", "server_us_per_push", "push_max: server CPU µs per push", True),
    ("push_2000", "latency_ms.p99", "push_2000: p99 latency, ms, log scale", True),
    ("hold_10k", "pss_per_conn_kib", "hold_10k: PSS KiB per connection", True),
    ("echo_pingpong", "msgs_per_s", "echo_pingpong: msgs/s", False),
    ("echo_window8", "server_us_per_msg", "echo_window8: server CPU µs per msg", True),
    ("handshakes", "handshakes_per_s", "handshakes/s", False),
    ("hold_36k", "idle.server_cpu_pct", "hold_36k: server CPU% at idle (pings on)", True),
]


def get(d, path):
    if path == "_loss":
        return f"{d.get('lost', '-')} / {d.get('misrouted', '-')} / {d.get('failed', '-')}"
    if path == "_echo_loss":
        return f"{d.get('unanswered', '-')} / {d.get('mismatched', '-')}"
    if path == "_shake_loss":
        return f"{d.get('failed', '-')} / {d.get('dup_ids', '-')}"
    for k in path.split("."):
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and abs(v) < 100:
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:,.0f}"


def cell(vals) -> str:
    """Median of the repetitions, with (min-max) when there are several."""
    nums = [v for v in vals if isinstance(v, (int, float))]
    if not nums:
        strs = [v for v in vals if isinstance(v, str)]
        return strs[0] if len(set(strs)) == 1 else " · ".join(strs) if strs else "-"
    m = statistics.median(nums)
    return fmt(m) if len(nums) == 1 else f"{fmt(m)} ({fmt(min(nums))}-{fmt(max(nums))})"


def grouped(doc) -> dict:
    """workload -> target label -> list of runs, in suite order."""
    out: dict = {}
    for r in doc["runs"]:
        out.setdefault(r["workload"], {}).setdefault(r["target"], []).append(r)
    return out


def median_of(runs, path):
    nums = [get(r, path) for r in runs if r.get("ok")]
    nums = [v for v in nums if isinstance(v, (int, float))]
    return statistics.median(nums) if nums else None


def markdown(doc) -> str:
    env = doc["env"]
    lines = [f"# Benchmark results ({doc['stamp']})", "",
             f"Machine: {env['machine']}; Python {env['python']}; {env['nginx']}, nchan {env['nchan']}; "
             f"packages {', '.join(f'{k} {v}' for k, v in env['packages'].items() if v)}; "
             f"ngxws at {env['ngxws_commit']}.", "",
             f"Measured window {doc['duration']:g} s per run; {doc['reps']} repetition(s)"
             + (" (cells: median (min-max))" if doc["reps"] > 1 else "")
             + (f"; connection counts scaled by {doc['scale']:g}" if doc["scale"] != 1 else "")
             + ". Layout 'pin': the server (one worker) on CPU 0, the load generator on CPU 1; 'free': "
             "two workers and the load generator share both cores. CPU% is 100 per core; 'server µs/op' is "
             "the server tree's CPU time (master + workers, user + system) over the measured window divided "
             "by the operations; the load generator's own CPU is shown beside it; 'other CPU%' is what the rest "
             "of the machine used during the window (200 = both cores busy elsewhere): a run with a high "
             "one is noisy, compare its µs/op rather than its rates. " + noise(doc), ""]
    lines += targets_table(doc)
    for wid, by_target in grouped(doc).items():
        cols = COLUMNS[wid]
        lines += [f"## {wid}", "", WORKLOADS[wid]["what"] + ".", "",
                  "| target | layout | " + " | ".join(c[0] for c in cols) + " | ok |",
                  "|---|---|" + "---|" * len(cols) + "---|"]
        for label, runs in by_target.items():
            row = [label, runs[0].get("layout", "-")]
            for _, path in cols:
                row.append(cell([get(r, path) for r in runs]))
            ok = sum(bool(r.get("ok")) for r in runs)
            row.append(f"{ok}/{len(runs)}")
            lines.append("| " + " | ".join(row) + " |")
        bad = [(label, r) for label, runs in by_target.items() for r in runs if not r.get("ok")]
        if bad:
            lines.append("")
            for label, r in bad:
                why = "; ".join(r.get("checks") or []) or r.get("error") or ""
                errs = r.get("server_errors")
                lines.append(f"- {label} failed: {why}" + (f" (server log: {errs[0]})" if errs else ""))
        lines.append("")
    return "\n".join(lines) + "\n"


def targets_table(doc) -> list[str]:
    """The issue's targets for ngxws, measured in this run (2 workers unless said)."""
    g = grouped(doc)

    def m(wid, label, path):
        return median_of(g.get(wid, {}).get(label, []), path)

    rows = []

    def add(what, value, goal, ok):
        rows.append(f"| {what} | {fmt(value) if not isinstance(value, str) else value} | {goal} | "
                    f"{'-' if ok is None else ('yes' if ok else '**no**')} |")

    v = m("push_max", "ngxws-w2", "server_us_per_push")
    add("push_max: server µs/push, ngxws-w2", v, "≤ 40", None if v is None else v <= 40)
    a, n, x = (m("push_max", lb, "delivered_per_s") for lb in ("aiohttp", "nchan-w2", "ngxws-w2"))
    add("push_max: delivered/s, ngxws-w2 ÷ aiohttp", x / a if a and x else None, "≥ 1.5",
        None if not (a and x) else x / a >= 1.5)
    add("push_max: delivered/s, ngxws-w2 ÷ nchan-w2", x / n if n and x else None, "≥ 0.5",
        None if not (n and x) else x / n >= 0.5)
    n, x = m("push_2000", "nchan-w2", "latency_ms.p99"), m("push_2000", "ngxws-w2", "latency_ms.p99")
    add("push_2000: p99, ngxws-w2 ÷ nchan-w2", x / n if n and x else None, "≤ 1.5",
        None if not (n and x) else x / n <= 1.5)
    v = m("echo_pingpong", "ngxws-w1", "server_us_per_msg")
    add("echo_pingpong: server µs/msg, ngxws-w1", v, "≤ 20", None if v is None else v <= 20)
    for wid in ("echo_pingpong", "echo_window8"):
        w1, ws = m(wid, "ngxws-w1", "msgs_per_s"), m(wid, "websockets", "msgs_per_s")
        add(f"{wid}: msgs/s, ngxws-w1 ÷ websockets", w1 / ws if w1 and ws else None, "> 1",
            None if not (w1 and ws) else w1 > ws)
        w2, ah = m(wid, "ngxws-w2", "msgs_per_s"), m(wid, "aiohttp", "msgs_per_s")
        add(f"{wid}: msgs/s, ngxws-w2 ÷ aiohttp", w2 / ah if w2 and ah else None, "> 1",
            None if not (w2 and ah) else w2 > ah)
    v = m("hold_10k", "ngxws-w2", "pss_per_conn_kib")
    add("hold_10k: PSS KiB/conn, ngxws-w2", v, "≤ 8", None if v is None else v <= 8)
    c, cpu = m("hold_36k", "ngxws-w2", "alive"), m("hold_36k", "ngxws-w2", "idle.server_cpu_pct")
    add("hold_36k: connections held, ngxws-w2", c, "36,000", None if c is None else c >= 36000)
    add("hold_36k: server CPU% at idle, ngxws-w2", cpu, "< 5", None if cpu is None else cpu < 5)
    ngx = [r for r in doc["runs"] if r["target"].startswith("ngxws")]
    okn = sum(bool(r.get("ok")) for r in ngx)
    add("ngxws runs with nothing lost, misrouted or failed", f"{okn}/{len(ngx)}", "all",
        None if not ngx else okn == len(ngx))
    return ["## ngxws against the targets of issue 6", "",
            "| target | measured | goal | met |", "|---|---|---|---|"] + rows + [""]


SUMMARY = [("push_max delivered/s", "push_max", "delivered_per_s"),
           ("push µs/push", "push_max", "server_us_per_push"),
           ("push_2000 p99 ms", "push_2000", "latency_ms.p99"),
           ("hold_10k PSS KiB/conn", "hold_10k", "pss_per_conn_kib"),
           ("hold_36k idle CPU%", "hold_36k", "idle.server_cpu_pct"),
           ("echo ping-pong msgs/s", "echo_pingpong", "msgs_per_s"),
           ("echo µs/msg", "echo_pingpong", "server_us_per_msg"),
           ("echo window 8 msgs/s", "echo_window8", "msgs_per_s"),
           ("handshakes/s", "handshakes", "handshakes_per_s")]


def summary(doc) -> str:
    """One row per target, the headline figure of each workload (README)."""
    g = grouped(doc)
    labels = []
    for by_target in g.values():
        labels += [lb for lb in by_target if lb not in labels]
    cols = [c for c in SUMMARY if c[1] in g]
    lines = ["| target | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for lb in sorted(labels, key=lambda x: (not x.startswith("ngxws"), x)):
        cells = [fmt(median_of(g[w].get(lb, []), p)) for _, w, p in cols]
        name = f"**{lb}**" if lb.startswith("ngxws") else lb
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    env = doc["env"]
    head = (f"Run {doc['stamp']} on {env['machine']}, Python {env['python']}, ngxws at "
            f"{env['ngxws_commit']}; {doc['duration']:g} s per run, {doc['reps']} repetition(s)"
            + (f", connection counts x{doc['scale']:g}" if doc["scale"] != 1 else "") + ". "
            "µs = server CPU per operation (master + workers). '-': not applicable or failed. "
            + noise(doc))
    return head + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(targets_table(doc)[2:]) + "\n"


def noise(doc) -> str:
    others = sorted(r["other_cpu_pct"] for r in doc["runs"] if r.get("other_cpu_pct") is not None)
    if not others:
        return ""
    med = others[len(others) // 2]
    text = (f"The rest of the machine used {med:.0f}% CPU (median over the runs; 200% = both cores) while "
            "these ran")
    return text + (": rates are depressed and noisy, the µs per operation are the figures to compare."
                   if med > 30 else ".")


def update_readme(doc, readme: str) -> bool:
    """Replace the text between the latest-results markers of a README (bench's and the project's)."""
    begin, end = "<!-- latest:begin -->", "<!-- latest:end -->"
    try:
        with open(readme) as f:
            text = f.read()
    except OSError:
        return False
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        return False
    with open(readme, "w") as f:
        f.write(text[:i + len(begin)] + "\n" + summary(doc) + text[j:])
    return True


def chart(doc, path: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    g = grouped(doc)
    panels = [p for p in PANELS if p[0] in g]
    if not panels:
        return None
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (wid, metric, title, lower) in zip(axes.flat, panels):
        labels = list(g[wid])
        got = [median_of(g[wid][lb], metric) for lb in labels]
        vals = [v or 0 for v in got]
        colors = ["#1f77b4" if lb.startswith("ngxws") else "#9e9e9e" for lb in labels]
        bars = ax.bar(range(len(labels)), vals, color=colors)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title + (" (lower is better)" if lower else ""), fontsize=9)
        if "log scale" in title and any(v > 0 for v in vals):
            ax.set_yscale("log")
        ax.tick_params(axis="y", labelsize=8)
        for b, v in zip(bars, got):
            ax.annotate("n/a" if v is None else fmt(v), (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
        ax.margins(y=0.15)
    env = doc["env"]
    fig.suptitle(f"ngxws (blue) and peers, {env['machine']}, {doc['stamp']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(doc, out_dir: str) -> None:
    md = markdown(doc)
    stamp = doc["stamp"]
    for name in (f"bench-{stamp}.md", "latest.md"):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(md)
    p = chart(doc, os.path.join(out_dir, f"bench-{stamp}.png"))
    if p:
        import shutil
        shutil.copyfile(p, os.path.join(out_dir, "latest.png"))
    if os.path.abspath(out_dir) == os.path.abspath(RESULTS):
        bench_dir = os.path.dirname(RESULTS)
        update_readme(doc, os.path.join(bench_dir, "README.md"))
        # the project's README shows the same latest table
        update_readme(doc, os.path.join(os.path.dirname(bench_dir), "README.md"))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        doc = json.load(f)
    write(doc, os.path.dirname(os.path.abspath(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
