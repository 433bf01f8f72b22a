import base64
import re
from types import SimpleNamespace

import pytest

from ngxws.core.cycle import Cycle
from ngxws.core.directives import ConfigError
from ngxws.modules import MODULES
from ngxws.websocket import module as wsmod
from ngxws.websocket.module import _push_id, push_handler, websocket_handler
from ngxws.websocket.session import REGISTRY, Location, Session


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


def basic(user):
    return (b"authorization", b"Basic " + base64.b64encode(user.encode() + b":"))


def test_push_id():
    def auth(value):
        return value if isinstance(value, bytes) else basic(value)[1]
    assert _push_id(auth("abc"), "") == "abc"
    assert _push_id(auth(b"Basic " + base64.b64encode(b"abc:secret")), "") == "abc"
    assert _push_id(auth("a%2Fb"), "") == "a/b"
    assert _push_id(None, "x=1&id=xyz") == "xyz"
    assert _push_id(None, "id=") is None
    assert _push_id(auth(b"Basic !!!"), "") is None
    assert _push_id(auth(b"Bearer abc"), "") is None
    # an Authorization that names nobody leaves the id argument its say
    assert _push_id(auth(b"Bearer abc"), "id=q") == "q"
    # the second time, from the cache: the same answers
    assert _push_id(auth("abc"), "") == "abc" and _push_id(auth(b"Basic !!!"), "") is None


def test_push_id_cache_is_bounded():
    from ngxws.websocket import module as m
    for i in range(m._BASIC_IDS_MAX * 2 + 10):
        assert _push_id(basic("c%d" % i)[1], "") == "c%d" % i
        assert len(m._BASIC_IDS) <= m._BASIC_IDS_MAX


class FakeSession:
    def __init__(self, conf, status=204):
        self.loc = SimpleNamespace(conf=conf)
        self.conn = SimpleNamespace(number=7)
        self.status = status
        self.got = []

    def push(self, data, text=False):
        # as the session frames it: text stays UTF-8 bytes, checked by push_handler
        self.got.append(data.decode("utf-8") if text else data)
        return self.status


@pytest.fixture
def registry():
    REGISTRY.clear()
    yield REGISTRY
    REGISTRY.clear()


def test_push_handler_statuses(registry):
    conf = object()
    s = registry["abc"] = FakeSession(conf)
    r = FakeRequest(headers=[basic("abc")], body=b"hello", conf=conf)
    push_handler(r)
    assert r.sent[0] == 204 and s.got == ["hello"]
    assert any("websocket push id=abc size=5 status=204 to *7" in l for l in r.conn.log.lines)

    r = FakeRequest(headers=[basic("abc"), (b"content-type", b"Application/Octet-Stream; x=y")],
                    body=b"\xff", conf=conf)
    push_handler(r)
    assert r.sent[0] == 204 and s.got[-1] == b"\xff"

    r = FakeRequest(headers=[basic("abc")], body="héllo".encode(), conf=conf)
    push_handler(r)
    assert r.sent[0] == 204 and s.got[-1] == "héllo"

    for req, status in [
        (FakeRequest(headers=[basic("abc")], body=b"\xff", conf=conf), 400),
        (FakeRequest(body=b"x", conf=conf), 400),
        (FakeRequest(headers=[basic("nope")], body=b"x", conf=conf), 404),
        (FakeRequest(headers=[basic("abc")], body=b"x", conf=object()), 404),   # other location
        (FakeRequest("GET", headers=[basic("abc")], conf=conf), 405),
        (FakeRequest("OPTIONS", conf=conf), 204),
    ]:
        push_handler(req)
        assert req.sent[0] == status
        if req.method != "POST":
            assert (b"Allow", b"POST, OPTIONS") in req.sent[1]
    s.status = 429
    r = FakeRequest(headers=[basic("abc")], body=b"x", conf=conf)
    push_handler(r)
    assert r.sent[0] == 429


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


def test_host_addresses():
    import socket
    v4 = wsmod._host_addresses(socket.AF_INET)
    assert "127.0.0.1" in v4
    assert all(":" not in a for a in v4)
