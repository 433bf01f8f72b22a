"""nginx parity: the directives real nginx configs carry, decided by real nginx.

Each check runs ``/usr/sbin/nginx`` and ngxws on the same config text: ``-t`` verdicts and
``[emerg]`` messages must be equal, and live servers must answer the same request alike.
"""

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from tests.helpers.server import ROOT, ROOT_USER_LINE, wait_for

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

_EMERG = re.compile(r"\[emerg\] (?:\d+#\d+: )?(.*)")


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _conf(prefix, http, main=""):
    return ("%s\nerror_log %s/error.log;\npid %s/run.pid;\n%s\nevents {}\nhttp {\n%s\n}\n"
            % (ROOT_USER_LINE, prefix, prefix, main, http))


def test_both(tmp_path, http, main=""):
    """(nginx's, ngxws's) ``-t`` outcome on the same config: (passed, first emerg message)."""
    out = []
    for name, cmd in (("nginx", [NGINX]), ("ngxws", [sys.executable, "-m", "ngxws"])):
        prefix = tmp_path / name
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "t.conf"
        conf.write_text(_conf(prefix, http, main).replace("{prefix}", str(prefix)))
        proc = subprocess.run([*cmd, "-t", "-p", str(prefix) + "/", "-c", str(conf)], capture_output=True,
                              text=True, timeout=30, env=_env(), cwd=str(prefix))
        m = _EMERG.search(proc.stderr)
        out.append((proc.returncode == 0, m.group(1).replace(str(prefix), "P") if m else None))
    return out


test_both.__test__ = False


ACCEPTED = [
    "client_body_temp_path /tmp/body;",
    "client_body_temp_path /tmp/body 1 2;",
    "client_body_temp_path /tmp/body 1 2 2;",
    "server_names_hash_bucket_size 64;",
    "server_names_hash_max_size 1024;",
    "connection_pool_size 512;",
    "request_pool_size 4k;",
    "types_hash_max_size 2048;",
    "types_hash_bucket_size 64;",
    "sendfile on;",
    "tcp_nopush on;",
    "tcp_nodelay off;",
    "open_file_cache off;",
    "open_file_cache max=1000 inactive=20s;",
    "open_file_cache_valid 30s;",
    "open_file_cache_min_uses 2;",
    "open_file_cache_errors on;",
]

REFUSED = [
    "client_body_temp_path /tmp/body 1 2 3 4;",
    "client_body_temp_path /tmp/body x;",
    "server_names_hash_bucket_size x;",
    "types_hash_max_size abc;",
    "connection_pool_size 100;",
    "connection_pool_size 257;",
    "request_pool_size 1x;",
    "sendfile maybe;",
    "tcp_nodelay;",
    "open_file_cache on;",
    "open_file_cache max=0;",
    "open_file_cache max=10 inactive=x;",
    "open_file_cache inactive=10s;",
    "open_file_cache_min_uses x;",
    "open_file_cache_valid x;",
    "open_file_cache_errors yes;",
]

SERVER = "server {\n listen 127.0.0.1:1;\n location / { %s return 200 ok; }\n}\n"


@needs_nginx
@pytest.mark.parametrize("line", ACCEPTED)
def test_tuning_directives_accepted_like_nginx(tmp_path, line):
    nginx, ngxws = test_both(tmp_path, line + "\n" + SERVER % "")
    assert nginx == (True, None)
    assert ngxws == nginx


@needs_nginx
@pytest.mark.parametrize("line", REFUSED)
def test_tuning_directives_refused_like_nginx(tmp_path, line):
    nginx, ngxws = test_both(tmp_path, line + "\n" + SERVER % "")
    assert nginx[0] is False and nginx[1]
    assert ngxws == nginx


@needs_nginx
def test_tuning_directives_contexts_like_nginx(tmp_path):
    # location level: sendfile and friends are allowed, the server-name hashes are not
    for line, ok in (("sendfile off; tcp_nopush off; tcp_nodelay on; open_file_cache off;", True),
                     ("server_names_hash_max_size 512;", False), ("connection_pool_size 512;", False)):
        nginx, ngxws = test_both(tmp_path, SERVER % line)
        assert nginx[0] is ok
        assert ngxws == nginx


def _peer_socket_option(pid, client):
    """TCP_NODELAY of the socket in process ``pid`` whose peer is ``client`` (pidfd_getfd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, pid, 0)            # pidfd_open
    if pidfd < 0:
        pytest.skip("pidfd_open: errno %d" % ctypes.get_errno())
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)   # pidfd_getfd
            if fd < 0:
                pytest.skip("pidfd_getfd: errno %d" % ctypes.get_errno())
            with socket.socket(fileno=fd) as s:
                try:
                    if s.type == socket.SOCK_STREAM and s.getpeername() == client:
                        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                except OSError:
                    pass
    finally:
        os.close(pidfd)
    raise AssertionError("no socket of %d is connected to %r" % (pid, client))


@pytest.mark.parametrize("value,expect", [("on", 1), ("off", 0), ("", 1)])
def test_tcp_nodelay_set_on_accepted_sockets(ngxws_server, value, expect):
    """The worker's side of a connection has TCP_NODELAY unless ``tcp_nodelay off``."""
    line = "tcp_nodelay %s;" % value if value else ""
    srv = ngxws_server(http="%s\nserver { listen 127.0.0.1:0; location / { return 200 ok; } }" % line)
    with socket.create_connection(("127.0.0.1", srv.port()), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 200 OK")
        (worker,) = srv.workers()
        assert bool(_peer_socket_option(worker, c.getsockname())) == bool(expect)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """Real nginx in a temp prefix on a free port, stopped by pid."""

    def __init__(self, tmp_path, http, main=""):
        self.prefix = tmp_path / "nginx-live"
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        self.http, self.main, self.proc = http, main, None

    def start(self):
        for _ in range(5):
            self.port = _free_port()
            conf = self.prefix / "nginx.conf"
            conf.write_text(_conf(self.prefix, self.http.replace("{port}", str(self.port)), self.main)
                            .replace("{prefix}", str(self.prefix)))
            self.proc = subprocess.Popen([NGINX, "-p", str(self.prefix) + "/", "-c", str(conf), "-g",
                                          "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def up():
                if self.proc.poll() is not None:
                    return "exited"
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return "up"
                except OSError:
                    return None
            if wait_for(up, 10, what="nginx up") == "up":
                return self
        pytest.fail("could not start nginx on a free port")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
