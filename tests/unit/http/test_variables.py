"""nginx variables and complex values, checked against what nginx 1.22 printed for the same request."""

import base64
import os
import time

import pytest
from hypothesis import given, strategies as st

from ngxws import __version__
from ngxws.core.directives import ConfigError
from ngxws.http import variables
from ngxws.http.core_module import ServerConf
from ngxws.http.parser import Head
from ngxws.http.request import Request
from ngxws.http.variables import VARIABLES, compile_complex, get_variable


class FakeConn:
    def __init__(self, peer=("127.0.0.1", 34818), local=("127.0.0.1", 55237), number=2, requests=1):
        self.peer = peer
        self.local = local
        self.number = number
        self.requests = requests


def srv(*names):
    return ServerConf(names=list(names))


#: a response head as http/handler.py writes it
RESPONSE_HEAD = (b"HTTP/1.1 200 OK\r\nServer: ngxws/0.1.0\r\nDate: Wed, 25 Nov 2026 21:59:27 GMT\r\n"
                 b"Content-Type: text/plain\r\nContent-Length: 20\r\nConnection: keep-alive\r\n"
                 b"X-A: 1\r\nServer: extra\r\n\r\n")


class FakeRequest:
    """The attributes docs/internals.md gives a Request, bytes where h11 gives bytes (the
    attributes are Request's: tests/unit/test_fakes.py checks)."""

    response_headers = Request.response_headers

    def __init__(self, **kw):
        self.method = b"GET"
        self.target = b"/r?x=1&b=2"
        self.uri = "/r"
        self.args = b"x=1&b=2"
        self.http_version = b"1.1"
        self.headers = [(b"host", b"127.0.0.1:55237"), (b"user-agent", b"curl/7.88.1"),
                        (b"accept", b"*/*")]
        self.conn = FakeConn()
        self.srv_conf = srv("example.test")
        self.status = 200
        self.bytes_sent = 168
        self.body_bytes_sent = 20
        self.head = Head()
        self.head.request_line = "GET /r?x=1&b=2 HTTP/1.1"
        self.head.length = 124
        self.start_time = 1795643967.889
        self.response_head = RESPONSE_HEAD
        self.__dict__.update(kw)


