"""An echo server on the `websockets` library (asyncio implementation, compression off, no pings)."""
import argparse
import asyncio

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for msg in ws:
            await ws.send(msg)
    except ConnectionClosed:
        pass


async def serve_forever(host, port):
    async with serve(echo, host, port, compression=None, ping_interval=None, backlog=4096,
                     max_queue=64):
        await asyncio.Event().wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    asyncio.run(serve_forever(a.host, a.port))


if __name__ == "__main__":
    main()
