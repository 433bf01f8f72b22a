"""The fast head parser against the h11 path (DESIGN.md "HTTP parsing and its cost").

The oracle is ``HttpParser._parse_general``, the path every head takes that
the fast parser does not: h11 plus ngxws's own refusals.  Whenever
``parse_head`` returns a Head, the oracle must return an equal one, slot by
slot; whenever the oracle refuses a head, ``parse_head`` must have returned
None.  The plain heads that the push
port and browsers send must actually take the fast path.
"""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ngxws.http import parser
from ngxws.http.errors import HttpError
from ngxws.http.parser import Head, parse_head
from ngxws.http.request import HttpParser

from ...helpers.http import eols, plain_heads

_HEAD_END = re.compile(rb"\n\r?\n")


class H11Parser(HttpParser):
    """``HttpParser`` as it was before any fast path: h11 for every head."""

    _parse = HttpParser._parse_general


# every field of a Head: its class attributes (the defaults)
HEAD_FIELDS = [name for name in vars(Head) if not name.startswith("_")]


def _slots(h):
    return {name: getattr(h, name) for name in HEAD_FIELDS}


def _oracle(head, large_size):
    """(Head, parser state) or the HttpError of the h11 path."""
    p = H11Parser(large_size=large_size)
    try:
        return p._parse(head)
    except HttpError as e:
        return e


def _cut(data):
    """What ``next_head`` would hand ``_parse`` for data: None when no complete head."""
    data = data.lstrip(b"\r\n")
    m = _HEAD_END.search(data)
    if not data or m is None:
        return None
    return data[:m.end()]


def check(data, large_size=8192):
    """Assert the fast parser agrees with the oracle on ``data``; True when it took the head."""
    head = _cut(data)
    if head is None:
        return False
    fast = parse_head(head, large_size)
    want = _oracle(head, large_size)
    if fast is None:
        return False
    assert not isinstance(want, HttpError), (head, want.status, str(want))
    assert _slots(fast) == _slots(want), head
    return True


# -- generated heads (tests/helpers/http.py) -------------------------------------------------

@settings(max_examples=800)
@given(plain_heads(), st.sampled_from([8192, 8192, 1024, 200, 90]))
def test_generated_heads_agree(data, large_size):
    check(data, large_size)


@settings(max_examples=400)
@given(plain_heads(special=False))
def test_plain_heads_take_the_fast_path(data):
    # every head of this grammar that the h11 path accepts is taken by the fast one
    want = _oracle(_cut(data), 8192)
    if not isinstance(want, HttpError):
        assert check(data), data


junk = st.sampled_from([b"\x00", b" ", b"\t", b"\r", b"\n", b"\n ", b"\r\n\t", b"\x01", b"\x0b", b"\x0c",
                        b"\x7f", b"\x80", b"\xff", b":", b" :", b"a", b"%", b"/..", b"get ", b"HTTP/2.0",
                        b"HTTP/1.2", b"HTTP/0.9", b"Content-Length: 5\r\n", b"Content-Length: 6\r\n",
                        b"Content-Length: 5, 5\r\n", b"Content-Length: -1\r\n", b"Content-Length: 1" + b"0" * 20
                        + b"\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: x\r\n", b"Host:\r\n",
                        b"Expect: 100-continue\r\n", b"X: a\r\n b\r\n", b"\r\n", b"*", b"?", b"#"])


@settings(max_examples=1000)
@given(plain_heads(), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3), junk), min_size=1,
                               max_size=4))
def test_mutated_heads_agree(data, edits):
    for pos, drop, piece in edits:
        pos = min(pos, len(data))
        data = data[:pos] + piece + data[pos + drop:]
    check(data)
    check(data, 256)


@settings(max_examples=500)
@given(st.binary(max_size=80), eols, eols)
def test_arbitrary_bytes_agree(junk_bytes, eol1, eol2):
    check(junk_bytes + eol1 + eol2)
    check(b"GET / HTTP/1.1" + eol1 + b"Host: a" + eol1 + junk_bytes + eol1 + eol2)


# -- the cases DESIGN.md names, one by one -----------------------------------------------------

PUSH = (b"POST /ws HTTP/1.1\r\nHost: 127.0.0.1:40123\r\nAuthorization: Basic dXNlcjpwYXNz\r\n"
        b"Content-Length: 64\r\n\r\n")
BROWSER = (b"GET /chat/room-1?since=12 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n"
           b"sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
           b"Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.9\r\n"
           b"Cookie: session=abc; theme=dark\r\n\r\n")
UPGRADE = (b"GET /ws?id=7 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_common_heads_take_the_fast_path():
    for data in (PUSH, BROWSER, UPGRADE, b"GET / HTTP/1.0\n\n", b"GET /a HTTP/1.1\nHost: h\r\n\n",
                 b"GET http://h:1/x/../y?q HTTP/1.1\r\nHost: other\r\n\r\n",
                 b"GET http:///x HTTP/1.1\r\nHost: other\r\n\r\n", b"GET HTTPS://h?x HTTP/1.0\r\n\r\n",
                 b"GET /%7Euser/./a//b HTTP/1.1\r\nHost: h\r\nX: \xc3\xa9\r\n\r\n"):
        assert check(data), data
    h = parse_head(PUSH, 8192)
    assert (h.method, h.uri, h.host, h.content_length, h.keep_alive) == ("POST", "/ws", "127.0.0.1:40123",
                                                                         64, True)
    h = parse_head(b"GET http://h:1/x/../y?q HTTP/1.0\r\nHost: other\r\nConnection: Keep-Alive\r\n\r\n", 8192)
    assert (h.host, h.path, h.uri, h.args, h.http_version, h.keep_alive) == ("h:1", "/x/../y", "/y", "q",
                                                                             b"1.0", True)
    # an absolute URI without a host leaves the Host header in charge
    assert parse_head(b"GET http:///x HTTP/1.1\r\nHost: other\r\n\r\n", 8192).host == "other"


def test_refused_heads_go_to_h11():
    for data, status in (
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1" + b"0" * 20 + b"\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
            (b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /%00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /.. HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
            (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", None)):
        assert parse_head(data, 8192) is None, data
        want = _oracle(data, 8192)
        if status is None:
            # h11 takes it (a control byte in a value, a chunked body): the general path's
            assert isinstance(want, Head), (data, want)
        else:
            assert isinstance(want, HttpError) and want.status == status, (data, want)
    # nothing over one large header buffer is taken: the limits are the h11 path's
    assert parse_head(PUSH, len(PUSH) - 1) is None
    assert check(PUSH, len(PUSH))


def test_wired_into_the_request_parser():
    """With the fast path on, ``next_head`` leaves the parser exactly as the h11 path does."""
    data = PUSH + b"x" * 64 + BROWSER + b"GET /a HTTP/1.0\n\n"
    states = []
    for fast in (True, False):
        p = HttpParser() if fast else H11Parser()
        out = []
        p.feed(data)
        while True:
            h = p.next_head()
            if h is None:
                break
            out.append((_slots(h), p.last_line, p.in_request_line, p.body_left, p.read_body(),
                        p.body_size, p.buffered))
        states.append(out)
    assert len(states[0]) == 3
    assert states[0] == states[1]


def test_parser_imports_nothing_of_the_package():
    # Head and normalize_uri live here and request.py imports them: no cycle between the two
    import ast
    tree = ast.parse(open(parser.__file__).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("ngxws"), node.module
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("ngxws") for a in node.names)
