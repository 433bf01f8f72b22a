"""The core runtime as a user drives it: -t, workers, signals, reload, stop, logs."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers.server import ROOT, children_of, make_conf, pid_alive, wait_for

HELLO = 'server { listen 127.0.0.1:0; location / { return 200 "hello\\n"; } }'


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "ngxws", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=30)


def http_get(port, path="/", host="127.0.0.1"):
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_t_ok(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(make_conf(str(tmp_path)))
    r = run_cli("-p", str(tmp_path) + "/", "-c", str(conf), "-t")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ("ngxws: the configuration file %s syntax is ok\n"
                        "ngxws: configuration file %s test is successful\n" % (conf, conf))


def test_t_failing(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("worker_processes 1;\nlisen 80;\nevents {}\n")
    r = run_cli("-p", str(tmp_path), "-c", str(conf), "-t")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        'ngxws: [emerg] unknown directive "lisen" in %s:2' % conf,
        "ngxws: configuration file %s test failed" % conf,
    ]
    assert "Traceback" not in r.stderr


def test_T_dumps(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(make_conf(str(tmp_path)))
    r = run_cli("-p", str(tmp_path), "-c", str(conf), "-T")
    assert r.returncode == 0
    assert r.stdout.startswith("# configuration file %s:\n" % conf)
    assert "worker_connections 1024;" in r.stdout


def test_missing_config(tmp_path):
    r = run_cli("-p", str(tmp_path), "-c", "nope.conf")
    assert r.returncode == 1
    assert r.stderr.strip() == 'ngxws: [emerg] open() "%s/nope.conf" failed (2: No such file or directory)' % tmp_path


def test_g_directive_duplicate(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(make_conf(str(tmp_path)))
    r = run_cli("-p", str(tmp_path), "-c", str(conf), "-g", "daemon on;", "-t")
    assert r.returncode == 1
    assert '"daemon" directive is duplicate in %s:1' % conf in r.stderr


def test_version_and_help():
    r = run_cli("-v")
    assert r.returncode == 0 and r.stderr.startswith("ngxws version: ngxws/")
    r = run_cli("-h")
    assert r.returncode == 0 and "-s signal" in r.stderr
    r = run_cli("-x")
    assert r.returncode == 1 and 'invalid option: "x"' in r.stderr


def test_workers_and_quit(ngxws_server):
    srv = ngxws_server(http=HELLO, workers=3)
    workers = srv.wait_workers(3)
    assert http_get(srv.port()).endswith(b"hello\n")
    assert srv.master_pid() == srv.pid
    assert srv.stop(signal.SIGQUIT) == 0
    assert not os.path.exists(srv.pid_path)
    for pid in workers:
        assert not pid_alive(pid)
    log = srv.log_text()
    assert re.search(r"signal 3 \(SIGQUIT\) received from \d+, shutting down", log)
    assert "gracefully shutting down" in log


def test_term_fast_stop(ngxws_server):
    srv = ngxws_server(http=HELLO, workers=2)
    srv.wait_workers(2)
    assert srv.stop(signal.SIGTERM) == 0
    assert not os.path.exists(srv.pid_path)
    assert re.search(r"signal 15 \(SIGTERM\) received from \d+, exiting", srv.log_text())


def test_hup_replaces_every_worker(ngxws_server):
    srv = ngxws_server(http=HELLO, workers=2)
    old = set(srv.wait_workers(2))
    port = srv.port()
    srv.signal(signal.SIGHUP)
    wait_for(lambda: len(srv.workers()) == 2 and not (set(srv.workers()) & old), 15, what="new workers")
    assert re.search(r"signal 1 \(SIGHUP\) received from \d+, reconfiguring", srv.log_text())
    # the listening socket survived the reload
    assert http_get(port).endswith(b"hello\n")


def test_hup_broken_config_keeps_workers(ngxws_server):
    srv = ngxws_server(http=HELLO, workers=2)
    old = srv.wait_workers(2)
    port = srv.port()
    good = open(srv.conf_path).read()
    srv.write_conf(good + "\nbroken_directive on;\n")
    srv.allow(r'\[emerg\].*unknown directive "broken_directive"')
    srv.signal(signal.SIGHUP)
    srv.wait_log(r'\[emerg\] \d+#\d+: unknown directive "broken_directive" in %s:\d+' % re.escape(srv.conf_path))
    assert srv.workers() == old
    assert http_get(port).endswith(b"hello\n")


def test_killed_worker_respawned(ngxws_server):
    srv = ngxws_server(http=HELLO, workers=2)
    old = srv.wait_workers(2)
    os.kill(old[0], signal.SIGKILL)
    srv.allow(r"worker process %d exited on signal 9" % old[0])
    wait_for(lambda: len(srv.workers()) == 2 and old[0] not in srv.workers(), 10, what="respawn")
    srv.wait_log(r"\[alert\] \d+#\d+: worker process %d exited on signal 9" % old[0])
    assert http_get(srv.port()).endswith(b"hello\n")


def test_usr1_reopens_rotated_log(ngxws_server):
    srv = ngxws_server(http=HELLO, workers=1)
    srv.wait_workers(1)
    os.rename(srv.error_log, srv.error_log + ".1")
    srv.signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(srv.error_log), 10, what="new error.log")
    # the worker's own reopen line lands in the new file
    srv.wait_log(r"reopening logs")
    with open(srv.error_log + ".1") as f:
        assert "signal 10 (SIGUSR1)" in f.read()


def test_s_reload_and_quit(ngxws_server):
    srv = ngxws_server(http=HELLO, workers=1)
    old = srv.wait_workers(1)
    r = run_cli(*srv.command()[3:], "-s", "reload")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: srv.workers() and srv.workers() != old, 15, what="reloaded worker")
    r = run_cli(*srv.command()[3:], "-s", "quit")
    assert r.returncode == 0, r.stderr
    srv.proc.wait(15)
    assert srv.proc.returncode == 0
    assert not os.path.exists(srv.pid_path)


def test_s_without_master(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(make_conf(str(tmp_path)))
    r = run_cli("-p", str(tmp_path), "-c", str(conf), "-s", "reload")
    assert r.returncode == 1
    assert r.stderr.strip() == 'ngxws: [error] open() "%s/ngxws.pid" failed (2: No such file or directory)' % tmp_path


def test_second_instance_on_busy_port(ngxws_server):
    srv = ngxws_server(http=HELLO)
    port = srv.port()
    second = ngxws_server(http=HELLO.replace(":0", ":%d" % port), start=False)
    second.start(wait=False)
    second.proc.wait(15)
    assert second.proc.returncode == 1
    assert "ngxws: [emerg] bind() to 127.0.0.1:%d failed (98: Address already in use)" % port in second.stderr_text()
    assert "Traceback" not in second.stderr_text()


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_emfile_does_not_spin(ngxws_server):
    srv = ngxws_server(http=HELLO, main="worker_rlimit_nofile 40;", workers=1)
    srv.allow(r"accept4\(\) failed \(24: Too many open files\)")
    srv.allow(r"setrlimit")
    (worker,) = srv.wait_workers(1)
    port = srv.port()
    held = []
    try:
        for _ in range(60):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        srv.wait_log(r"\[crit\].*accept4\(\) failed \(24: Too many open files\)")
        before = cpu_ticks(worker)
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 > 2.0, 5, what="2 s to pass")
        used = (cpu_ticks(worker) - before) / os.sysconf("SC_CLK_TCK")
        assert used < 0.5, "worker spun: %.2f s CPU in 2 s" % used
    finally:
        for s in held:
            s.close()
    # fds free: it accepts and serves again
    wait_for(lambda: http_get(port).endswith(b"hello\n"), 10, what="service after EMFILE")


PROBE = "load_module tests.integration.modules.probe:ProbeModule;"


def test_listen_injection_gives_each_worker_its_own_port(ngxws_server):
    srv = ngxws_server(http=HELLO, main=PROBE, workers=2)
    workers = srv.wait_workers(2)
    srv.wait_log(r"probe worker \d+ listening on", count=2)
    found = dict(re.findall(r"probe worker (\d+) listening on 127\.0\.0\.1:(\d+)", srv.log_text()))
    assert sorted(int(p) for p in found) == workers
    for pid, port in found.items():
        # only the worker that opened the port answers on it
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as s:
            assert s.makefile("rb").read() == b"worker %s\n" % pid.encode()


def test_worker_that_cannot_start_halts_master(ngxws_server):
    srv = ngxws_server(http=HELLO, main=PROBE + "\nprobe_fail on;", workers=2, start=False)
    srv.allow(r"probe: init_process failed on purpose")
    srv.allow(r"exited with code 3")
    srv.allow(r"could not start")
    srv.start(wait=False)
    srv.proc.wait(20)
    assert srv.proc.returncode == 1
    log = srv.log_text()
    assert "[emerg]" in log and "probe: init_process failed on purpose" in log
    # it halted instead of respawning in a loop: each slot started once
    assert len(re.findall(r"start worker process \d+", log)) <= 2


def test_load_module_errors(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("load_module nope.nothing:X;\nevents {}\n")
    r = run_cli("-p", str(tmp_path), "-c", str(conf), "-t")
    assert r.returncode == 1
    assert r.stderr.startswith('ngxws: [emerg] load_module "nope.nothing:X" failed (No module named ')
    assert r.stderr.splitlines()[0].endswith("in %s:1" % conf)
    conf.write_text("events {}\nload_module tests.integration.modules.probe:ProbeModule;\n")
    r = run_cli("-p", str(tmp_path), "-c", str(conf), "-t")
    assert r.stderr.splitlines()[0] == 'ngxws: [emerg] "load_module" directive is specified too late in %s:2' % conf


def test_daemon_on_detaches_and_stops(tmp_path):
    conf = tmp_path / "nginx.conf"
    text = make_conf(str(tmp_path), http=HELLO).replace("daemon off;", "daemon on;")
    conf.write_text(text)
    pid_path = tmp_path / "ngxws.pid"
    try:
        # the command returns at once: the master went on in the background
        r = run_cli("-p", str(tmp_path), "-c", str(conf))
        assert r.returncode == 0, r.stderr
        wait_for(pid_path.exists, 10, what="pid file")
        pid = int(pid_path.read_text())
        log = (tmp_path / "notice.log").read_text()
        port = int(re.findall(r"listening on 127\.0\.0\.1:(\d+)", log)[-1])
        assert http_get(port).endswith(b"hello\n")
        assert run_cli("-p", str(tmp_path), "-c", str(conf), "-s", "stop").returncode == 0
        wait_for(lambda: not pid_alive(pid), 10, what="daemon exit")
        assert not pid_path.exists()
    finally:
        # whatever failed above, no daemon outlives the test
        text = pid_path.read_text().strip() if pid_path.exists() else ""
        if text.isdigit() and pid_alive(int(text)):
            for child in children_of(int(text)):
                os.kill(child, signal.SIGKILL)
            os.kill(int(text), signal.SIGKILL)


def test_reload_opens_new_and_closes_removed_listen(ngxws_server):
    srv = ngxws_server(http=HELLO, workers=1)
    srv.wait_workers(1)
    old_port = srv.port()
    text = open(srv.conf_path).read()
    srv.write_conf(text.replace("listen 127.0.0.1:0;", "listen [::1]:0;"))
    srv.signal(signal.SIGHUP)
    wait_for(lambda: any(a.startswith("[::1]") for a in srv.listening()), 10, what="new listen")
    v6 = int([a for a in srv.listening() if a.startswith("[::1]")][-1].rsplit(":", 1)[1])
    wait_for(lambda: http_get(v6, host="::1").endswith(b"hello\n"), 10, what="v6 served")
    def refused():
        try:
            http_get(old_port)
        except OSError:
            return True
        return False
    wait_for(refused, 10, what="old port closed")


def test_worker_shutdown_timeout_bounds_graceful_exit(ngxws_server):
    import websocket

    conf = HELLO.replace("location / {", "location /ws { websocket; } location / {")
    srv = ngxws_server(http=conf, main="worker_shutdown_timeout 1s;", workers=1)
    (old,) = srv.wait_workers(1)
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), timeout=10)
    try:
        assert ws.recv().startswith("http://")
        srv.signal(signal.SIGHUP)
        # the old worker keeps the client past the reload, then the timeout closes it with 1001
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 1001
        wait_for(lambda: not pid_alive(old), 10, what="old worker exit")
        assert re.search(r"%d#%d: shutdown timeout" % (old, old), srv.log_text())
    finally:
        ws.close()


def test_debug_connection_logs_only_matching_clients(ngxws_server):
    both = HELLO.replace("listen 127.0.0.1:0;", "listen 127.0.0.1:0; listen [::1]:0;")
    srv = ngxws_server(http=both, level="notice", workers=1,
                       worker_connections="1024;\n    debug_connection ::1")
    srv.wait_workers(1)
    v4, v6 = srv.port(0), srv.port(1)
    assert http_get(v4).endswith(b"hello\n")
    assert http_get(v6, host="::1").endswith(b"hello\n")
    srv.stop()
    debug = [line for line in srv.log_text().splitlines() if "[debug]" in line]
    # the ::1 client's story is told, the 127.0.0.1 client's is not
    assert any("accept: [::1]:" in line for line in debug)
    assert any("close connection" in line and "client: ::1" in line for line in debug)
    assert not any("client: 127.0.0.1" in line for line in debug)


def test_rlimit_nofile_beyond_hard_limit_alerts_and_serves(ngxws_server):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.fail("this test needs a finite hard limit for open files")
    want = hard + 1000
    srv = ngxws_server(http=HELLO, main="worker_rlimit_nofile %d;" % want, workers=1)
    srv.allow(r"setrlimit\(RLIMIT_NOFILE, %d\) failed" % want)
    (worker,) = srv.wait_workers(1)
    srv.wait_log(r"\[alert\] %d#%d: setrlimit\(RLIMIT_NOFILE, %d\) failed \(1: Operation not permitted\)"
                 % (worker, worker, want))
    # the worker kept the highest limit it may have and serves
    with open("/proc/%d/limits" % worker) as f:
        line = [ln for ln in f if ln.startswith("Max open files")][0]
    assert int(line.split()[3]) == hard
    assert http_get(srv.port()).endswith(b"hello\n")


EPOLLEXCLUSIVE = 1 << 28


def listen_inode(port):
    """The inode of the socket listening on 127.0.0.1:port, from /proc/net/tcp."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and local == "0100007F:%04X" % port:
                return int(inode)
    return None


