"""The upstream benchmark runs: echo through ngxws' websocket_pass (and through Pushpin when the
Debian package is installed) to the WebSocket-over-HTTP echo backend of bench/servers/.

Speed is not asserted (python -m bench.upstream shows it). Asserted: every echo came back in order
with its own content, no connection was dropped, the backend's CPU was metered apart, and its
request counter shows the batching: at window 1 one request per message, at window 8 fewer
requests than messages. Skipped when the `bench` extra is missing; the pushpin case when pushpin is.
"""
import os
import shutil
import sys

import pytest

pytest.importorskip("picows", reason="the bench extra is not installed: pip install -e '.[bench]'")
pytest.importorskip("uvloop", reason="the bench extra is not installed: pip install -e '.[bench]'")
pytest.importorskip("aiohttp", reason="the bench extra is not installed: pip install -e '.[bench]'")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench import upstream  # noqa: E402
from bench.run import run_one  # noqa: E402

SCALE = 0.05  # 5 echo connections


def render(workload, label, r):
    """python -m bench.upstream's markdown report over the one run `r`."""
    doc = {"stamp": "smoke", "env": {"machine": "test", "host": "h", "python": "3", "ngxws_commit": "-",
                                     "pushpin": "-", "condure": "-", "zurl": "-", "packages": {}},
           "duration": 2.0, "scale": SCALE, "reps": 1, "workloads": [workload], "targets": [label],
           "runs": [{**r, "rep": 0}]}
    return upstream.markdown(doc)


@pytest.mark.parametrize("label", ["ngxws-up", "pushpin"])
@pytest.mark.parametrize("workload", ["echo_pingpong", "echo_window8"])
def test_echo_through_the_backend(workload, label):
    if label == "pushpin" and not shutil.which("pushpin"):
        pytest.skip("pushpin is not installed (bench/setup.sh installs it)")
    r = run_one(workload, label, duration=2.0, scale=SCALE)
    why = r.get("checks") or r.get("error")
    assert r["ok"], f"{workload} {label}: {why}; server errors: {r.get('server_errors')}\n{r.get('server_log_tail', '')}"
    assert r["msgs"] > 0 and r["unanswered"] == r["mismatched"] == 0 and r["disconnects"] == 0
    assert r["backend_us_per_msg"] is not None and r["backend_us_per_msg"] > 0
    assert r["backend_text_events"] >= r["msgs"]
    if workload == "echo_pingpong":  # one message in flight per client: one request each
        assert 0.99 <= r["backend_req_per_msg"] <= 1.05
    else:  # eight in flight: messages that arrive during a request share the next one
        assert r["backend_req_per_msg"] < 0.9
    # the report renders this run: its workload's section, with the target's row
    md = render(workload, label, r)
    assert f"## {workload}" in md and f"| **{label}** |" in md and "backend req/msg" in md
