"""The wheel as a user gets it: built, installed in a fresh venv outside the clone, run.

``python -m build --no-isolation`` makes the sdist and, from it, the wheel, with the
setuptools and wheel of the test extra (no download).  The venv is a plain one (no
``--system-site-packages``, which would also see the editable install of the clone); it
gets ngxws's two dependencies without the network: a folder of links to the installed
wsproto and h11 (their packages and dist-info, nothing else) named by a ``.pth`` file,
so that pip itself finds the requirements satisfied and ``importlib.metadata`` reads
their versions.  Everything then runs from that venv, in a folder outside the clone,
with no PYTHONPATH.
"""

import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import urllib.request
import zipfile

import pytest
import websocket  # websocket-client

import ngxws

from tests.helpers.server import ROOT, children_of, pid_alive, wait_for

VERSION = ngxws.__version__
DATA = ("ngxws/prefix/conf/nginx.conf", "ngxws/prefix/conf/mime.types", "ngxws/prefix/html/index.html")
# what the sdist is made from; everything else in a clone is the project's own workshop
SKIP = shutil.ignore_patterns(".git", "bench", "tests", "logs", "build", "dist", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".hypothesis", ".venv")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    # no pip.conf: no index, no find-links, no constraints but ours
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(extra)
    return env


def run(cmd, cwd, timeout=120, **kw):
    r = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    return r


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist, wheel) built from a copy of the clone."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP, symlinks=True)
    out = tmp / "dist"
    r = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)], tmp, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    names = sorted(os.listdir(out))
    assert names == ["ngxws-%s-py3-none-any.whl" % VERSION, "ngxws-%s.tar.gz" % VERSION], names
    return out / names[1], out / names[0]


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory):
    """A fresh venv with the wheel installed; its bin folder."""
    tmp = tmp_path_factory.mktemp("venv")
    env_dir = tmp / "venv"
    r = run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], tmp)
    assert r.returncode == 0, r.stderr
    python = env_dir / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp).stdout.strip()
    deps = tmp / "deps"
    deps.mkdir()
    for name in ("wsproto", "h11"):
        dist = importlib.metadata.distribution(name)
        for top in sorted({str(f).split("/")[0] for f in dist.files} - {".."}):
            os.symlink(dist.locate_file(top), deps / top)
    with open(os.path.join(purelib, "ngxws-test-deps.pth"), "w") as f:
        f.write(str(deps) + "\n")
    # pip of this interpreter, installing into the venv; --no-index: nothing is fetched
    r = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-cache-dir",
             str(built[1])], tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Requirement already satisfied: wsproto" in r.stdout and "Successfully installed ngxws-%s" % VERSION \
        in r.stdout, r.stdout
    return env_dir / "bin"


def test_sdist_and_wheel_hold_the_package_data(built):
    sdist, wheel = built
    with tarfile.open(sdist) as t:
        names = set(t.getnames())
    for path in DATA:
        assert "ngxws-%s/%s" % (VERSION, path) in names
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for path in DATA:
            assert path in names
            # the same bytes as the one copy in the clone
            with open(os.path.join(ROOT, path), "rb") as f:
                assert z.read(path) == f.read()
        meta = z.read("ngxws-%s.dist-info/METADATA" % VERSION).decode()
        entry = z.read("ngxws-%s.dist-info/entry_points.txt" % VERSION).decode()
    assert "Version: %s\n" % VERSION in meta
    assert "Requires-Dist: wsproto" in meta and "Requires-Dist: h11" in meta
    assert "ngxws = ngxws.__main__:main" in entry


def test_installed_version_and_prefix(venv, tmp_path):
    r = run([str(venv / "ngxws"), "-V"], tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "ngxws version: ngxws/%s" % VERSION
    assert lines[1].startswith("built with Python %s (" % sys.version.split()[0])
    assert lines[2] == "frames by wsproto %s, HTTP by h11 %s" % (
        importlib.metadata.version("wsproto"), importlib.metadata.version("h11"))
    code = "import ngxws, importlib.metadata as m; print(ngxws.__file__); print(m.version('ngxws'))"
    where = run([str(venv / "python"), "-c", code], tmp_path).stdout.split()
    # the venv's own copy, not the clone's
    assert where[0].startswith(str(venv.parent)) and where[1] == VERSION
    assert lines[4] == "shipped prefix: %s" % os.path.join(os.path.dirname(where[0]), "prefix")


def test_installed_ngxws_runs_the_shipped_prefix(venv, tmp_path):
    """A new user's first steps: ngxws says where it looked, the copy it suggests runs."""
    prefix = tmp_path / "site"
    prefix.mkdir()
    ngxws_bin = str(venv / "ngxws")
    r = run([ngxws_bin], prefix)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0] == 'ngxws: [emerg] open() "%s/conf/nginx.conf" failed (2: No such file or directory)' % prefix
    m = re.search(r"to start from them: (.*)$", lines[-1])
    assert m, r.stderr
    assert subprocess.run(m.group(1), shell=True, cwd=tmp_path, timeout=30).returncode == 0
    conf = prefix / "conf" / "nginx.conf"
    text = conf.read_text()
    # the shipped config listens on 127.0.0.1:8080; a test takes an ephemeral port
    assert "listen 127.0.0.1:8080;" in text
    conf.write_text(text.replace("listen 127.0.0.1:8080;", "listen 127.0.0.1:0;"))

    r = run([ngxws_bin, "-t"], prefix)
    assert r.returncode == 0, r.stderr
    assert "configuration file %s test is successful" % conf in r.stderr

    with open(prefix / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([ngxws_bin], cwd=prefix, env=clean_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        pid_path = prefix / "logs" / "nginx.pid"
        wait_for(lambda: pid_path.exists() and pid_path.read_text().strip().isdigit() or proc.poll() is not None,
                 20, what="pid file")
        assert proc.poll() is None, (prefix / "stderr.txt").read_text()
        assert int(pid_path.read_text()) == proc.pid
        log = prefix / "logs" / "error.log"
        port = int(wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text()), 10,
                            what="listening notice").group(1))
        # the demo page, from the copied html/
        with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=5) as resp:
            assert resp.status == 200
            with open(os.path.join(ROOT, "ngxws/prefix/html/index.html"), "rb") as f:
                assert resp.read() == f.read()
        ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % port, timeout=5)
        try:
            url = ws.recv()
            m = re.fullmatch(r"http://([A-Za-z0-9_-]{22,})@127\.0\.0\.1:(\d+)/ws", url)
            assert m, url
            req = urllib.request.Request("http://127.0.0.1:%s/ws?id=%s" % (m.group(2), m.group(1)),
                                         data=b"hello from the wheel", method="POST")
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 204
            assert ws.recv() == "hello from the wheel"
        finally:
            ws.close()
        os.kill(proc.pid, signal.SIGQUIT)
        assert proc.wait(20) == 0
        assert not pid_path.exists()
        assert not re.search(r"\[(alert|crit|emerg)\]", log.read_text()), log.read_text()
    finally:
        if proc.poll() is None:
            for pid in children_of(proc.pid):
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait(5)