def epoll_masks(pid, inode):
    """The event masks under which the epoll instances of ``pid`` watch the file ``inode``."""
    masks = []
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != "anon_inode:[eventpoll]":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = re.match(r"tfd:\s*\d+ events:\s*([0-9a-f]+) .* ino:([0-9a-f]+)", line)
            if m and int(m.group(2), 16) == inode:
                masks.append(int(m.group(1), 16))
    return masks


def get_many(port, n, threads=8):
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return list(ex.map(lambda _: http_get(port), range(n)))


@pytest.mark.skipif(not hasattr(__import__("select"), "EPOLLEXCLUSIVE") or not os.path.exists("/proc/net/tcp"),
                    reason="no EPOLLEXCLUSIVE or no /proc here")
@pytest.mark.parametrize("master", ["on", "off"])
def test_shared_listen_socket_wakes_one_worker_exclusively(ngxws_server, master):
    # nginx's EPOLLEXCLUSIVE: every worker's epoll holds the shared listen socket with the flag,
    # so a new connection wakes one worker, not all; every connection is still served.
    workers = 2 if master == "on" else 1
    srv = ngxws_server(http=HELLO, workers=workers, master=master)
    pids = srv.wait_workers(workers) if master == "on" else [srv.pid]
    port = srv.port()
    inode = listen_inode(port)
    assert inode is not None
    for pid in pids:
        masks = epoll_masks(pid, inode)
        assert masks and all(m & EPOLLEXCLUSIVE for m in masks), (pid, masks)
    assert all(r.endswith(b"hello\n") for r in get_many(port, 64))
    if master == "on":
        # the new workers of a reload register it so too, and serve every connection
        srv.signal(signal.SIGHUP)
        wait_for(lambda: len(srv.workers()) == 2 and not (set(srv.workers()) & set(pids)), 15,
                 what="new workers")
        for pid in srv.workers():
            wait_for(lambda: epoll_masks(pid, inode), 10, what="worker %d accepting" % pid)
            assert all(m & EPOLLEXCLUSIVE for m in epoll_masks(pid, inode))
        assert all(r.endswith(b"hello\n") for r in get_many(port, 64))
    assert srv.stop(signal.SIGQUIT) == 0


def test_idle_workers_take_turns_at_the_shared_listen_socket(ngxws_server):
    # EPOLLEXCLUSIVE alone wakes the first idle worker in registration order, so a light
    # load would all go to one worker; each worker requeues itself when it accepts.
    srv = ngxws_server(http='server { listen 127.0.0.1:0; location / { return 200 "$pid"; } }', workers=2)
    pids = srv.wait_workers(2)
    port = srv.port()
    served = [int(http_get(port).split(b"\r\n\r\n", 1)[1]) for _ in range(20)]
    assert set(served) == set(pids)
