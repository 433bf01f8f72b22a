"""The benchmark suite runs against ngxws: a 2-second run of each workload, scaled down, on 2 workers.

Speed is not asserted here (the suite itself shows it); what is asserted is that each workload
completes and that nothing was lost, misrouted or failed: every acknowledged push arrived at the
subscriber it was addressed to, every echo came back in order, every handshake got its push URL
with a unique id, every held connection was still open at the end, and the server's error log has
no [alert]/[crit]/[emerg] line. Skipped only when the `bench` extra (picows, uvloop) is missing.
"""
import os
import sys

import pytest

pytest.importorskip("picows", reason="the bench extra is not installed: pip install -e '.[bench]'")
pytest.importorskip("uvloop", reason="the bench extra is not installed: pip install -e '.[bench]'")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench import report  # noqa: E402
from bench.run import WORKLOADS, run_one  # noqa: E402

SCALE = 0.05  # 50 subscribers, 500 held connections, 1,800 over two generators, 5 echo connections


def render(runs):
    """The suite's markdown report over `runs`, as python -m bench.report writes it."""
    doc = {"stamp": "smoke", "env": {"machine": "test", "python": "3", "nginx": "-", "nchan": "-",
                                     "packages": {}, "ngxws_commit": "-"},
           "duration": 2.0, "scale": SCALE, "reps": 1, "runs": runs}
    return report.markdown(doc)


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_workload_runs_and_loses_nothing(workload):
    opts = {"ping": 500} if workload == "hold_36k" else {}
    r = run_one(workload, "ngxws-w2", duration=2.0, scale=SCALE, target_opts=opts)
    why = r.get("checks") or r.get("error")
    assert r["ok"], f"{workload}: {why}; server errors: {r.get('server_errors')}\n{r.get('server_log_tail', '')}"
    kind = WORKLOADS[workload]["kind"]
    if kind == "push":
        assert r["delivered"] == r["acked"] == r["sent"] > 0
        assert r["lost"] == r["misrouted"] == r["failed"] == 0
        # one push port per worker; which workers got subscribers is the kernel's choice
        assert 1 <= r["connect"]["endpoints"] <= 2
    elif kind == "echo":
        assert r["msgs"] > 0 and r["unanswered"] == r["mismatched"] == 0
    elif kind == "handshakes":
        assert r["handshakes"] > 0 and r["failed"] == r["dup_ids"] == 0
    elif kind == "hold":
        assert r["alive"] == r["connect"]["connected"] == r["connect"]["requested"]
        assert r["pss_per_conn_kib"] is not None
        if workload == "hold_36k":
            assert r["pings_in_hold"] > 0, "pingintvl=500: every client is pinged during the hold"
    # the report renders this run: its workload's section, with the target's row
    md = render([r])
    assert f"## {workload}" in md and "| ngxws-w2 |" in md
