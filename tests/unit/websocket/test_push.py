"""The push port (websocket/push.py): the client id of a push, the POST handler, the host's
addresses.  The direct route is held to the HTTP path in test_push_route.py."""

import base64
import socket
from types import SimpleNamespace

from ngxws.http.core_module import LocationConf
from ngxws.http.parser import Head
from ngxws.websocket import push
from ngxws.websocket.push import PushConfs, _push_id, push_handler

from ..core.fakes import FakeLog


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
    for i in range(push._BASIC_IDS_MAX * 2 + 10):
        assert _push_id(basic("c%d" % i)[1], "") == "c%d" % i
        assert len(push._BASIC_IDS) <= push._BASIC_IDS_MAX


class FakeSession:
    """A Session as push_handler sees it; ``status`` and ``got`` are the test's."""

    def __init__(self, conf, status=204):
        self.loc = SimpleNamespace(conf=conf)
        self.conn = SimpleNamespace(number=7)
        self.status = status
        self.got = []

    def push(self, data, text=False):
        # as the session frames it: text stays UTF-8 bytes, checked by push_handler
        self.got.append(data.decode("utf-8") if text else data)
        return self.status


class FakeRequest:
    """A Request as push_handler reads it: a real Head and push LocationConf; ``sent`` is
    the test's record of the answer."""

    def __init__(self, sessions, method="POST", headers=(), body=b"", args="", conf=None):
        self.method = method
        self.headers = list(headers)
        # the parsed head, as both head parsers fill it: the first of each of these
        self.head = Head()
        for name, value in reversed(self.headers):
            if name in (b"authorization", b"content-type"):
                setattr(self.head, name.decode().replace("-", "_"), value)
        self.body = body
        self.args = args
        log = FakeLog()
        log.debug_enabled = True
        self.conn = SimpleNamespace(log=log)
        self.loc = LocationConf(server_tokens=True, confs=PushConfs(conf, sessions))
        self.sent = None

    def send_response(self, status, headers=(), body=b"", content_type=None):
        self.sent = (status, list(headers), body)


def test_push_handler_statuses():
    conf = object()
    sessions = {}
    s = sessions["abc"] = FakeSession(conf)

    def request(*args, **kw):
        return FakeRequest(sessions, *args, **kw)
    r = request(headers=[basic("abc")], body=b"hello", conf=conf)
    push_handler(r)
    assert r.sent[0] == 204 and s.got == ["hello"]
    assert "websocket push id=abc size=5 status=204 to *7" in r.conn.log.at("debug")

    r = request(headers=[basic("abc"), (b"content-type", b"Application/Octet-Stream; x=y")],
                body=b"\xff", conf=conf)
    push_handler(r)
    assert r.sent[0] == 204 and s.got[-1] == b"\xff"

    r = request(headers=[basic("abc")], body="héllo".encode(), conf=conf)
    push_handler(r)
    assert r.sent[0] == 204 and s.got[-1] == "héllo"

    for req, status in [
        (request(headers=[basic("abc")], body=b"\xff", conf=conf), 400),
        (request(body=b"x", conf=conf), 400),
        (request(headers=[basic("nope")], body=b"x", conf=conf), 404),
        (request(headers=[basic("abc")], body=b"x", conf=object()), 404),   # other location
        (request(headers=[basic("abc")], body=b"x", conf=None), 204),       # a shared name
        (FakeRequest({}, headers=[basic("abc")], body=b"x", conf=conf), 404),  # another worker
        (request("GET", headers=[basic("abc")], conf=conf), 405),
        (request("OPTIONS", conf=conf), 204),
    ]:
        push_handler(req)
        assert req.sent[0] == status
        if req.method != "POST":
            assert (b"Allow", b"POST, OPTIONS") in req.sent[1]
    s.status = 429
    r = request(headers=[basic("abc")], body=b"x", conf=conf)
    push_handler(r)
    assert r.sent[0] == 429


def test_host_addresses():
    v4 = push._host_addresses(socket.AF_INET)
    assert "127.0.0.1" in v4
    assert all(":" not in a for a in v4)
