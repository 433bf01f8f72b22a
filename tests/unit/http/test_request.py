"""The request parser (sans-IO): data files, limits, smuggling, and hypothesis.

Each case in tests/data/requests/{valid,invalid}/NNN.http runs whole, byte by
byte, and followed by a second request (it must come out intact).
"""

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngxws.http.errors import HttpError, error_page, status_line
from ngxws.http.parser import normalize_uri
from ngxws.http.request import HttpParser

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data", "requests")
NEXT = b"GET /next HTTP/1.1\r\nHost: n\r\n\r\n"


def _cases(kind):
    d = os.path.join(DATA, kind)
    out = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".http"):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            with open(os.path.join(d, name[:-5] + ".json")) as f:
                out.append(pytest.param(data, json.load(f), id=name))
    return out


def run(chunks, max_body=1 << 20):
    """Feed chunks; return [(head, body)] of complete requests, or raise HttpError."""
    p = HttpParser()
    out = []
    head = None
    for chunk in chunks:
        p.feed(chunk)
        while True:
            if head is None:
                head = p.next_head()
                if head is None:
                    break
            body = p.read_body(max_body)
            if body is None:
                break
            out.append((head, body))
            head = None
    return out


def splits(data):
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]


@pytest.mark.parametrize("data,exp", _cases("valid"))
def test_valid(data, exp):
    for chunks in splits(data + NEXT):
        reqs = run(chunks)
        assert len(reqs) == 2
        head, body = reqs[0]
        for key, value in exp.items():
            if key == "body":
                assert body == value.encode()
            else:
                assert getattr(head, key) == value, key
        assert reqs[1][0].uri == "/next" and reqs[1][1] == b""


@pytest.mark.parametrize("data,exp", _cases("invalid"))
def test_invalid(data, exp):
    for chunks in splits(data):
        with pytest.raises(HttpError) as info:
            run(chunks)
        assert info.value.status == exp["status"]
        assert exp["message"] in info.value.message


def test_pipelined_in_order():
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(50))
    assert [h.uri for h, _ in run([data])] == ["/%d" % i for i in range(50)]


def test_chunked_too_large_is_413():
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    with pytest.raises(HttpError) as info:
        run([data], max_body=10)
    assert info.value.status == 413
    assert info.value.message == "client intended to send too large chunked body: 16 bytes"


def test_limits_follow_large_client_header_buffers():
    p = HttpParser(large_size=1024, large_num=2)
    p.feed(b"GET /" + b"a" * 1100)
    with pytest.raises(HttpError) as info:
        p.next_head()
    assert info.value.status == 414
    p = HttpParser(large_size=1024, large_num=2)
    p.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: " + b"a" * 900 + b"\r\n" + b"Y: " + b"a" * 900 + b"\r\n"
           + b"Z: " + b"a" * 900)
    with pytest.raises(HttpError) as info:
        p.next_head()
    assert info.value.status == 494


def test_buffer_stays_bounded_while_waiting():
    p = HttpParser(large_size=1024, large_num=4)
    p.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(HttpError):
        for _ in range(100):
            p.feed(b"X-Long: " + b"a" * 500 + b"\r\n")
            p.next_head()
    assert p.buffered <= 4 * 1024 + 600


def test_take_trailing_after_head():
    p = HttpParser()
    p.feed(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    head = p.next_head()
    assert head.uri == "/ws"
    assert p.take_trailing() == b"\x81\x05hello"
    assert p.buffered == 0


@pytest.mark.parametrize("path,uri", [
    ("/", "/"), ("/a//b", "/a/b"), ("/a/./b", "/a/b"), ("/a/b/../c", "/a/c"), ("/a/..", "/"),
    ("/%41", "/A"), ("/..", None), ("/%2e%2e/x", None), ("/a%00", None), ("/a/../../b", None),
])
def test_normalize_uri(path, uri):
    assert normalize_uri(path) == uri


def test_error_pages_are_nginx_bytes():
    # read off nginx 1.22.1, with its tokens replaced by ours
    assert error_page(404) == (b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
                               b"<center><h1>404 Not Found</h1></center>\r\n"
                               b"<hr><center>ngxws/0.1.0</center>\r\n</body>\r\n</html>\r\n")
    assert error_page(302).startswith(b"<html>\r\n<head><title>302 Found</title>")
    assert error_page(494, server_tokens=False) == (
        b"<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n<body>\r\n"
        b"<center><h1>400 Bad Request</h1></center>\r\n<center>Request Header Or Cookie Too Large</center>\r\n"
        b"<hr><center>ngxws</center>\r\n</body>\r\n</html>\r\n")
    # nginx's page lengths less one byte ("nginx/1.22.1" is one longer than "ngxws/0.1.0")
    for code, nginx_len in ((400, 157), (403, 153), (413, 183), (414, 177), (494, 233), (503, 197)):
        assert len(error_page(code)) == nginx_len - 1
    assert error_page(418) is None
    assert status_line(302) == b"HTTP/1.1 302 Moved Temporarily\r\n"
    assert status_line(299) == b"HTTP/1.1 299 \r\n"
    assert status_line(494) == b"HTTP/1.1 400 Bad Request\r\n"


VALID = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /p?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /x HTTP/1.0\n\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_requests_or_http_errors(data):
    try:
        reqs = run([data])
    except HttpError as e:
        assert 400 <= e.status <= 505
        return
    for head, body in reqs:
        assert head.uri.startswith("/")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(VALID), min_size=1, max_size=4), st.data())
def test_valid_requests_split_anywhere(reqs, data):
    stream = b"".join(reqs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = []
    last = 0
    for c in cuts:
        chunks.append(stream[last:c])
        last = c
    chunks.append(stream[last:])
    whole = run([stream])
    split = run(chunks)
    assert len(whole) == len(reqs)
    assert [(h.method, h.uri, h.args, b) for h, b in split] == [(h.method, h.uri, h.args, b) for h, b in whole]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID), st.integers(0, 200), st.binary(min_size=1, max_size=3))
def test_mutated_requests_never_escape(req, pos, junk):
    pos = min(pos, len(req))
    data = req[:pos] + junk + req[pos:]
    try:
        run([data])
    except HttpError as e:
        assert e.status in (400, 414, 494, 501, 505, 413)




@pytest.mark.parametrize("value", [b"5, 5", b"5,5", b"5 ,5"])
def test_content_length_list_refused_as_nginx(value):
    # real nginx 1.22: 400, 'client sent invalid "Content-Length" header' (h11 alone folds the list)
    p = HttpParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\nhello")
    with pytest.raises(HttpError) as info:
        p.next_head()
    assert info.value.status == 400
    assert info.value.message == 'client sent invalid "Content-Length" header'


def test_h11_path_gives_lower_case_names_and_values_as_sent():
    # a control byte in a value keeps the head from the fast parser: h11 parses it, and the
    # Head's headers come from h11's public Headers.raw_items(), names lower-cased
    head = (b"GET / HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: V a l\x01\r\nACCEPT: */*\r\n"
            b"Authorization: Basic eA==\r\nauthorization: second\r\nContent-Type: text/x\r\n\r\n")
    h = HttpParser()._parse_general(head)
    assert h.headers == [(b"host", b"a"), (b"x-mixed-case", b"V a l\x01"), (b"accept", b"*/*"),
                         (b"authorization", b"Basic eA=="), (b"authorization", b"second"),
                         (b"content-type", b"text/x")]
    assert (h.authorization, h.content_type) == (b"Basic eA==", b"text/x")
