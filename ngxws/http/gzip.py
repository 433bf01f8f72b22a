"""gzip for whole responses in hand (``return`` text, error pages, static files up to a bound).

nginx's gzip filter in small: a response is a candidate when the location has ``gzip on``, its
status is 200, 403 or 404, it is not a HEAD, its length reaches ``gzip_min_length`` and its type
is in ``gzip_types`` (``text/html`` always). A candidate gets ``Vary: Accept-Encoding`` under
``gzip_vary on``, and is compressed when the client's ``Accept-Encoding`` names gzip with a
non-zero q, its HTTP version reaches ``gzip_http_version`` and, for a request with ``Via``,
``gzip_proxied`` allows it. The compressed body goes out chunked (HTTP/1.1), its ETag made weak.
"""

import zlib

__all__ = ["candidate", "accepts", "compress", "MAX_FILE"]

#: static files larger than this go out as they are (their body is compressed in memory)
MAX_FILE = 4 * 1024 * 1024


def candidate(r, loc, status, content_type, length):
    if status not in (200, 403, 404) or r.header_only or length < loc.gzip_min_length \
            or not content_type:
        return False
    types = loc.gzip_types
    if "*" in types:
        return True
    base = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    return base == "text/html" or base in types


def _q_nonzero(params):
    for p in params:
        name, _, value = p.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value) > 0
            except ValueError:
                return False
    return True


def accepts(r, loc, headers):
    """Whether this request takes a gzip body (nginx's ngx_http_gzip_ok)."""
    ae = r.header(b"accept-encoding")
    if not ae:
        return False
    for item in ae.decode("latin-1").split(","):
        name, *params = item.split(";")
        if name.strip().lower() == "gzip":
            if not _q_nonzero(params):
                return False
            break
    else:
        return False
    if r.http_version < loc.gzip_http_version:
        return False
    if r.header(b"via") is None:
        return True
    proxied = loc.gzip_proxied
    if "off" in proxied:
        return False
    if "any" in proxied:
        return True
    names = {n.lower(): v for n, v in headers}
    cc = names.get(b"cache-control", b"").lower()
    return (("expired" in proxied and b"expires" in names)
            or ("no-cache" in proxied and b"no-cache" in cc)
            or ("no-store" in proxied and b"no-store" in cc)
            or ("private" in proxied and b"private" in cc)
            or ("no_last_modified" in proxied and b"last-modified" not in names)
            or ("no_etag" in proxied and b"etag" not in names)
            or ("auth" in proxied and r.header(b"authorization") is not None))


def compress(body, level):
    """The gzip member of ``body`` framed as one HTTP chunk and the last chunk."""
    c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    data = c.compress(body) + c.flush()
    return data, b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
