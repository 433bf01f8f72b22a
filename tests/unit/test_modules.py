"""ngxws/modules.py: every module is imported plainly, so a broken import stops the start."""

import os
import subprocess
import sys

import pytest

from ngxws.modules import MODULES
from tests.helpers.server import ROOT

# Loaded by `site` at interpreter start (it is first on PYTHONPATH): makes the module named in
# NGXWS_BROKEN_MODULE raise ImportError, as a syntax slip or a missing dependency would.
SHIM = '''
import os, sys

BROKEN = os.environ.get("NGXWS_BROKEN_MODULE")


class BrokenFinder:
    def find_spec(self, name, path=None, target=None):
        if name == BROKEN:
            raise ImportError("cannot import %s (made to fail by the test)" % name, name=name)
        return None


sys.meta_path.insert(0, BrokenFinder())
'''

# a directive of every module, so that a start without one of them would fail differently
CONF = """\
daemon off;
master_process off;
pid %(prefix)s/ngxws.pid;
error_log %(prefix)s/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    server {
        listen 127.0.0.1:0;
        location /status { stub_status; }
        location /ws { websocket; websocket_pass http://127.0.0.1:1/events; }
    }
}
"""


def test_every_module_in_order():
    assert [type(m).__name__ for m in MODULES] == [
        "CoreModule", "EventsModule", "HttpCoreModule", "HttpLogModule", "StubStatusModule",
        "WebSocketModule", "UpstreamModule"]


def ngxws(tmp_path, broken, *args):
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SHIM)
    conf = tmp_path / "ngxws.conf"
    conf.write_text(CONF % {"prefix": tmp_path})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), ROOT]))
    env.pop("NGXWS_BROKEN_MODULE", None)
    if broken:
        env["NGXWS_BROKEN_MODULE"] = broken
    return subprocess.run([sys.executable, "-m", "ngxws", "-p", str(tmp_path) + "/", "-c", str(conf),
                           *args], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_the_shim_alone_changes_nothing(tmp_path):
    r = ngxws(tmp_path, None, "-t")
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr


@pytest.mark.parametrize("broken", ["ngxws.http.core_module", "ngxws.http.log_module",
                                    "ngxws.http.stub_status", "ngxws.websocket.module",
                                    "ngxws.websocket.upstream"])
def test_a_broken_import_fails_the_config_test(tmp_path, broken):
    r = ngxws(tmp_path, broken, "-t")
    assert r.returncode != 0
    assert "ImportError: cannot import %s (made to fail by the test)" % broken in r.stderr, r.stderr
    assert "unknown directive" not in r.stderr
    assert "syntax is ok" not in r.stderr


def test_a_broken_import_fails_the_start(tmp_path):
    r = ngxws(tmp_path, "ngxws.websocket.upstream")
    assert r.returncode != 0
    assert "ImportError: cannot import ngxws.websocket.upstream (made to fail by the test)" in r.stderr
    assert not (tmp_path / "ngxws.pid").exists()
