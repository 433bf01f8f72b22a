"""Static files: root/index, mime types, 404/403/301/405, HEAD, If-Modified-Since, no escape."""

import os
import re
from email.utils import formatdate

import pytest

from ngxws.http.core_module import MIME_TYPES, LocationConf
from ngxws.http.static import content_type

from ...helpers.http import Harness


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "html"
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "index.html").write_text("<p>home</p>\n")
    (root / "app.js").write_text("var x = 1;\n")
    (root / "data.bin").write_bytes(os.urandom(300000))
    (root / "sub" / "index.html").write_text("sub\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    h = Harness({"/": LocationConf(root=str(root))})
    yield h, root
    h.close()


def get(h, raw, until=b"<EOF>"):
    c, _ = h.connect()
    c.sendall(raw)
    out = h.read(c, lambda b: b.endswith(until), n=2000)
    head, _, body = out.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def test_index_and_types(site):
    h, root = site
    head, body = get(h, b"GET / HTTP/1.0\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK\r\n") and body == b"<p>home</p>\n<EOF>"
    assert "\r\nContent-Type: text/html\r\nContent-Length: 12\r\nLast-Modified: " in head
    assert re.search(r'\r\nConnection: close\r\nETag: "[0-9a-f]+-c"\r\nAccept-Ranges: bytes\Z', head)
    head, body = get(h, b"GET /app.js HTTP/1.0\r\n\r\n")
    assert "Content-Type: application/javascript" in head


def test_large_file_goes_whole(site):
    h, root = site
    head, body = get(h, b"GET /data.bin HTTP/1.0\r\n\r\n")
    assert body[:-5] == (root / "data.bin").read_bytes()
    assert "Content-Type: text/plain" in head


def test_head_and_not_modified(site):
    h, root = site
    head, body = get(h, b"HEAD /app.js HTTP/1.0\r\n\r\n")
    assert "Content-Length: 11" in head and body == b"<EOF>"
    lm = formatdate(int(os.stat(root / "app.js").st_mtime), usegmt=True)
    head, body = get(h, b"GET /app.js HTTP/1.0\r\nIf-Modified-Since: %s\r\n\r\n" % lm.encode())
    assert head.startswith("HTTP/1.1 304 Not Modified\r\n") and "Content-Length" not in head
    assert body == b"<EOF>"
    head, _ = get(h, b"GET /app.js HTTP/1.0\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK\r\n")


def test_errors(site):
    h, root = site
    assert get(h, b"GET /nope HTTP/1.0\r\n\r\n")[0].startswith("HTTP/1.1 404 Not Found")
    assert get(h, b"GET /empty/ HTTP/1.0\r\n\r\n")[0].startswith("HTTP/1.1 403 Forbidden")
    head, _ = get(h, b"GET /sub?a=1 HTTP/1.0\r\nHost: example.com\r\n\r\n")
    assert head.startswith("HTTP/1.1 301 Moved Permanently") and "\r\nLocation: http://example.com:" in head
    assert re.search(r"Location: http://example\.com:\d+/sub/\?a=1", head)
    assert get(h, b"POST /app.js HTTP/1.0\r\nContent-Length: 0\r\n\r\n")[0].startswith("HTTP/1.1 405")
    assert 'open() "%s/nope" failed (2: No such file or directory)' % root in h.sink.text()
    assert 'directory index of "%s/empty/" is forbidden' % root in h.sink.text()


@pytest.mark.parametrize("target", [b"/../secret.txt", b"/%2e%2e/secret.txt", b"/sub/../../secret.txt",
                                    b"/sub/%2E%2E/%2e%2E/secret.txt"])
def test_no_escape_outside_root(site, target):
    h, _ = site
    head, body = get(h, b"GET %s HTTP/1.0\r\n\r\n" % target)
    assert head.startswith("HTTP/1.1 400 Bad Request") and b"secret" not in body


def test_content_type_map():
    loc = LocationConf(types=MIME_TYPES, default_type="application/octet-stream")
    assert content_type(loc, "/a/b.HTML") == "text/html"
    assert content_type(loc, "/a.b/c") == "application/octet-stream"
    assert content_type(loc, "/x.css") == "text/css"
    assert content_type(loc, "/x.wasm") == "application/wasm"


def test_name_too_long_is_404(site):
    h, root = site
    head, _ = get(h, b"GET /" + b"a" * 300 + b" HTTP/1.0\r\n\r\n")
    assert head.startswith("HTTP/1.1 404 Not Found")
    assert "(36: File name too long)" in h.sink.text()
