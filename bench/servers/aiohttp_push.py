"""The push server a Python developer would write with aiohttp instead of ngxws (one process).

GET /ws         upgrade; the first text message is the client's id; client messages are echoed
POST /push/ID   the body goes to that client as one text message: 204, or 404 if it is gone
"""
import argparse
import asyncio
import secrets

from aiohttp import WSMsgType, web

CLIENTS: dict = {}


async def ws_handler(request):
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    cid = secrets.token_urlsafe(16)
    CLIENTS[cid] = ws
    try:
        await ws.send_str(cid)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
    finally:
        del CLIENTS[cid]
    return ws


async def push_handler(request):
    ws = CLIENTS.get(request.match_info["cid"])
    if ws is None or ws.closed:
        return web.Response(status=404)
    data = await request.read()
    try:
        await ws.send_str(data.decode())
    except (ConnectionError, RuntimeError):
        return web.Response(status=404)
    return web.Response(status=204)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--uvloop", action="store_true")
    a = ap.parse_args()
    if a.uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_post("/push/{cid}", push_handler)
    web.run_app(app, host=a.host, port=a.port, backlog=4096, access_log=None, print=None,
                shutdown_timeout=1)


if __name__ == "__main__":
    main()
