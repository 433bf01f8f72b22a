"""An echo backend speaking WebSocket-over-HTTP (content type application/websocket-events).

The same backend sits behind ngxws (`websocket_pass`) and behind Pushpin (`over_http` route) in the
upstream benchmark, so that the gateways are compared on equal terms. Each POST carries events
`NAME HEXLEN\\r\\nBYTES\\r\\n` (or `NAME\\r\\n` when empty); the answer carries, in order:

    OPEN -> OPEN    TEXT, BINARY -> the same event    CLOSE -> CLOSE (same content)    PING -> PONG

and nothing for PONG, DISCONNECT or anything else.

GET /stats on the backend's own port answers JSON counters (requests, bytes in, events by name,
connections seen: distinct peer addresses), so the runner can tell how many requests a client
message cost (one request in flight per client: messages that arrive meanwhile share the next
request) and whether the gateway keeps its backend connections alive. Any other GET answers 200 "ok".

aiohttp, one process, access log off, uvloop unless --no-uvloop.
"""
from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

EVENTS_TYPE = "application/websocket-events"
ECHOED = frozenset((b"TEXT", b"BINARY", b"CLOSE"))


class Stats:
    __slots__ = ("requests", "bytes_in", "events", "peers")

    def __init__(self):
        self.requests = 0
        self.bytes_in = 0
        self.events: dict[str, int] = {}
        self.peers: set = set()  # (host, port) of every connection seen: is the gateway keeping them alive?

    def as_dict(self) -> dict:
        return {"requests": self.requests, "bytes_in": self.bytes_in, "events": dict(self.events),
                "connections": len(self.peers)}


STATS = Stats()


def answer(body: bytes) -> bytes:
    """The response body for a request body of events; counts the events by name."""
    out = []
    counts = STATS.events
    pos, end = 0, len(body)
    while pos < end:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise ValueError("event line without CRLF")
        head = body[pos:eol]
        name, _, size = head.partition(b" ")
        if size:
            n = int(size, 16)
            content = body[eol + 2:eol + 2 + n]
            pos = eol + 2 + n + 2
        else:
            content = b""
            pos = eol + 2
        key = name.decode("ascii", "replace")
        counts[key] = counts.get(key, 0) + 1
        if name in ECHOED:
            out.append(b"%s %x\r\n%s\r\n" % (name, len(content), content))
        elif name == b"OPEN":
            out.append(b"OPEN\r\n")
        elif name == b"PING":
            out.append(b"PONG\r\n")
    return b"".join(out)


async def on_post(request: web.Request) -> web.Response:
    body = await request.read()
    STATS.requests += 1
    STATS.bytes_in += len(body)
    STATS.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
    try:
        out = answer(body)
    except ValueError as e:
        return web.Response(status=400, text=f"bad events: {e}\n")
    return web.Response(body=out, headers={"Content-Type": EVENTS_TYPE})


async def on_get(request: web.Request) -> web.Response:
    if request.path == "/stats":
        return web.Response(text=json.dumps(STATS.as_dict()), content_type="application/json")
    return web.Response(text="ok")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop instead of uvloop")
    a = ap.parse_args()
    if not a.no_uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app.router.add_post("/{path:.*}", on_post)
    app.router.add_get("/{path:.*}", on_get)
    web.run_app(app, host=a.host, port=a.port, access_log=None, print=None, backlog=1024, shutdown_timeout=1)


if __name__ == "__main__":
    main()
