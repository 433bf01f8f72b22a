"""Adapters: how to start, reach, push to and stop each server under test.

Every server listens on 127.0.0.1 on a free port, with its files in a fresh temporary prefix, in
its own session, and is stopped by its pid (the master's; leftover workers by pid too, checked
against their start time so that a recycled pid is never signalled).

A target hands the load generator a *client spec* (plain JSON):
  url     WebSocket URL; "{i}" is the subscriber index, "{tag}" a per-run token
  hello   what the server's first message is: "none", "id" (aiohttp) or "pushurl" (ngxws)
  push    how to push to subscriber i: null, "nchan" (POST /pub?id=c{tag}_{i}),
          "aiohttp" (POST /push/ID) or "ngxws" (POST to the push URL, Basic auth "ID:")
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from . import proc

HOST = "127.0.0.1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "servers")
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def upgrade_ok(port: int, path: str, timeout: float = 1.0) -> bool:
    """One WebSocket handshake by hand: True once the server answers 101."""
    req = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(req)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(4096)
                if not d:
                    return False
                buf += d
            return buf.startswith(b"HTTP/1.1 101")
    except OSError:
        return False


class Target:
    name = "?"
    hello = "none"
    push = None           # None: no push API (echo-only)
    echo = False
    ws_path = "/ws"
    procs_per_worker = 1  # processes in the tree = master? + workers

    def __init__(self, workers: int = 1, **opts):
        self.workers = workers
        self.opts = opts
        self.popen: subprocess.Popen | None = None
        self.tmp: str | None = None
        self.port = 0

    @property
    def label(self) -> str:
        return f"{self.name}-w{self.workers}" if self.multi else self.name

    multi = False  # has a workers setting

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files into self.tmp."""

    def expected_procs(self) -> int:
        return 1

    def env(self) -> dict:
        return dict(os.environ)

    def client_spec(self) -> dict:
        return {"url": f"ws://{HOST}:{self.port}{self.ws_path}", "hello": self.hello, "push": self.push,
                "host": HOST, "port": self.port}

    def start(self, cpus=None, timeout: float = 20.0) -> None:
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix=f"bench-{self.name}-")
        os.chmod(self.tmp, 0o755)  # nginx workers run as nobody
        self.prepare()
        with open(os.path.join(self.tmp, "stdout.log"), "wb") as out:
            self.popen = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True,
                                          cwd=self.tmp, env=self.env())
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.label} exited with {self.popen.returncode}:\n{self.log_tail()}")
                if (len(proc.tree(self.popen.pid)) >= self.expected_procs()
                        and upgrade_ok(self.port, self.ready_path())):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label} not ready after {timeout}s:\n{self.log_tail()}")
                time.sleep(0.05)
            # a few more handshakes so that every worker has loaded its lazy imports before the
            # memory baseline is taken (which worker accepts is the kernel's choice)
            for _ in range(4 * self.workers):
                upgrade_ok(self.port, self.ready_path())
            if cpus:
                proc.pin(self.popen.pid, cpus)
        except BaseException:
            self.stop()
            raise

    def ready_path(self) -> str:
        return self.ws_path

    def pids(self) -> list[int]:
        return proc.tree(self.popen.pid) if self.popen else []

    def log_tail(self, n: int = 3000) -> str:
        out = []
        for fn in ("stdout.log", "error.log", "logs/error.log"):
            p = os.path.join(self.tmp or "", fn)
            if self.tmp and os.path.exists(p):
                with open(p, "rb") as f:
                    out.append(f"--- {fn}\n" + f.read()[-n:].decode(errors="replace"))
        return "\n".join(out)

    def error_lines(self, levels=("[alert]", "[crit]", "[emerg]")) -> list[str]:
        """Serious lines in the server's error log (checked after each run)."""
        found = []
        for fn in ("error.log", "logs/error.log", "stdout.log"):
            p = os.path.join(self.tmp or "", fn)
            if self.tmp and os.path.exists(p):
                with open(p, errors="replace") as f:
                    found += [ln.rstrip() for ln in f if any(lv in ln for lv in levels)]
        return found

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        others = [(p, proc.start_time(p)) for p in self.pids()[1:]]
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        deadline = time.monotonic() + 5
        for p, t0 in others:
            while t0 is not None and proc.start_time(p) == t0 and time.monotonic() < deadline:
                time.sleep(0.02)
            if t0 is not None and proc.start_time(p) == t0:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.popen = None

    def cleanup(self) -> None:
        if self.tmp and not os.environ.get("BENCH_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)


#: started as root, ngxws's workers would switch to nobody, who cannot read a Python under /root
ROOT_USER = " user root;" if os.geteuid() == 0 else ""

NGXWS_CONF = """\
daemon off;{user}
worker_processes {workers};
pid {tmp}/ngxws.pid;
error_log {tmp}/error.log {log_level};
events {{
    worker_connections {wconns};
}}
http {{
    access_log off;
    keepalive_requests {keepalive_requests};
    server {{
        listen {host}:{port};
        location /ws {{
            websocket pingintvl={ping} idleintvl={idle};
        }}
    }}
}}
"""


class Ngxws(Target):
    """ngxws from this work tree: `python -m ngxws -p TMP/ -c TMP/ngxws.conf`."""
    name = "ngxws"
    hello = "pushurl"
    push = "ngxws"
    echo = True
    multi = True

    def prepare(self):
        self.conf = os.path.join(self.tmp, "ngxws.conf")
        with open(self.conf, "w") as f:
            f.write(NGXWS_CONF.format(
                workers=self.workers, tmp=self.tmp, host=HOST, port=self.port, user=ROOT_USER,
                wconns=max(1024, NOFILE - 100), log_level=self.opts.get("log_level", "warn"),
                ping=int(self.opts.get("ping", 300000)), idle=int(self.opts.get("idle", 360000)),
                keepalive_requests=int(self.opts.get("keepalive_requests", 1000000))))

    def expected_procs(self):
        return 1 + self.workers

    def env(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def command(self):
        return [sys.executable, "-m", "ngxws", "-p", self.tmp + "/", "-c", self.conf]


NCHAN_CONF = """\
load_module {module};
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{
    worker_connections {wconns};
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    # one channel per subscriber, messages are fire-and-forget: keep as little as nchan allows
    nchan_message_buffer_length 1;
    nchan_message_timeout 10s;
    server {{
        listen {host}:{port};
        location ~ ^/sub/(\\w+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            nchan_websocket_ping_interval {ping_s};
        }}
        location = /pub {{
            nchan_publisher http;
            nchan_channel_id $arg_id;
        }}
    }}
}}
"""


class Nchan(Target):
    """Debian's nginx with libnginx-mod-nchan; subscriber i on its own channel c<tag>_<i>."""
    name = "nchan"
    push = "nchan"
    multi = True
    ws_path = "/sub/c{tag}_{i}"

    def prepare(self):
        self.conf = os.path.join(self.tmp, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NCHAN_CONF.format(module=NCHAN_MODULE, workers=self.workers, nofile=NOFILE,
                                      wconns=max(1024, NOFILE - 100), tmp=self.tmp, host=HOST,
                                      port=self.port, ping_s=max(0, int(self.opts.get("ping", 0)) // 1000)))

    def ready_path(self):
        return "/sub/ready"

    def expected_procs(self):
        return 1 + self.workers

    def command(self):
        return ["nginx", "-c", self.conf, "-p", self.tmp + "/", "-e", self.tmp + "/error.log",
                "-g", "daemon off; master_process on;"]


class Aiohttp(Target):
    name = "aiohttp"
    hello = "id"
    push = "aiohttp"
    echo = True

    def command(self):
        cmd = [sys.executable, os.path.join(SERVERS, "aiohttp_push.py"), "--host", HOST, "--port", str(self.port)]
        return cmd + (["--uvloop"] if self.opts.get("uvloop") else [])


class Websockets(Target):
    name = "websockets"
    echo = True

    def command(self):
        return [sys.executable, os.path.join(SERVERS, "websockets_echo.py"), "--host", HOST,
                "--port", str(self.port)]


KINDS = {t.name: t for t in (Ngxws, Nchan, Aiohttp, Websockets)}


def make(label: str, **opts) -> Target:
    """'ngxws-w2', 'nchan-w1', 'aiohttp', 'websockets' (+ options such as ping=30000)."""
    from . import upstream_targets  # noqa: F401 - registers ngxws-up and pushpin
    name, _, w = label.partition("-w")
    if name not in KINDS:
        raise ValueError(f"unknown target {label!r}; known: ngxws-wN, nchan-wN, aiohttp, websockets")
    return KINDS[name](workers=int(w) if w else 1, **opts)
