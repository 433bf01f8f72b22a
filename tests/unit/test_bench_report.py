"""bench/report.py and bench/upstream.py render every result file committed under bench/results."""
import glob
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench import report, upstream  # noqa: E402

SUITE = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "bench-*.json")))
UPSTREAM = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "upstream-*.json")))


def test_there_are_results_to_render():
    assert SUITE and UPSTREAM


@pytest.mark.parametrize("path", SUITE, ids=os.path.basename)
def test_report_renders(path):
    with open(path) as f:
        doc = json.load(f)
    md = report.markdown(doc)
    assert md.startswith("# Benchmark results (%s)" % doc["stamp"])
    for r in doc["runs"]:
        assert "## %s" % r["workload"] in md
        assert "| %s |" % r["target"] in md


@pytest.mark.parametrize("path", UPSTREAM, ids=os.path.basename)
def test_upstream_report_renders(path):
    with open(path) as f:
        doc = json.load(f)
    md = upstream.markdown(doc)
    for r in doc["runs"]:
        assert "## %s" % r["workload"] in md
        assert "| **%s** |" % r["target"] in md
    assert "backend req/msg" in md
