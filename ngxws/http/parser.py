"""A fast parser for plain request heads (sans-IO), in front of h11.

Theory of operation
-------------------
``HttpParser._parse`` (http/request.py) hands every complete head here first;
``HttpConnection.whole_request`` (http/handler.py) and the push port's direct
route (websocket/push.py) a head that came whole in one read with its body.
So a head is parsed by this one function whichever lane it takes, and the
lanes differ only in what they do with the ``Head``.
``parse_head`` either returns the very ``Head`` record the h11 path would have
returned for it, or None, and then the head goes down the h11 path unchanged.
It never raises: every refusal, with its status, message and log wording,
stays with the h11 path, which sees every head this parser does not take.

What it takes is a strict subset of what the h11 path accepts (DESIGN.md
"HTTP parsing and its cost"; tests/unit/http/test_parser.py holds it to that
with h11 as the oracle, slot by slot):

- a head no longer than one large header buffer (so none of nginx's size
  limits can apply);
- a request line ``METHOD SP target SP HTTP/1.0|HTTP/1.1``, the method in
  nginx's alphabet (``[A-Z_-]``), the target printable ASCII and in origin or
  ``http(s)://`` absolute form;
- header lines ``token ":" OWS value OWS``, the value printable ASCII or
  obs-text with inner spaces and tabs (no control byte, no NUL, no obs-fold);
- lines ending in CRLF or bare LF, in any mix, and no other CR;
- no Transfer-Encoding (a chunked body is h11's to decode), at most one
  Content-Length of 1 to 20 digits, at most one Host, and a Host for HTTP/1.1.

The checks run at C speed over the whole head (one regex match, whose
character classes leave no room for backtracking); then
plain splits cut it into (name, value) pairs, and Python looks at the few
headers the Head records.  No h11 object is made.

The ``Head`` record and nginx's URI normalization (``normalize_uri``) live
here, below http/request.py, which imports them: this module imports nothing
of the package.
"""

import re

__all__ = ["parse_head", "Head", "normalize_uri", "split_absolute", "keep_alive",
           "REQUEST_LINE_LOG_SIZE"]

#: how much of a request line the logs keep ($request, the error log's "request:"), nginx's
#: NGX_MAX_ERROR_STR
REQUEST_LINE_LOG_SIZE = 2048

_PCT = re.compile(r"%([0-9A-Fa-f]{2})")

# the whole of a plain head: the request line, then lines of a field name, its colon and a
# value of visible bytes, spaces, tabs and obs-text, each ended by CR LF or a bare LF, then the
# empty line.  What it refuses (NUL, other control bytes, DEL, a CR not before LF, obs-fold,
# "Host :", a stray empty line, junk) goes to the h11 path, which has the error for it.
_PLAIN = re.compile(rb"(([A-Z_-]+) ([\x21-\x7e]+) HTTP/1\.([01]))\r?\n"
                    rb"(?:[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[\t\x20-\x7e\x80-\xff]*\r?\n)*\r?\n\Z")


class Head:
    """One parsed request head.

    The defaults are class attributes and the parsers set only what differs: a
    head is made for every request, and fourteen stores in an ``__init__`` were a
    tenth of a push's Python time.  (No ``__slots__``: a head lives as long as
    its request.)
    """

    method = ""
    #: the raw request target, str (latin-1)
    target = ""
    #: path part of the target as sent (not decoded)
    path = ""
    #: query string without "?", "" when none
    args = ""
    #: decoded, normalized path (nginx's $uri)
    uri = ""
    #: b"1.0" or b"1.1"
    http_version = b"1.1"
    #: [(lower-case name, value)] as bytes; the parsers give each head its own list
    headers = ()
    #: the Host header or the absolute URI's host, str, "" when none
    host = ""
    content_length = None
    chunked = False
    expect_continue = False
    keep_alive = True
    #: the first Authorization and Content-Type values, bytes, None when absent (nginx's
    #: headers_in.authorization and .content_type: the push handler reads them)
    authorization = None
    content_type = None
    #: the request line, str, for logs ($request)
    request_line = ""
    #: bytes of the head, for $request_length
    length = 0


def _unquote(path):
    if "%" not in path:
        return path
    try:
        return _PCT.sub(lambda m: chr(int(m.group(1), 16)), path).encode("latin-1").decode(
            "utf-8", "surrogateescape")
    except ValueError:
        return None


