"""The push port keeps connections alive as the websocket location says (keepalive_requests)."""

import base64
import socket
from urllib.parse import urlsplit

import websocket


def read_response(f):
    status = f.readline()
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    f.read(int(headers.get("content-length", 0)))
    return status, headers


def test_push_port_honours_keepalive_requests(ngxws_server):
    srv = ngxws_server(http="keepalive_requests 3;\n"
                            "server { listen 127.0.0.1:0; location /ws { websocket; } }")
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), timeout=10)
    try:
        url = urlsplit(ws.recv().split(",")[0])
        auth = base64.b64encode(b"%s:" % url.username.encode()).decode()
        with socket.create_connection((url.hostname, url.port), timeout=10) as s:
            f = s.makefile("rb")
            answers = []
            for i in range(3):
                s.sendall(("POST /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n"
                           "Content-Length: 2\r\n\r\nm%d" % (auth, i)).encode())
                answers.append(read_response(f))
            assert [a[0] for a in answers] == [b"HTTP/1.1 204 No Content\r\n"] * 3
            assert [a[1].get("connection") for a in answers] == ["keep-alive", "keep-alive", "close"]
            assert f.read() == b""      # closed after the third, as nginx does
        assert [ws.recv() for _ in range(3)] == ["m0", "m1", "m2"]
    finally:
        ws.close()
