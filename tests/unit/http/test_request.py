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
from ngxws.http.request import HttpParser, normalize_uri

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


# -- the fast head parser against h11 (DESIGN.md: "HTTP parsing and its cost") ---------------

import h11  # noqa: E402

from ngxws.http.request import _fast_head  # noqa: E402

_PIECES = [b"GET", b"POST", b"get", b"G T", b"M-_", b"", b" ", b"/", b"/a?b=c", b"*", b"http://h/x", b"/\x7f",
           b"/\x80", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.12", b"\r\n", b"\n", b"\r", b"\t",
           b"Host", b"host", b"HOST", b":", b": ", b"a", b"Content-Length", b"5", b"05", b"5,5", b"-1",
           b"Transfer-Encoding", b"chunked", b"X-A", b"x y", b"\x00", b"\x01", b"\x0b", b"\xff", b"  ",
           b"Connection", b"close", b"Expect", b"100-continue", b"\"q\"", b"(", b"@", b"=", b"1" * 21]


def _h11_head(data):
    c = h11.Connection(h11.SERVER)
    c.receive_data(data)
    try:
        ev = c.next_event()
    except h11.RemoteProtocolError:
        return "error"
    if type(ev) is not h11.Request:
        return "incomplete"
    return (ev.method, ev.target, ev.http_version, [(n, v) for n, v in ev.headers])


def _assert_agrees(data):
    fast = _fast_head(data)
    if fast is None:
        return False
    oracle = _h11_head(data)
    assert oracle not in ("error", "incomplete"), (data, fast)
    assert (fast[0], fast[1], fast[2]) == oracle[:3], data
    # h11 folds equal duplicate Content-Lengths into one; ngxws refuses duplicates anyway
    fast_headers = list(fast[3])
    if sum(1 for n, _ in fast_headers if n == b"content-length") > 1:
        first = [v for n, v in fast_headers if n == b"content-length"][0]
        seen = False
        kept = []
        for n, v in fast_headers:
            if n == b"content-length":
                if seen:
                    continue
                seen = True
            kept.append((n, v))
        fast_headers = kept
        if [v for n, v in oracle[3] if n == b"content-length"] != [first]:
            return True
    assert fast_headers == oracle[3], data
    return True


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_fast_head_is_a_subset_of_h11_pieces(pieces):
    data = b"".join(pieces)
    for tail in (b"\r\n\r\n", b"\n\n"):
        _assert_agrees(data + tail)


_LINES = st.sampled_from([b"GET / HTTP/1.1", b"POST /p?x=1 HTTP/1.1", b"GET /x HTTP/1.0", b"PUT /a%20b HTTP/1.1"])
_NAMES = st.sampled_from([b"X-A", b"Accept", b"User-Agent", b"A_b", b"Cookie", b"Content-Length",
                          b"X-A", b"Accept", b"User-Agent", b"A_b", b"Cookie", b"Content-Length",
                          b"Host", b"Transfer-Encoding", b"Bad Name", b"", b"x\x00"])
# mostly what real clients send, sometimes what they should not
_PRINTABLE = st.binary(min_size=0, max_size=16).map(lambda b: bytes(0x21 + x % 94 if x % 7 else 0x20 for x in b))
_VALUES = (_PRINTABLE | _PRINTABLE | _PRINTABLE
           | st.sampled_from([b"a", b"5", b" a ", b"\ta", b"a b", b"chunked", b"1.2.3.4:80", b"12345678901234567890",
                              b"123456789012345678901"])
           | st.binary(max_size=6))
_EOLS = st.sampled_from([b"\r\n", b"\n"])


@settings(max_examples=1500, deadline=None)
@given(_LINES, st.booleans(),
       st.lists(st.tuples(_NAMES, st.sampled_from([b":", b": ", b": ", b": ", b":\t", b" :"]), _VALUES, _EOLS),
                max_size=6), _EOLS, _EOLS)
def test_fast_head_is_a_subset_of_h11_headers(line, host, fields, eol1, eol2):
    data = line + eol1 + (b"Host: h" + eol1 if host else b"") + \
        b"".join(n + sep + v + e for n, sep, v, e in fields) + eol2
    _assert_agrees(data)


def test_fast_head_takes_the_common_heads():
    for data in (b"POST /push?id=abc HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.0\r\n"
                 b"Accept: */*\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
                 b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 b"GET / HTTP/1.0\n\n"):
        assert _assert_agrees(data)
    # chunked requests always go to h11, which decodes their bodies
    assert _fast_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n") is None
