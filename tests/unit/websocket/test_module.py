import re
from types import SimpleNamespace

import pytest

from ngxws.core.cycle import Cycle
from ngxws.core.directives import ConfigError
from ngxws.modules import MODULES
from ngxws.websocket import module as wsmod
from ngxws.websocket.module import websocket_handler
from ngxws.websocket.session import Location, Session


def build(tmp_path, http):
    conf = tmp_path / "ngxws.conf"
    (tmp_path / "logs").mkdir(exist_ok=True)
    conf.write_text("user root; events {}\nhttp {\naccess_log off;\n%s\n}\n" % http)
    return Cycle.build(str(tmp_path) + "/", str(conf), MODULES, test_only=True)


def ws_confs(cycle):
    return cycle.conf("websocket").locations


def test_defaults(tmp_path):
    cycle = build(tmp_path, "server { listen 127.0.0.1:0; location /ws { websocket; } }")
    (c,) = ws_confs(cycle)
    assert (c.ping_interval, c.idle_interval) == (300000, 360000)
    assert c.max_message_size == 1 << 20
    assert c.max_frame_size == 0
    assert c.send_buffer_size == 256 * 1024
    assert c.slow_client == "reject"
    assert c.allow_origin is None and c.subprotocols == ()
    assert c.deflate is False and c.push_url is True
    assert c.core_loc.name == "/ws" and c.core_loc.handler is websocket_handler


def test_settings_and_inheritance(tmp_path):
    cycle = build(tmp_path, """
        websocket_max_message_size 64k;
        websocket_deflate on;
        server {
            listen 127.0.0.1:0;
            websocket_push_listen 127.0.0.1:9000-9010;
            websocket_push_host push.example;
            websocket_send_buffer 32k;
            location /a { websocket pingintvl=1000 idleintvl=30s; websocket_slow_client close; }
            location ~ ^/b/ {
                websocket;
                websocket_allow_origin https://x.example/ ~*^https://.*\\.y\\.example$;
                websocket_subprotocols chat superchat;
                websocket_max_frame_size 4k;
                websocket_push_url off;
            }
        }""")
    a, b = ws_confs(cycle)
    assert (a.ping_interval, a.idle_interval) == (1000, 30000)
    assert a.max_message_size == 65536 and a.deflate and a.send_buffer_size == 32768
    assert a.slow_client == "close"
    assert b.max_frame_size == 4096 and b.push_url is False
    assert b.subprotocols == (b"chat", b"superchat")
    exact, rx = b.allow_origin
    assert exact == "https://x.example" and rx.search("HTTPS://A.Y.EXAMPLE")
    srv = a.srv.confs.get("websocket", wsmod.Slot.SRV)
    assert srv.push_listen == ("127.0.0.1", "9000-9010") and srv.push_host == "push.example"


@pytest.mark.parametrize("http,message", [
    ("server { websocket; }", '"websocket" directive is not allowed here'),
    ("server { location /ws { websocket; websocket; } }", '"websocket" directive is duplicate'),
    ("server { location /ws { websocket pingintvl=x; } }", 'invalid pingintvl value "x"'),
    ("server { location /ws { websocket foo=1; } }", 'invalid parameter "foo=1"'),
    ("server { location /ws { websocket; websocket_deflate maybe; } }",
     'it must be "on" or "off"'),
    ("server { location /ws { websocket; websocket_slow_client drop; } }", 'invalid value "drop"'),
    ("server { location /ws { websocket; websocket_max_message_size lots; } }",
     '"websocket_max_message_size" directive invalid value'),
    ("server { location /ws { websocket; websocket_allow_origin ~(; } }", "pcre2_compile() failed"),
    ("server { location /ws { websocket_push_listen 9000; } }",
     '"websocket_push_listen" directive is not allowed here'),
])
def test_config_errors(tmp_path, http, message):
    with pytest.raises(ConfigError) as err:
        build(tmp_path, http)
    assert message in str(err.value)
    assert "ngxws.conf:" in str(err.value)


class FakeLog:
    debug_enabled = True

    def __init__(self):
        self.lines = []

    def _add(self, fmt, *args):
        self.lines.append(fmt % args if args else fmt)

    debug = info = error = warn = _add


class FakeRequest:
    def __init__(self, method="POST", headers=(), body=b"", args="", conf=None):
        self.method = method
        self.headers = list(headers)
        self.body = body
        self.args = args
        self.http_version = b"1.1"
        self.uri = "/ws"
        self.conn = SimpleNamespace(log=FakeLog(), closed=False)
        self.loc = SimpleNamespace(server_tokens=True, module_conf=lambda name: conf)
        self._conf = conf
        self.sent = None

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def loc_conf(self, name):
        return self._conf

    def send_response(self, status, headers=(), body=b"", content_type=None):
        self.sent = (status, list(headers), body)


