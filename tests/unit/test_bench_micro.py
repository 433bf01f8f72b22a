"""bench/micro.py runs the real handlers and checks its own work (no timing asserted here)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench import micro  # noqa: E402


@pytest.mark.parametrize("argv", [["push"], ["push", "--route", "http"], ["echo"], ["echo", "--deflate"]])
def test_micro_runs_and_checks(argv, capsys):
    assert micro.main(argv + ["--n", "300"]) == 0
    out = capsys.readouterr().out
    assert "us of Python per operation, 300 operations" in out


def test_micro_notices_lost_work(monkeypatch):
    # a push path that answers nothing must not pass the check
    run, check = micro.push_ops("direct")
    with pytest.raises(SystemExit, match="requests answered"):
        check(5)
