"""The client side of one workload: picows WebSocket clients and a keep-alive HTTP push driver on uvloop.

Started by bench/run.py, one or more per run, each with a share of the connections. It speaks a
line protocol with the runner so that the runner can meter the server and the generators over
exactly the measured window:

    loadgen -> runner   READY {json}    connected (and, for echo, warmed up)
    runner  -> loadgen  GO              start the measured phase
    loadgen -> runner   END             measured phase over (runner stops its CPU meters)
    runner  -> loadgen  STOP            (hold only) close the connections
    loadgen -> runner   DONE {json}     counts and checks; then it exits

Messages carry what is needed to check them: a push body starts with the CLOCK_MONOTONIC send time
(ns) and the subscriber's index, so the receiver measures delivery latency and sees misrouting;
an echo message carries its connection's index and sequence number, so a lost, reordered or
foreign echo is seen. Every wait is bounded.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import sys
import time
from collections import Counter, deque
from urllib.parse import urlsplit

from picows import WSListener, WSMsgType, ws_connect

mono = time.monotonic_ns
TEXT, BINARY, PING, CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.CLOSE


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def read_line() -> str:
    """Next command line from the runner ('' on EOF)."""
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


async def wait_for(cond, timeout: float, step: float = 0.005) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(step)
    return True


def percentiles(ns: list[int]) -> dict:
    """Nearest-rank p50/p90/p99/max of nanosecond samples, in ms."""
    if not ns:
        return {}
    s = sorted(ns)
    n = len(s)
    out = {f"p{q}": s[min(n - 1, (q * n + 99) // 100 - 1)] / 1e6 for q in (50, 90, 99)}
    out["max"] = s[-1] / 1e6
    return {k: round(v, 3) for k, v in out.items()}


# ------------------------------------------------------------------ WebSocket clients

class Client(WSListener):
    """One WebSocket client. Pings are answered here (auto-pong is off so that they are counted)."""

    def __init__(self, run, i):
        self.run = run
        self.i = i
        self.tr = None
        self.hello = None if run.want_hello else ""
        self.gone = False

    def on_ws_connected(self, tr):
        self.tr = tr

    def on_ws_frame(self, tr, frame):
        mt = frame.msg_type
        if mt is TEXT or mt is BINARY:
            if self.hello is None:
                self.hello = frame.get_payload_as_utf8_text()
                self.run.hellos += 1
            else:
                self.run.on_message(self, frame)
        elif mt is PING:
            tr.send_pong(frame.get_payload_as_bytes())
            self.run.pings += 1
        elif mt is CLOSE:
            self.run.server_closes[frame.get_close_code()] += 1
            tr.send_close(frame.get_close_code())
            tr.disconnect()

    def on_ws_disconnected(self, tr):
        self.gone = True
        if not self.run.closing:
            self.run.disconnects += 1


class Run:
    """State shared by the clients of one generator process."""

    def __init__(self, args):
        self.args = args
        self.spec = args.spec
        self.want_hello = self.spec["hello"] != "none"
        self.hellos = self.pings = self.disconnects = self.unexpected = 0
        self.server_closes = Counter()
        self.closing = False
        self.tag = args.tag
        self.clients: list[Client] = []

    def url(self, i: int) -> str:
        return self.spec["url"].replace("{tag}", self.tag).replace("{i}", str(i))

    def on_message(self, cl, frame):
        self.unexpected += 1  # hold: an idle client is sent nothing but pings

    def make_client(self, i):
        return Client(self, i)

    async def connect_all(self, n: int, first: int, timeout: float = 60.0) -> dict:
        """Open n clients (indices first..first+n-1), at most --concurrency handshakes in flight,
        and wait for each one's hello when the server sends one."""
        sem = asyncio.Semaphore(self.args.concurrency)
        src = self.args.src.split(",") if self.args.src else None
        errors = Counter()
        slots: list[Client | None] = [None] * n

        async def one(k):
            i = first + k
            kw = {"local_addr": (src[i % len(src)], 0)} if src else {}
            async with sem:
                try:
                    _, cl = await asyncio.wait_for(ws_connect(
                        lambda: self.make_client(i), self.url(i), enable_auto_pong=False,
                        websocket_handshake_timeout=timeout, read_buffer_init_size=1024, **kw), timeout)
                    if cl is None or cl.tr is None or cl.gone:
                        errors["connected, then gone before the hold began"] += 1
                    else:
                        slots[k] = cl
                except Exception as e:  # noqa: BLE001 - every failure kind is reported, by kind
                    errors[f"{type(e).__name__}: {e}"[:120]] += 1

        t0 = time.monotonic()
        await asyncio.gather(*(one(k) for k in range(n)))
        ok = [c for c in slots if c is not None]
        if self.want_hello:
            await wait_for(lambda: self.hellos >= len(ok), timeout)
            for c in ok:
                if c.hello is None:
                    errors["no hello message"] += 1
                    c.tr.disconnect(graceful=False)
            ok = [c for c in ok if c.hello is not None]
        el = time.monotonic() - t0
        self.clients = ok
        return {"requested": n, "connected": len(ok), "connect_s": round(el, 3),
                "connects_per_s": round(len(ok) / el, 1) if el else None,
                "connect_errors": dict(errors.most_common(5))}

    def close_all(self):
        self.closing = True
        for c in self.clients:
            if c.tr is not None:
                c.tr.disconnect(graceful=False)

    def common(self) -> dict:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return {"pings": self.pings, "disconnects": self.disconnects,
                "server_closes": {str(k): v for k, v in self.server_closes.items()},
                "unexpected_messages": self.unexpected,
                "maxrss_kib": r.ru_maxrss}


