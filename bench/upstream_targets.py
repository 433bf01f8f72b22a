"""Adapters for the upstream benchmark: two gateways in front of one WebSocket-over-HTTP backend.

    ngxws-up   ngxws (this work tree, 1 worker) with `websocket_pass` to the backend
    pushpin    Debian's Pushpin (runner + condure + zurl + pushpin-proxy + pushpin-handler) with an
               `over_http` route to the backend

The backend is `servers/wsoh_backend.py` (aiohttp on uvloop: OPEN -> OPEN, TEXT -> the same TEXT,
CLOSE -> CLOSE), one process started before the gateway and stopped after it, by pid. Its CPU is
metered apart from the gateway's (the runner's `backend` group, from `aux_pids()`), and its request
and event counters (`GET /stats` on its own port) give the backend requests per client message.

Layout when pinned (both are single-worker targets): the gateway's whole process tree on CPU 0, the
backend on CPU 1 with the load generator. Everything listens on 127.0.0.1 in the run's temp prefix.

Importing this module registers the targets in targets.KINDS (targets.make imports it).
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import proc, targets
from .targets import HOST, NOFILE, SERVERS, Ngxws, Target, free_port

BACKEND = os.path.join(SERVERS, "wsoh_backend.py")
PUSHPIN_SERVICES = ("condure", "zurl", "pushpin-proxy", "pushpin-handler")


def http_get(port: int, path: str, timeout: float = 2.0) -> bytes | None:
    """Body of a 200 answer to GET path on 127.0.0.1:port, or None."""
    try:
        c = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
        finally:
            c.close()
    except OSError:
        return None
    return body if r.status == 200 else None


class Upstream(Target):
    """A gateway with the echo backend behind it. Subclasses write the gateway's config in
    prepare() using self.backend_port."""

    echo = True
    backend: subprocess.Popen | None = None
    backend_port = 0

    def start(self, cpus=None, timeout: float = 20.0) -> None:
        # the temp prefix is made by Target.start; the backend's log goes to a folder of its own
        self.backend_port = free_port()
        self.backend_log = os.path.join(tempfile.mkdtemp(prefix="bench-wsoh-"), "backend.log")
        with open(self.backend_log, "wb") as out:
            cmd = [sys.executable, BACKEND, "--host", HOST, "--port", str(self.backend_port)]
            if not self.opts.get("backend_uvloop", True):
                cmd.append("--no-uvloop")
            self.backend = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while http_get(self.backend_port, "/ready", 0.5) != b"ok":
            if self.backend.poll() is not None or time.monotonic() > deadline:
                self.stop_backend()
                raise RuntimeError(f"backend not ready:\n{self.backend_tail()}")
            time.sleep(0.05)
        try:
            super().start(cpus, timeout)
        except BaseException:
            self.stop_backend()
            raise
        from . import run  # its --nice applies to the backend too (run imports this module's importer)
        if run.NICE:
            run.renice([self.backend.pid], run.NICE)
        if cpus:  # the gateway on the given CPUs, the backend on the others (with the generator)
            rest = set(range(os.cpu_count() or 1)) - set(cpus)
            if rest:
                proc.pin(self.backend.pid, rest)

    def aux_pids(self) -> dict[str, list[int]]:
        """Process groups the runner meters apart from the server: the backend."""
        return {"backend": proc.tree(self.backend.pid)} if self.backend else {}

    def counters(self) -> dict:
        """The backend's counters now (empty if it does not answer)."""
        b = http_get(self.backend_port, "/stats") if self.backend else None
        return json.loads(b) if b else {}

    @staticmethod
    def counter_delta(c0: dict, c1: dict) -> dict:
        """Backend requests and events between two counters() samples, per client message."""
        if not c0 or not c1:
            return {}
        req = c1["requests"] - c0["requests"]
        ev0, ev1 = c0["events"], c1["events"]
        text = ev1.get("TEXT", 0) - ev0.get("TEXT", 0)
        return {"backend_requests": req, "backend_text_events": text,
                "backend_bytes_in": c1["bytes_in"] - c0["bytes_in"],
                "backend_connections_opened": c1.get("connections", 0) - c0.get("connections", 0),
                "backend_req_per_msg": round(req / text, 3) if text else None}

    def backend_tail(self, n: int = 1500) -> str:
        try:
            with open(self.backend_log, "rb") as f:
                return "--- backend.log\n" + f.read()[-n:].decode(errors="replace")
        except (OSError, AttributeError):
            return ""

    def log_tail(self, n: int = 3000) -> str:
        return super().log_tail(n) + "\n" + self.backend_tail(n // 2)

    def stop(self, timeout: float = 10.0) -> None:
        """The gateway first (its in-flight requests still find the backend), then the backend."""
        try:
            super().stop(timeout)
        finally:
            self.stop_backend(timeout)

    def stop_backend(self, timeout: float = 10.0) -> None:
        b, self.backend = self.backend, None
        if b is None:
            return
        if b.poll() is None:
            b.send_signal(signal.SIGTERM)
            try:
                b.wait(timeout)
            except subprocess.TimeoutExpired:
                b.kill()
                b.wait(5)

    def cleanup(self) -> None:
        super().cleanup()
        log = getattr(self, "backend_log", None)
        if log and not os.environ.get("BENCH_KEEP_TMP"):
            shutil.rmtree(os.path.dirname(log), ignore_errors=True)


NGXWS_UP_CONF = """\
daemon off;{user}
worker_processes 1;
pid {tmp}/ngxws.pid;
error_log {tmp}/error.log {log_level};
events {{
    worker_connections {wconns};
}}
http {{
    access_log off;
    server {{
        listen {host}:{port};
        location /ws {{
            websocket pingintvl={ping} idleintvl={idle};
            websocket_pass http://{host}:{backend_port}/ws;
            websocket_pass_keepalive {keepalive};
        }}
    }}
}}
"""


class NgxwsUp(Upstream, Ngxws):
    """ngxws, one worker, `websocket_pass` to the echo backend. Its first message is still the push
    URL message (websocket_push_url on), then the backend's answers."""

    name = "ngxws-up"
    multi = False
    push = None  # the push path is measured by the main suite

    def __init__(self, workers: int = 1, **opts):
        super().__init__(workers=1, **opts)

    def prepare(self):
        self.conf = os.path.join(self.tmp, "ngxws.conf")
        with open(self.conf, "w") as f:
            f.write(NGXWS_UP_CONF.format(
                tmp=self.tmp, host=HOST, port=self.port, backend_port=self.backend_port,
                user=targets.ROOT_USER,
                wconns=max(1024, NOFILE - 100), log_level=self.opts.get("log_level", "warn"),
                ping=int(self.opts.get("ping", 300000)), idle=int(self.opts.get("idle", 360000)),
                # one pooled connection per client that talks at once: 100 in the echo workloads
                keepalive=int(self.opts.get("keepalive", 256))))


def pushpin_conf(rundir: str, logdir: str, port: int, control_port: int, log_level: int) -> str:
    """Debian's /etc/pushpin/pushpin.conf with /usr/lib/pushpin/internal.conf folded in, changed so
    that every socket belongs to this run: the ZMQ sockets are IPC files in rundir (the handler's
    TCP ones too), the handler's HTTP control port is a free loopback port, and zurl (which Debian
    expects as a system service under /var/run/zurl) is one of the runner's services with its
    sockets in rundir. Nothing else differs from the packaged defaults."""
    ipc = "ipc://{rundir}/{ipc_prefix}"  # Pushpin expands these itself
    proxy = {
        "routesfile": "routes", "debug": "false", "auto_cross_origin": "false",
        "accept_x_forwarded_protocol": "false", "set_x_forwarded_protocol": "proto-only",
        "x_forwarded_for": "", "x_forwarded_for_trusted": "", "orig_headers_need_mark": "",
        "accept_pushpin_route": "false", "log_from": "false", "log_user_agent": "false",
        "sig_iss": "pushpin", "sig_key": "changeme", "upstream_key": "",
        "sockjs_url": "http://cdn.jsdelivr.net/sockjs/0.3.4/sockjs.min.js", "updates_check": "off",
        "organization_name": "",
        "condure_in_specs": ipc + "condure-out", "condure_in_stream_specs": ipc + "condure-out-stream",
        "condure_out_specs": ipc + "condure-in",
        "m2a_in_specs": f"{ipc}m2zhttp-out,{ipc}m2zws-out",
        "m2a_in_stream_specs": f"{ipc}m2zhttp-out-stream,{ipc}m2zws-out-stream",
        "m2a_out_specs": f"{ipc}m2zhttp-in,{ipc}m2zws-in",
        "zurl_out_specs": ipc + "zurl-in", "zurl_out_stream_specs": ipc + "zurl-in-stream",
        "zurl_in_specs": ipc + "zurl-out",
        "handler_inspect_spec": ipc + "inspect", "handler_accept_spec": ipc + "accept",
        "handler_retry_in_spec": ipc + "retry", "handler_ws_control_in_spec": ipc + "ws-control-in",
        "handler_ws_control_out_spec": ipc + "ws-control-out", "stats_spec": ipc + "proxy-stats",
        "command_spec": ipc + "proxy-command", "intreq_in_specs": ipc + "intreq-in",
        "intreq_in_stream_specs": ipc + "intreq-in-stream", "intreq_out_specs": ipc + "intreq-out",
    }
    handler = {
        "push_in_spec": ipc + "push-in", "push_in_sub_specs": ipc + "push-in-sub",
        "push_in_sub_connect": "false", "push_in_http_addr": HOST, "push_in_http_port": str(control_port),
        "push_in_http_max_headers_size": "10000", "push_in_http_max_body_size": "1000000",
        "stats_spec": ipc + "stats", "command_spec": ipc + "command", "message_rate": "2500",
        "message_hwm": "25000", "message_wait": "5000", "id_cache_ttl": "60",
        "connection_subscription_max": "20", "subscription_linger": "60", "stats_subscription_ttl": "60",
        "stats_report_interval": "10", "stats_format": "tnetstring",
        "proxy_inspect_spec": ipc + "inspect", "proxy_accept_spec": ipc + "accept",
        "proxy_retry_out_spec": ipc + "retry", "proxy_ws_control_in_spec": ipc + "ws-control-out",
        "proxy_ws_control_out_spec": ipc + "ws-control-in", "proxy_stats_spec": ipc + "proxy-stats",
        "proxy_command_spec": ipc + "proxy-command",
        "condure_in_stream_specs": ipc + "condure-out-stream", "condure_out_specs": ipc + "condure-in",
        "m2a_in_stream_specs": f"{ipc}m2zhttp-out-stream,{ipc}m2zws-out-stream",
        "m2a_out_specs": f"{ipc}m2zhttp-in,{ipc}m2zws-in",
        "proxy_intreq_out_specs": ipc + "intreq-in", "proxy_intreq_out_stream_specs": ipc + "intreq-in-stream",
        "proxy_intreq_in_specs": ipc + "intreq-out",
    }
    sections = {
        "global": {"rundir": rundir, "ipc_prefix": "pushpin-", "port_offset": "0",
                   "stats_connection_ttl": "120"},
        "runner": {"services": ",".join(PUSHPIN_SERVICES), "http_port": f"{HOST}:{port}", "logdir": logdir,
                   "log_level": str(log_level), "client_buffer_size": "8192", "client_maxconn": "50000",
                   "condure_bin": "condure", "mongrel2_bin": "mongrel2", "m2sh_bin": "m2sh", "zurl_bin": "zurl"},
        "proxy": proxy,
        "handler": handler,
    }
    out = ["# written by bench/upstream_targets.py for one benchmark run"]
    for name, kv in sections.items():
        out.append(f"\n[{name}]")
        out += [f"{k}={v}" for k, v in kv.items()]
    return "\n".join(out) + "\n"


class Pushpin(Upstream):
    """Debian's `pushpin` relaying WebSockets to the echo backend (route `* HOST:PORT,over_http`).
    The server's process tree is the runner and its four services; no hello, no push API here."""

    name = "pushpin"

    def prepare(self):
        rundir, logdir = os.path.join(self.tmp, "run"), os.path.join(self.tmp, "log")
        os.makedirs(rundir)
        os.makedirs(logdir)
        self.conf = os.path.join(self.tmp, "pushpin.conf")
        with open(self.conf, "w") as f:
            # log_level 1: warnings (Debian's default 2 logs every request in zurl and the proxy)
            f.write(pushpin_conf(rundir, logdir, self.port, free_port(), int(self.opts.get("log_level", 1))))
        with open(os.path.join(self.tmp, "routes"), "w") as f:  # routesfile is relative to the config
            f.write(f"* {HOST}:{self.backend_port},over_http\n")

    def expected_procs(self):
        return 1 + len(PUSHPIN_SERVICES)

    def command(self):
        return ["pushpin", "--config", self.conf]

    def log_tail(self, n: int = 3000) -> str:
        out = [super().log_tail(n)]
        logdir = os.path.join(self.tmp or "", "log")
        if self.tmp and os.path.isdir(logdir):
            for fn in sorted(os.listdir(logdir)):
                with open(os.path.join(logdir, fn), "rb") as f:
                    out.append(f"--- log/{fn}\n" + f.read()[-n // 2:].decode(errors="replace"))
        return "\n".join(out)


targets.KINDS.update({t.name: t for t in (NgxwsUp, Pushpin)})