def normalize_uri(path, merge_slashes=True):
    """nginx's URI normalization: %XX decoded, // merged, /./ and /../ resolved.

    Returns None when the path is invalid: a NUL, or ``..`` above the root.
    """
    uri = _unquote(path)
    if uri is None or "\x00" in uri:
        return None
    if "/." not in uri and ("//" not in uri or not merge_slashes):
        return uri
    out = []
    segs = uri.split("/")[1:]
    last = len(segs) - 1
    for i, seg in enumerate(segs):
        if seg == ".":
            if i == last:
                out.append("")
            continue
        if seg == "..":
            if not out or (len(out) == 1 and out[0] == ""):
                return None
            if out and out[-1] == "":
                out.pop()
            if not out:
                return None
            out.pop()
            if i == last:
                out.append("")
            continue
        if seg == "" and i != last and merge_slashes:
            continue
        out.append(seg)
    return "/" + "/".join(out)


def split_absolute(target):
    """(host, origin-form rest) of an ``http://`` or ``https://`` target, or None.

    The rest is "/" when the URI has no path; the host may be "" (``http:///x``),
    and then the Host header names the server, as in nginx.
    """
    lower = target[:8].lower()
    if not (lower.startswith("http://") or lower.startswith("https://")):
        return None
    rest = target[target.index("//") + 2:]
    slash = rest.find("/")
    if slash == -1:
        return rest, "/"
    return rest[:slash], rest[slash:]


def keep_alive(http_11, connection):
    """nginx's keep-alive decision: ``connection`` is the lower-cased Connection value or None."""
    if http_11:
        return connection is None or b"close" not in connection
    return connection is not None and b"keep-alive" in connection


def parse_head(head, large_size):
    """The ``Head`` of a plain request head (bytes, up to its empty line), or None.

    None means "not plain": the caller parses ``head`` the full way, which
    also finds every error in it.
    """
    if len(head) > large_size:
        return None
    m = _PLAIN.match(head)
    if m is None:
        return None
    headers = []
    # each line after the request line is now a token, ":", then only visible bytes,
    # spaces and tabs up to its CR LF or LF (which is h11's OWS field-value OWS); the
    # last two pieces of the split are the empty line
    for line in head.split(b"\n")[1:-2]:
        name, _, value = line.partition(b":")
        headers.append((name.lower(), value.strip(b" \t\r")))
    fields = dict(headers)
    # the request line is ASCII (the pattern says so): one decode, then its three parts
    line = m.group(1).decode("latin-1")
    method, target, version = line.split(" ")
    http_11 = version[-1] == "1"

    h = Head()
    if len(fields) < len(headers):
        # a name came more than once: fine, unless it is one of these two; the Head keeps
        # the first Authorization and Content-Type, as the h11 path does
        hosts = lengths = 0
        for name, value in headers:
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                lengths += 1
            elif name == b"authorization":
                if h.authorization is None:
                    h.authorization = value
            elif name == b"content-type":
                if h.content_type is None:
                    h.content_type = value
        if hosts > 1 or lengths > 1:
            return None
    else:
        h.authorization = fields.get(b"authorization")
        h.content_type = fields.get(b"content-type")
    if b"transfer-encoding" in fields:
        return None
    value = fields.get(b"content-length")
    if value is not None:
        if not value.isdigit() or len(value) > 20:
            return None
        h.content_length = int(value)
    value = fields.get(b"host")
    if value is not None:
        host = value.decode("latin-1")
    elif http_11:
        return None
    else:
        host = ""

    h.target = target
    if target[0] != "/":
        parts = split_absolute(target)
        if parts is None:
            return None
        if parts[0]:
            host = parts[0]
        target = parts[1]
    q = target.find("?")
    if q == -1:
        path = target
    else:
        path = target[:q]
        h.args = target[q + 1:]
    if "%" in path or "/." in path or "//" in path:
        uri = normalize_uri(path)
        if uri is None:
            return None
    else:
        uri = path
    h.path = path
    h.uri = uri
    h.method = method
    h.length = len(head)
    h.request_line = line if len(line) <= REQUEST_LINE_LOG_SIZE else line[:REQUEST_LINE_LOG_SIZE]
    h.headers = headers
    h.host = host
    connection = fields.get(b"connection")
    if connection is not None:
        connection = connection.lower()
    if http_11:
        if connection is not None:
            h.keep_alive = keep_alive(True, connection)
    else:
        h.http_version = b"1.0"
        h.keep_alive = keep_alive(False, connection)
    value = fields.get(b"expect")
    if value is not None:
        h.expect_continue = value.lower() == b"100-continue"
    return h
