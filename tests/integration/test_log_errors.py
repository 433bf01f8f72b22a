"""Logs that cannot be written: a full disk, a log directory removed under ``-s reopen``.

Nothing of it takes a worker down or loses a push or an echo; each failing file says so at most
once a minute per process, on the error log that still works, or on stderr when none does.

The full disk is a 64 KiB tmpfs filled to the last byte (mounting needs root, as CI runs);
where mounting is refused, the log files are symlinks to /dev/full, which fails every write
with ENOSPC as well.
"""

import os
import re
import subprocess
import time

import pytest
import websocket  # websocket-client

from tests.helpers.server import ROOT, make_conf, wait_for
from .test_websocket import first_url, push

WS_HTTP = """
    server {
        listen 127.0.0.1:0;
        location /ws { websocket; }
    }"""


@pytest.fixture
def full_dir(tmp_path):
    """A directory on a full filesystem: (path, how) with how "tmpfs" or "/dev/full"."""
    path = tmp_path / "full"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    if mounted:
        try:
            with open(path / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError as e:
            assert e.errno == 28
        # no block is left for the log files (each a few lines)
        for name in ("error.log", "access.log", "buffered.log"):
            (path / name).touch()
        try:
            with open(path / "filler", "ab") as f:
                while True:
                    f.write(b"\0")
                    f.flush()
        except OSError as e:
            assert e.errno == 28
    else:
        for name in ("error.log", "access.log", "buffered.log"):
            os.symlink("/dev/full", path / name)
    yield str(path), "tmpfs" if mounted else "/dev/full"
    if mounted:
        subprocess.run(["umount", str(path)], check=False)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], check=False)


def traffic(port, rounds):
    """Echoes and pushes over one client, each checked; returns how many of each went through."""
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % port, timeout=5)
    url = first_url(ws)
    echoed = pushed = 0
    for i in range(rounds):
        ws.send("echo %d" % i)
        assert ws.recv() == "echo %d" % i
        echoed += 1
        assert push(url, "push %d" % i) == 204
        assert ws.recv() == "push %d" % i
        pushed += 1
    ws.close()
    return echoed, pushed


def reports(text, path):
    """pid -> number of write-error alerts about `path` in `text`."""
    rx = re.compile(r'\[alert\] (\d+)#\1: write\(\) to "%s" failed \(28: No space left on device\)'
                    % re.escape(path))
    out = {}
    for pid in rx.findall(text):
        out[pid] = out.get(pid, 0) + 1
    return out


def test_full_disk_loses_log_lines_not_pushes(full_dir, ngxws_server):
    path, how = full_dir
    srv = ngxws_server(http=WS_HTTP, workers=2, main="error_log %s/error.log info;" % path,
                       http_main="access_log %s/access.log; access_log %s/buffered.log combined "
                                 "buffer=4k flush=100ms;" % (path, path))
    srv.allow(r'write\(\) to "%s/' % re.escape(path))
    workers = srv.wait_workers(2)
    port = srv.port()
    started = time.monotonic()
    rounds = 0
    # several seconds of traffic, so that the buffered log is flushed many times
    while time.monotonic() - started < 3:
        echoed, pushed = traffic(port, 50)
        assert echoed == pushed == 50
        rounds += 1
    assert srv.workers() == workers, "a worker was lost"
    text = srv.log_text()
    assert "exited on signal" not in text and "exited with code" not in text
    elapsed = time.monotonic() - started
    assert elapsed < 60
    for name in ("error.log", "access.log", "buffered.log"):
        counts = reports(text, "%s/%s" % (path, name))
        # said by the processes that wrote there, once each in this run of under a minute
        assert counts and set(counts.values()) == {1}, (name, how, counts)
        assert set(counts) <= {str(p) for p in workers} | {str(srv.pid)}


def listening_port(pid):
    """The TCP port a process listens on, from /proc (its own log cannot say it)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:    # LISTEN
                return int(fields[1].split(":")[1], 16)
    return None


def test_full_disk_with_no_error_log_left_reports_on_stderr(full_dir, ngxws_server, tmp_path):
    path, how = full_dir
    prefix = tmp_path / "only"
    prefix.mkdir()
    conf = make_conf(str(prefix), http=WS_HTTP, workers=1,
                     http_main="access_log %s/access.log;" % path)
    # every error log on the full disk
    conf = re.sub(r"error_log [^;]*;", "", conf).replace(
        "daemon off;", "daemon off; error_log %s/error.log info;" % path, 1)
    srv = ngxws_server(conf=conf, prefix=prefix, start=False)
    srv.start(wait=False)
    wait_for(lambda: srv.master_pid() and len(srv.workers()) == 1, 15, what="master and worker")
    port = wait_for(lambda: listening_port(srv.pid), what="listening port")
    echoed, pushed = traffic(port, 100)
    assert echoed == pushed == 100
    (worker,) = srv.workers()
    err = srv.stderr_text()
    # the master says it first; a worker forked within the minute keeps its silence
    counts = reports(err, "%s/error.log" % path)
    assert counts.get(str(srv.pid)) == 1 and set(counts.values()) == {1}, (how, err)
    assert reports(err, "%s/access.log" % path) == {str(worker): 1}, (how, err)


def test_log_directory_removed_then_reopen(ngxws_server, tmp_path):
    srv = ngxws_server(http=WS_HTTP, workers=2, http_main="access_log {prefix}/gone/access.log;",
                       start=False)
    gone = os.path.join(srv.prefix, "gone")
    os.mkdir(gone)
    srv.start()
    workers = srv.wait_workers(2)
    port = srv.port()
    assert traffic(port, 5) == (5, 5)
    alert = 'open() "%s/access.log" failed (2: No such file or directory)' % gone
    srv.allow(re.escape(alert))
    for name in os.listdir(gone):
        os.unlink(os.path.join(gone, name))
    os.rmdir(gone)
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(srv.command("-s", "reopen"), env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # the master reopens, then each worker: all of them have done so once 3 notices are in
    srv.wait_log(r"\[notice\] \d+#\d+: (signal 10 \(SIGUSR1\) received from \d+, )?reopening logs",
                 count=3)
    assert traffic(port, 20) == (20, 20)
    text = srv.log_text()
    assert text.count(alert) == 1, text
    assert srv.workers() == workers
    assert "exited" not in text
