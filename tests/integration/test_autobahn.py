"""Autobahn TestSuite conformance, driven by kosoku, against an echo location with deflate on.

Every one of the 517 cases must be OK or INFORMATIONAL, in behaviour and in close behaviour;
NON-STRICT counts as a failure (wsproto's own harness counts it so). No case is excluded: the
zlib window-bits cases (13.3.*, 13.5.*, 13.7.*, server_max_window_bits=8) pass because the
server accepts that offer and then sends its messages uncompressed (handshake.py says why).
"""

import json
import shutil
import subprocess

import pytest

from tests.helpers.server import wait_for

KOSOKU = shutil.which("kosoku")
GOOD = ("OK", "INFORMATIONAL")

ECHO = """
    server {
        listen 127.0.0.1:0;
        location / {
            websocket;
            websocket_deflate on;
            # Autobahn wants pure echo: no push URL message first
            websocket_push_url off;
            # case 9.* sends messages of up to 16 MiB, and reads its echoes late
            websocket_max_message_size 20m;
            websocket_send_buffer 64m;
        }
    }"""


@pytest.mark.skipif(KOSOKU is None, reason="kosoku is not installed (pip install kosoku)")
@pytest.mark.timeout(1800)
def test_autobahn_all_cases(ngxws_server, tmp_path):
    srv = ngxws_server(http=ECHO, level="notice", workers=2)
    outdir = tmp_path / "reports"
    proc = subprocess.Popen([KOSOKU, "-p", "4", "-o", str(outdir), "ws://127.0.0.1:%d" % srv.port()],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=1700)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    index = outdir / "index.json"
    wait_for(index.exists, 5, what="kosoku's index.json")
    with open(index) as f:
        agents = json.load(f)
    # Results are grouped by the agent kosoku read from each response's Server header; a case
    # whose handshake went wrong may land under another name, so look at all of them.
    results = {}
    for agent, cases in agents.items():
        for case, r in cases.items():
            results[case] = dict(r, agent=agent)
    bad = {case: (r["behavior"], r["behaviorClose"], r["agent"]) for case, r in results.items()
           if r["behavior"] not in GOOD or r["behaviorClose"] not in GOOD}
    assert not bad, "%d failing cases: %s\n%s" % (len(bad), sorted(bad.items())[:20],
                                                  out.decode(errors="replace")[-2000:])
    assert len(results) == 517
    assert len(agents) == 1, sorted(agents)