# ------------------------------------------------------------------ push: HTTP driver

def push_head(spec: dict, i: int, hello: str, tag: str, size: int) -> tuple[tuple[str, int], bytes]:
    """(endpoint, request head) of a push to subscriber i; the body follows the head."""
    kind = spec["push"]
    host, port = spec["host"], spec["port"]
    extra = ""
    if kind == "nchan":
        path = f"/pub?id=c{tag}_{i}"
    elif kind == "aiohttp":
        path = f"/push/{hello}"
    elif kind == "ngxws":
        # first of the comma-separated push URLs http://ID@HOST:PORT/PATH; curl would turn the
        # userinfo into this header, the generator builds it itself
        u = urlsplit(hello.split(",")[0].strip())
        host, port, path = u.hostname, u.port or 80, u.path or "/"
        extra = "Authorization: Basic " + base64.b64encode(f"{u.username}:".encode()).decode() + "\r\n"
    else:
        raise SystemExit(f"target has no push API ({kind!r})")
    hp = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = f"POST {path} HTTP/1.1\r\nHost: {hp}\r\n{extra}Content-Length: {size}\r\n\r\n"
    return (host, port), head.encode()


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight. A response that says
    `Connection: close` (keepalive_requests reached) retires it; the driver opens a new one."""

    __slots__ = ("driver", "ep", "tr", "buf", "retiring")

    def __init__(self, driver, ep):
        self.driver = driver
        self.ep = ep
        self.tr = None
        self.buf = b""
        self.retiring = False

    def connection_made(self, tr):
        self.tr = tr
        sock = tr.get_extra_info("socket")
        sock.setsockopt(6, 1, 1)  # TCP_NODELAY

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            k = head.find(b"ontent-Length:")
            if k < 0:
                k = head.find(b"ontent-length:")
            total = end + 4
            if k >= 0:
                e = head.find(b"\r\n", k)
                total += int(head[k + 14:e if e >= 0 else end])
            if len(buf) < total:
                break
            status = int(buf[9:12])
            buf = buf[total:]
            if b"onnection: close" in head or b"onnection: Close" in head:
                self.retiring = True
            self.driver.on_response(self, status)
        self.buf = buf

    def connection_lost(self, exc):
        self.driver.on_lost(self)


class PushRun(Run):
    """Subscribers receive pushes; the driver sends them over keep-alive HTTP connections.

    rate 0: closed loop, each HTTP connection sends its next push when the previous one is
    answered. rate R: open loop, a 1 ms ticker sends the pushes that are due; a push that finds
    every connection of its endpoint busy waits in a backlog, and that wait counts in its latency."""

    def __init__(self, args):
        super().__init__(args)
        self.lat: list[int] = []
        self.delivered = self.misrouted = 0
        self.sent = self.acked = self.inflight = self.conn_lost = self.reconnects = 0
        self.status = Counter()
        self.deadline = 0
        self.lag: list[int] = []
        self.pad = b""

    def on_message(self, cl, frame):
        t = mono()
        d = frame.get_payload_as_bytes()
        self.lat.append(t - int(d[:19]))
        if int(d[20:27]) != cl.j:
            self.misrouted += 1
        self.delivered += 1

    def send(self, conn, j, ts):
        conn.tr.write(self.heads[j] + b"%019d %07d " % (ts, j) + self.pad)
        self.sent += 1
        self.inflight += 1

    def next_of(self, ep):
        subs = self.by_ep[ep]
        c = self.cursor[ep]
        self.cursor[ep] = c + 1 if c + 1 < len(subs) else 0
        return subs[c]

    def on_response(self, conn, status):
        self.inflight -= 1
        self.status[status] += 1
        if 200 <= status < 300:
            self.acked += 1
        now = mono()
        if conn.retiring:
            conn.tr.close()
            if now < self.deadline:
                self.reconnects += 1
                asyncio.ensure_future(self.replace(conn.ep))
            return
        if now >= self.deadline:
            return
        ep = conn.ep
        if self.rate == 0:
            self.send(conn, self.next_of(ep), now)
        elif self.backlog[ep]:
            j, ts = self.backlog[ep].popleft()
            self.send(conn, j, ts)
        else:
            self.free[ep].append(conn)

    def on_lost(self, conn):
        if not self.closing and not conn.retiring:
            self.conn_lost += 1

    async def replace(self, ep):
        """A new connection for one the server retired; it carries on where that one stopped."""
        _, c = await asyncio.get_running_loop().create_connection(lambda: HttpConn(self, ep), ep[0], ep[1])
        self.conns.append(c)
        if mono() >= self.deadline:
            return
        if self.rate == 0:
            self.send(c, self.next_of(ep), mono())
        elif self.backlog[ep]:
            j, ts = self.backlog[ep].popleft()
            self.send(c, j, ts)
        else:
            self.free[ep].append(c)

    async def prepare(self):
        a = self.args
        size = a.msgsize
        self.pad = b"x" * (size - 28)
        subs = self.clients
        self.heads, self.by_ep = [], {}
        for j, c in enumerate(subs):
            c.j = j
            ep, head = push_head(self.spec, c.i, c.hello, self.tag, size)
            self.heads.append(head)
            self.by_ep.setdefault(ep, []).append(j)
        self.ep_of = [None] * len(subs)
        for ep, js in self.by_ep.items():
            for j in js:
                self.ep_of[j] = ep
        self.cursor = {ep: 0 for ep in self.by_ep}
        self.free = {ep: [] for ep in self.by_ep}
        self.backlog = {ep: deque() for ep in self.by_ep}
        # --http-conns in all, shared out over the endpoints (one push port per ngxws worker)
        per_ep = max(1, a.http_conns // len(self.by_ep))
        loop = asyncio.get_running_loop()
        self.conns = []
        for ep in self.by_ep:
            for _ in range(per_ep):
                _, c = await loop.create_connection(lambda ep=ep: HttpConn(self, ep), ep[0], ep[1])
                self.conns.append(c)
        return {"endpoints": len(self.by_ep), "http_conns": len(self.conns),
                "subs_per_endpoint": sorted(len(v) for v in self.by_ep.values())}

    async def measure(self):
        a = self.args
        self.rate = a.rate
        t0 = mono()
        self.deadline = t0 + int(a.duration * 1e9)
        if a.rate == 0:
            for c in self.conns:
                self.send(c, self.next_of(c.ep), mono())
            await asyncio.sleep(a.duration)
        else:
            for c in self.conns:
                self.free[c.ep].append(c)
            n = len(self.clients)
            total = int(a.rate * a.duration)
            issued = rr = 0
            step = 1e9 / a.rate
            while issued < total:
                now = mono()
                if now >= self.deadline:
                    break
                due = min(total, int((now - t0) / step) + 1)
                while issued < due:
                    j, rr = rr, (rr + 1 if rr + 1 < n else 0)
                    self.lag.append(now - t0 - int(issued * step))
                    issued += 1
                    ep = self.ep_of[j]
                    if self.free[ep]:
                        self.send(self.free[ep].pop(), j, now)
                    else:
                        self.backlog[ep].append((j, now))
                await asyncio.sleep(0.001)
            rest = (self.deadline - mono()) / 1e9
            if rest > 0:
                await asyncio.sleep(rest)
        send_s = (mono() - t0) / 1e9
        await wait_for(lambda: self.inflight == 0, 10)
        # every acknowledged push must arrive; give stragglers a bounded time
        last = [self.delivered, time.monotonic()]

        def settled():
            if self.delivered >= self.acked:
                return True
            if self.delivered != last[0]:
                last[0], last[1] = self.delivered, time.monotonic()
            return time.monotonic() - last[1] > 2.0
        await wait_for(settled, 15, 0.001)
        el = (mono() - t0) / 1e9
        return {"sent": self.sent, "acked": self.acked, "failed": self.sent - self.acked,
                "http_status": {str(k): v for k, v in self.status.items()},
                "http_conn_lost": self.conn_lost, "http_reconnects": self.reconnects,
                "unsent_backlog": sum(len(b) for b in self.backlog.values()),
                "delivered": self.delivered, "lost": self.acked - self.delivered,
                "misrouted": self.misrouted, "send_window_s": round(send_s, 3), "elapsed_s": round(el, 3),
                "latency_ms": percentiles(self.lat),
                "schedule_lag_ms": percentiles(self.lag) if self.lag else None}

    def finish(self):
        self.closing = True
        for c in self.conns:
            if not c.tr.is_closing():
                c.tr.close()


# ------------------------------------------------------------------ echo

class EchoRun(Run):
    """Each connection keeps --window messages in flight; an echo must match, in order, what was sent."""

    def __init__(self, args):
        super().__init__(args)
        self.recording = False
        self.stop_sending = False
        self.count = self.outstanding = self.mismatched = 0
        self.lat: list[int] = []

    def start_client(self, cl):
        cl.prefix = b"%08d" % cl.i
        cl.times = deque()
        cl.sseq = cl.rseq = 0
        for _ in range(self.args.window):
            self.send(cl)

    def send(self, cl):
        cl.times.append(mono())
        cl.tr.send(TEXT, cl.prefix + b"%024d" % cl.sseq)
        cl.sseq += 1
        self.outstanding += 1

    def on_message(self, cl, frame):
        t = mono()
        self.outstanding -= 1
        t0 = cl.times.popleft()
        if frame.get_payload_as_bytes() != cl.prefix + b"%024d" % cl.rseq:
            self.mismatched += 1
        cl.rseq += 1
        if self.recording:
            self.count += 1
            self.lat.append(t - t0)
        if not self.stop_sending:
            self.send(cl)

    async def warm(self):
        for c in self.clients:
            self.start_client(c)
        await asyncio.sleep(self.args.warmup)

    async def measure(self):
        t0 = mono()
        self.recording = True
        await asyncio.sleep(self.args.duration)
        self.recording = False
        el = (mono() - t0) / 1e9
        say("END")
        self.stop_sending = True
        drained = await wait_for(lambda: self.outstanding == 0, 10)
        return {"msgs": self.count, "elapsed_s": round(el, 3), "msgs_per_s": round(self.count / el, 1),
                "unanswered": self.outstanding if not drained else 0, "mismatched": self.mismatched,
                "latency_ms": percentiles(self.lat), "window": self.args.window}


# ------------------------------------------------------------------ handshakes

class Shake(asyncio.Protocol):
    """One handshake by hand (picows' ws_connect costs the generator more than most servers spend):
    send a fixed upgrade request, read the 101, read the first message if the server sends one,
    send a masked CLOSE 1000, then wait for the server to close the TCP connection."""

    __slots__ = ("run", "fut", "tr", "buf", "state", "hello", "request")
    CLOSE = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # FIN+CLOSE, masked (zero key), code 1000

    def __init__(self, run, fut, request):
        self.run, self.fut, self.tr, self.buf, self.hello = run, fut, None, b"", None
        self.request = request
        self.state = 0  # 0 head, 1 first message, 2 closing

    def connection_made(self, tr):
        self.tr = tr
        tr.write(self.request)

    def data_received(self, data):
        buf = self.buf + data
        if self.state == 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                return self.fail(f"status {buf[9:12].decode(errors='replace')}")
            buf = buf[end + 4:]
            self.state = 1 if self.run.want_hello else 2
            if self.state == 2:
                self.tr.write(self.CLOSE)
        if self.state == 1:
            if len(buf) < 2:
                self.buf = buf
                return
            n, off = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    self.buf = buf
                    return
                n, off = int.from_bytes(buf[2:4], "big"), 4
            if len(buf) < off + n:
                self.buf = buf
                return
            if buf[0] != 0x81:
                return self.fail(f"first frame 0x{buf[0]:02x}, not a text message")
            self.hello = buf[off:off + n]
            buf = buf[off + n:]
            self.state = 2
            self.tr.write(self.CLOSE)
        self.buf = b""  # state 2: the server's CLOSE, then EOF

    def fail(self, why):
        if not self.fut.done():
            self.fut.set_exception(ConnectionError(why))
        self.tr.abort()

    def connection_lost(self, exc):
        if self.fut.done():
            return
        if self.state == 2:
            self.fut.set_result(self.hello)
        else:
            self.fut.set_exception(ConnectionError(f"closed in state {self.state}: {exc}"))


class ShakeRun(Run):
    """--concurrency loops, each: connect, handshake, wait for the first message (push URLs or id),
    close handshake (client CLOSE 1000), wait for the server to drop the TCP connection."""

    def __init__(self, args):
        super().__init__(args)
        self.done = self.failed = 0
        self.errors = Counter()
        self.ids: set[bytes] = set()
        self.dup_ids = 0
        self.lat: list[int] = []
        u = urlsplit(self.url(0))
        self.path0 = u.path
        self.hostport = u.netloc

    def request_for(self, i):
        path = urlsplit(self.url(i)).path if "{i}" in self.spec["url"] else self.path0
        return (f"GET {path} HTTP/1.1\r\nHost: {self.hostport}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n").encode()

    async def one(self, i, src):
        loop = asyncio.get_running_loop()
        t0 = mono()
        request = self.request_for(i)
        fut = loop.create_future()
        kw = {"local_addr": (src, 0)} if src else {}
        tr = None
        try:
            tr, _ = await asyncio.wait_for(loop.create_connection(lambda: Shake(self, fut, request), self.spec["host"],
                                                                  self.spec["port"], **kw), 10)
            hello = await asyncio.wait_for(fut, 10)
            if hello is not None:
                ident = hello.split(b",")[0]
                if ident in self.ids:
                    self.dup_ids += 1
                self.ids.add(ident)
            self.done += 1
            self.lat.append(mono() - t0)
        except Exception as e:  # noqa: BLE001 - counted by kind
            self.failed += 1
            self.errors[f"{type(e).__name__}: {e}"[:120]] += 1
            if tr is not None:
                tr.abort()

    async def measure(self):
        a = self.args
        src = a.src.split(",") if a.src else [None]
        end = time.monotonic() + a.duration
        counter = [a.first]

        async def worker():
            while time.monotonic() < end:
                i = counter[0]
                counter[0] += 1
                await self.one(i, src[i % len(src)])

        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(a.concurrency))), a.duration + 30)
        el = time.monotonic() - t0
        say("END")
        return {"handshakes": self.done, "failed": self.failed, "elapsed_s": round(el, 3),
                "handshakes_per_s": round(self.done / el, 1), "dup_ids": self.dup_ids,
                "errors": dict(self.errors.most_common(5)), "latency_ms": percentiles(self.lat)}


# ------------------------------------------------------------------ main

async def main_async(args) -> dict:
    kind = args.workload
    run = {"push": PushRun, "echo": EchoRun, "hold": Run, "handshakes": ShakeRun}[kind](args)
    info = {}
    if kind != "handshakes":
        info = await run.connect_all(args.conns, args.first)
        if not run.clients:
            say("READY " + json.dumps(info))
            return {**info, "error": "no client connected"}
    if kind == "push":
        info.update(await run.prepare())
        await asyncio.sleep(0.2)
    elif kind == "echo":
        await run.warm()
    say("READY " + json.dumps(info))
    if await read_line() != "GO":
        run.close_all()
        return {**info, "error": "runner went away"}
    if kind == "hold":
        p0 = run.pings
        await read_line()  # STOP (or EOF)
        res = {"alive": sum(not c.gone for c in run.clients), "pings_in_hold": run.pings - p0}
    else:
        res = await run.measure()
        if kind == "push":
            say("END")
            run.finish()
    run.close_all()
    return {**info, **res, **run.common()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=("hold", "push", "echo", "handshakes"))
    ap.add_argument("--spec", type=json.loads, required=True, help="client spec from bench/targets.py (JSON)")
    ap.add_argument("--tag", default="t", help="per-run token (nchan channel names)")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--first", type=int, default=0, help="index of this generator's first client")
    ap.add_argument("--src", help="comma-separated source addresses, e.g. 127.0.0.2,127.0.0.3")
    ap.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--rate", type=float, default=0, help="push: pushes/s, 0 = closed loop")
    ap.add_argument("--http-conns", type=int, default=32)
    ap.add_argument("--msgsize", type=int, default=64)
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--max-time", type=float, default=300)
    args = ap.parse_args(argv)
    if args.workload == "push" and args.msgsize < 28:
        ap.error("--msgsize must be >= 28 for push")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop
    try:
        res = uvloop.run(asyncio.wait_for(main_async(args), args.max_time))
    except Exception as e:  # noqa: BLE001 - reported to the runner
        res = {"error": f"{type(e).__name__}: {e}"}
    say("DONE " + json.dumps(res))
    return 0 if "error" not in res else 1


if __name__ == "__main__":
    sys.exit(main())
