"""A real ``redis-server`` for tests (Debian's /usr/bin/redis-server): own temp dir, no
persistence, an ephemeral port (and a unix socket), stopped by pid.

Redis cannot bind port 0 and say which port it got, so a free port is picked by the kernel,
released and given to redis-server; if another process takes it first, redis-server exits with
"Address already in use" and `start` tries another port (bounded). `restart` reuses the same
port and socket, as a Redis that comes back after a crash does.

`cli(...)` runs Debian's ``redis-cli`` against it: the test's view of Redis goes through the real
tool, not through the client under test.
"""

import os
import signal
import socket
import subprocess

from .server import pid_alive, wait_for

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, tmpdir, password=None, host="127.0.0.1", extra=()):
        self.dir = str(tmpdir)
        os.makedirs(self.dir, exist_ok=True)
        self.host = host
        self.password = password
        self.extra = list(extra)
        self.port = None
        self.unixsocket = os.path.join(self.dir, "redis.sock")
        self.proc = None
        self.log_path = os.path.join(self.dir, "redis.log")

    @property
    def url(self):
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s%s:%d" % (auth, self.host, self.port)

    def _args(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--unixsocket", self.unixsocket, "--unixsocketperm", "700",
                "--logfile", self.log_path, "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra

    def start(self, tries=5):
        for _ in range(tries):
            if self.port is None:
                self.port = free_port(self.host)
            self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            try:
                wait_for(lambda: self._answers() or self.proc.poll() is not None, timeout=10,
                         what="redis-server to accept connections")
            except AssertionError:
                self.stop()
                raise
            if self.proc.poll() is None:
                return self
            # the port was taken between free_port() and the bind: another one
            self.port = None
        raise AssertionError("redis-server did not start: %s" % self.log_text()[-2000:])

    def _answers(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                data = s.recv(100)
                return data.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM, timeout=10):
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.proc = None

    def kill(self):
        """SIGKILL: Redis gone at once, as in a crash."""
        pid = self.proc.pid
        self.stop(signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), timeout=5, what="redis-server to die")

    def restart(self):
        """Start again on the same port and socket (after stop or kill)."""
        if os.path.exists(self.unixsocket):
            os.unlink(self.unixsocket)
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._answers, timeout=10, what="redis-server to accept connections again")
        return self

    def cli(self, *args):
        """``redis-cli`` with these arguments, its stdout as text (raises on failure)."""
        cmd = [REDIS_CLI, "-h", self.host, "-p", str(self.port), "--no-auth-warning"]
        if self.password:
            cmd += ["-a", self.password]
        out = subprocess.run(cmd + [str(a) for a in args], capture_output=True, timeout=10,
                             check=True)
        return out.stdout.decode()

    def log_text(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