def _ws_conf(**kw):
    base = dict(allow_origin=None, subprotocols=(), deflate=False, max_message_size=1 << 20,
                max_frame_size=0, ctx=None)
    base.update(kw)
    return SimpleNamespace(**base)


UPGRADE = [(b"host", b"x"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
           (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13")]


@pytest.mark.parametrize("headers,status", [
    (UPGRADE[:1], 400),
    ([h for h in UPGRADE if h[0] != b"sec-websocket-version"] + [(b"sec-websocket-version", b"7")],
     426),
    (UPGRADE + [(b"origin", b"https://evil.example")], 403),
])
def test_handshake_refusals(headers, status):
    r = FakeRequest("GET", headers=headers, conf=_ws_conf(allow_origin=("https://good.example",)))
    websocket_handler(r)
    assert r.sent[0] == status
    if status != 426:       # nginx has no page for 426
        assert b"<html>" in r.sent[2]
    if status == 426:
        assert (b"Sec-WebSocket-Version", b"13") in r.sent[1]


def test_push_urls_ipv6_brackets():
    loc = Location(SimpleNamespace(ping_interval=0, idle_interval=0, max_message_size=1,
                                   send_buffer_size=1, slow_client="reject"), None, None, "/ws")
    loc.push_prefixes = ("[::1]:9000", "10.0.0.1:9000")
    s = Session(loc)
    assert s.push_urls == "http://%s@[::1]:9000/ws,http://%s@10.0.0.1:9000/ws" % (s.id, s.id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", s.id)


def test_a_broken_upstream_module_fails_the_import():
    # no fallback: without a working websocket/upstream.py the websocket module does not load
    # (it used to turn the ImportError into "no websocket_pass" at the first handshake)
    import subprocess
    import sys
    code = ("import sys; sys.modules['ngxws.websocket.upstream'] = None\n"
            "import ngxws.websocket.module")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[3]))
    assert proc.returncode != 0 and "import of ngxws.websocket.upstream halted" in proc.stderr, \
        proc.stderr
    assert wsmod.upstream_module.create is __import__("ngxws.websocket.upstream",
                                                      fromlist=["create"]).create


def test_a_101_that_does_not_fit_is_finished_through_the_loop():
    """The kernel takes only part of the 101 head (the client reads nothing): the session
    sends the rest from its queue, the worker goes on serving others meanwhile, and the
    client gets the whole head, then the push URL message, in order, once it reads."""
    import socket

    from ngxws.core.directives import ConfSet, Slot
    from ngxws.http.core_module import LocationConf
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage

    from ...helpers.http import Harness

    conf = wsmod.WebSocketLocConf()
    wsmod.WebSocketModule().merge_loc_conf(wsmod.WebSocketLocConf(), conf)
    big = b"b" * (2 << 20)      # far more than the socket buffers below hold
    loc = LocationConf(handler=websocket_handler, add_headers=[(b"X-Big", big, True)],
                       confs=ConfSet({("websocket", Slot.LOC): conf}))
    h = Harness({"/ws": loc, "/other": lambda r: r.send_response(200, (), b"other")})
    try:
        conf.ctx = Location(conf, h.loop, h.log, "/ws")
        conf.ctx.push_prefixes = ("127.0.0.1:9000",)
        c, conn = h.connect()
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        c.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        h.settle()
        (session,) = conf.ctx.sessions.values()
        assert session.conn is conn and conn.data is session
        # the rest of the head waits in the session's queue, not in a blocking sendall
        assert conn.sock.gettimeout() == 0.0 and conn.write.active
        assert session.out is not None and session.queued > len(big) // 2
        # meanwhile another client of this worker is answered
        other, _ = h.connect()
        other.sendall(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
        h.settle()
        assert other.recv(65536).endswith(b"\r\n\r\nother")
        # the client reads (with room to read fast now): everything arrives, in order
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        data = bytearray()
        head_end = -1
        for _ in range(2000):
            h.settle()
            try:
                data += c.recv(1 << 20)
            except BlockingIOError:
                h.spin(lambda: False, 1)
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0 and len(data) >= head_end + 4 + 2:
                break
        head, rest = bytes(data[:head_end + 4]), bytes(data[head_end + 4:])
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
        assert b"\r\nX-Big: " + big + b"\r\n\r\n" in head
        client = Connection(ConnectionType.CLIENT)
        for _ in range(100):
            client.receive_data(rest)
            events = list(client.events())
            if events:
                break
            h.settle()
            try:
                rest = c.recv(65536)
            except BlockingIOError:
                rest = b""
        assert events == [TextMessage(data=session.push_urls)]
    finally:
        h.close()