@pytest.fixture
def utc_clock(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(variables, "clock", lambda: 1795643967.889)
    variables._time.sec = -1
    yield
    monkeypatch.undo()
    time.tzset()
    variables._time.sec = -1


def v(name, r):
    return get_variable(name)(r)


# nginx 1.22's values for `curl "http://127.0.0.1:55237/r?x=1&b=2"` (see the module docstring)
NGINX_ROW = [
    ("remote_addr", "127.0.0.1"), ("remote_port", "34818"), ("remote_user", None),
    ("time_local", "25/Nov/2026:21:59:27 +0000"), ("time_iso8601", "2026-11-25T21:59:27+00:00"),
    ("request", "GET /r?x=1&b=2 HTTP/1.1"), ("request_method", "GET"),
    ("request_uri", "/r?x=1&b=2"), ("uri", "/r"), ("args", "x=1&b=2"),
    ("query_string", "x=1&b=2"), ("is_args", "?"), ("status", "200"), ("body_bytes_sent", "20"),
    ("bytes_sent", "168"), ("request_length", "124"), ("request_time", "0.000"),
    ("http_user_agent", "curl/7.88.1"), ("connection", "2"), ("connection_requests", "1"),
    ("msec", "1795643967.889"), ("host", "127.0.0.1"), ("server_name", "example.test"),
    ("server_addr", "127.0.0.1"), ("server_port", "55237"), ("server_protocol", "HTTP/1.1"),
    ("scheme", "http"), ("content_type", None), ("content_length", None),
    ("cookie_a", None), ("arg_x", "1"), ("sent_http_content_type", "text/plain"),
    ("http_x_foo", None), ("nginx_version", __version__),
]


@pytest.mark.parametrize("name,expected", NGINX_ROW)
def test_values_as_nginx(utc_clock, name, expected):
    assert v(name, FakeRequest()) == expected


def test_every_required_variable_exists():
    required = ("remote_addr remote_port remote_user time_local time_iso8601 request request_method "
                "request_uri uri args query_string is_args status body_bytes_sent bytes_sent "
                "request_length request_time connection connection_requests pid msec host hostname "
                "server_name server_addr server_port server_protocol scheme nginx_version "
                "content_type content_length").split()
    for name in required:
        assert name in VARIABLES, name
    for prefixed in ("http_referer", "cookie_sid", "arg_page", "sent_http_location"):
        assert callable(get_variable(prefixed))


def test_pid_and_hostname():
    r = FakeRequest()
    assert v("pid", r) == str(os.getpid())
    assert v("hostname", r) == __import__("socket").gethostname()


def test_names_are_case_insensitive():
    r = FakeRequest()
    assert get_variable("Remote_Addr")(r) == "127.0.0.1"
    assert get_variable("HTTP_USER_AGENT")(r) == "curl/7.88.1"


def test_request_time_counts_from_start(monkeypatch):
    monkeypatch.setattr(variables, "clock", lambda: 100.2505)
    assert v("request_time", FakeRequest(start_time=100.0)) == "0.250"
    # a clock step backwards never logs a negative time
    assert v("request_time", FakeRequest(start_time=101.0)) == "0.000"


def test_time_local_carries_the_local_offset(monkeypatch):
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    monkeypatch.setattr(variables, "clock", lambda: 1795643967.0)
    variables._time.sec = -1
    try:
        assert v("time_local", None) == "25/Nov/2026:16:59:27 -0500"
        assert v("time_iso8601", None) == "2026-11-25T16:59:27-05:00"
    finally:
        monkeypatch.undo()
        time.tzset()
        variables._time.sec = -1


def test_no_args():
    r = FakeRequest(target=b"/", uri="/", args=b"")
    assert v("args", r) is None          # nginx logs "-"
    assert v("is_args", r) == ""         # found, empty: nginx logs nothing
    assert v("arg_x", r) is None


def test_status_before_a_response_is_000():
    assert v("status", FakeRequest(status=0)) == "000"


def test_unparsed_request_uses_the_raw_line():
    # nginx logs `"garbage" 400` and "-" for the parts it never parsed
    r = FakeRequest(method=None, target=None, uri=None, args=None, http_version=None,
                    request_line=b"garbage", headers=[], status=400)
    assert v("request", r) == "garbage"
    assert v("request_method", r) is None
    assert v("request_uri", r) is None
    assert v("server_protocol", r) is None
    assert v("host", r) == "example.test"
    assert v("status", r) == "400"


def test_request_line_bytes_stay_byte_exact():
    r = FakeRequest(request_line=b"GET /a%20b?x=%22q\x7f HTTP/1.1")
    assert v("request", r) == "GET /a%20b?x=%22q\x7f HTTP/1.1"


@pytest.mark.parametrize("host,expected", [
    (b"Example.COM:8080", "example.com"),
    (b"example.com.", "example.com"),
    (b"[::1]:8080", "[::1]"),
    (None, "example.test"),
])
def test_host(host, expected):
    headers = [] if host is None else [(b"host", host)]
    assert v("host", FakeRequest(headers=headers)) == expected


def test_server_name_first_of_a_list():
    assert v("server_name", FakeRequest(srv_conf=srv("a.test", "b.test"))) == "a.test"


def test_remote_user_from_basic_auth():
    auth = b"Basic " + base64.b64encode(b"bob:pw")
    assert v("remote_user", FakeRequest(headers=[(b"authorization", auth)])) == "bob"
    assert v("remote_user", FakeRequest(headers=[(b"authorization", b"Basic !!!")])) is None
    assert v("remote_user", FakeRequest(headers=[(b"authorization", b"Bearer x")])) is None


def test_ipv6_peer():
    r = FakeRequest(conn=FakeConn(peer=("::1", 5000, 0, 0), local=("::1", 8080, 0, 0)))
    assert v("remote_addr", r) == "::1"
    assert v("server_port", r) == "8080"


def test_repeated_headers_join():
    r = FakeRequest(headers=[(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2"),
                             (b"cookie", b"a=1"), (b"cookie", b"b=2")])
    assert v("http_x_forwarded_for", r) == "1.1.1.1, 2.2.2.2"
    r2 = FakeRequest(headers=[(b"x-y", b"1"), (b"x-y", b"2")])
    assert v("http_x_y", r2) == "1"        # nginx 1.22: the first
    assert v("http_cookie", r) == "a=1; b=2"
    assert v("cookie_b", r) == "2"


def test_cookie_and_arg_lookup():
    r = FakeRequest(headers=[(b"cookie", b"a=ck; B=2; c")], args=b"x=1&Page=3&empty=&flag")
    assert v("cookie_a", r) == "ck"
    assert v("cookie_b", r) == "2"          # nginx compares names case-insensitively
    assert v("cookie_c", r) is None
    assert v("arg_page", r) == "3"
    assert v("arg_empty", r) == ""
    assert v("arg_flag", r) is None


def test_sent_http():
    r = FakeRequest()
    assert v("sent_http_content_length", r) == "20"
    assert v("sent_http_Content_Type", r) == "text/plain"
    assert v("sent_http_x_a", r) == "1"
    assert v("sent_http_location", r) is None
    # nginx's own Server and Date are not among the headers the variables search; an
    # add_header's Server is
    assert v("sent_http_server", r) == "extra"
    assert v("sent_http_date", r) is None
    # Connection and Keep-Alive as nginx's access log has them: the keep-alive flag is
    # cleared by then, so "close" and not found; "upgrade" after a 101
    assert v("sent_http_connection", r) == "close" and v("sent_http_keep_alive", r) is None
    assert v("sent_http_connection", FakeRequest(status=101)) == "upgrade"
    # before a response: nothing sent
    assert v("sent_http_content_type", FakeRequest(response_head=None)) is None


# -- complex values ----------------------------------------------------------------

def test_complex_value_as_nginx_return():
    # nginx: return 200 "u=$uri a=$args x=${arg_x}y\n";
    f = compile_complex("u=$uri a=$args x=${arg_x}y\n")
    assert f(FakeRequest()) == "u=/r a=x=1&b=2 x=1y\n"
    assert f(FakeRequest(target=b"/r", args=b"")) == "u=/r a= x=y\n"


def test_complex_constant_and_single():
    assert compile_complex("plain text")(None) == "plain text"
    assert compile_complex("")(None) == ""
    assert compile_complex("$uri")(FakeRequest()) == "/r"
    assert compile_complex("$cookie_none")(FakeRequest()) == ""


def test_captures():
    import re
    f = compile_complex("$1-$2-$9")
    assert f(FakeRequest(captures=["/a/b", "a", "b"])) == "a-b-"
    # from a regex location's match, as http/request.py keeps it
    assert f(FakeRequest(match=re.match(r"/(\w)/(\w)", "/a/b"))) == "a-b-"
    assert f(FakeRequest()) == "--"


def test_head_fallbacks():
    head = Head()
    head.request_line = "GET /x HTTP/1.0"
    head.length = 40
    r = FakeRequest(head=head, body=b"abc")
    assert v("request", r) == "GET /x HTTP/1.0"
    assert v("request_length", r) == "43"


@pytest.mark.parametrize("text,message", [
    ("$foo", 'unknown "foo" variable'),
    ("a $http_", 'unknown "http_" variable'),
    ("a$", "invalid variable name"),
    ("a$ b", "invalid variable name"),
    ("a${} b", "invalid variable name"),
    ("a $- b", "invalid variable name"),
    ("a${x b", 'the closing bracket in "x" variable is missing'),
    ("a${uri", 'the closing bracket in "uri" variable is missing'),
])
def test_complex_errors_in_nginx_words(text, message):
    with pytest.raises(ConfigError) as e:
        compile_complex(text)
    assert e.value.msg == message


@given(st.text())
def test_any_text_compiles_or_config_error(s):
    try:
        f = compile_complex(s)
    except ConfigError:
        return
    out = f(FakeRequest())
    assert isinstance(out, str)
    if "$" not in s:
        assert out.encode("latin-1") == s.encode("utf-8", "surrogatepass")


def test_values_are_one_byte_per_character():
    r = FakeRequest(srv_conf=srv("b\u00fccher.test"), headers=[(b"x-a", b"\xc3\xa9")])
    out = compile_complex("\u00e9 $server_name $http_x_a")(r)
    assert out.encode("latin-1") == b"\xc3\xa9 b\xc3\xbccher.test \xc3\xa9"


# the cases below were read off nginx 1.22 with a '$request|$status|...' format

def test_absolute_form_target():
    head = Head()
    head.host = "abs.example"
    head.request_line = "GET http://abs.example/r?z=1 HTTP/1.1"
    head.length = 69
    r = FakeRequest(target=b"http://abs.example/r?z=1", args=b"z=1", head=head,
                    headers=[(b"host", b"h")])
    assert v("request_uri", r) == "/r?z=1"
    assert v("host", r) == "abs.example"
    assert v("request_uri", FakeRequest(target=b"http://abs.example")) == "/"


def test_494_is_logged_as_400():
    assert v("status", FakeRequest(status=494)) == "400"


def test_unparsed_request_line_has_no_protocol():
    assert v("server_protocol", FakeRequest(method="", http_version=b"1.1")) is None
