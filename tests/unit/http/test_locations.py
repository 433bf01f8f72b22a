"""Server and location selection, table-driven.

The expectations were checked once against real nginx 1.22 with the same
configuration (``SERVERS`` below, every answer a ``return 200 "name"``); see
``check_against_nginx`` at the bottom for the script that did it.
"""

import pytest

from ngxws.core.cycle import Cycle
from ngxws.http.locations import LocationTree, VirtualServers, normalize_host
from ngxws.http.request import HttpParser
from ngxws.modules import MODULES

SERVERS = r"""
server { listen 127.0.0.1:PORT; server_name first.test; return 200 "s-first"; }
server { listen 127.0.0.1:PORT; server_name exact.test www.exact.test; return 200 "s-exact"; }
server { listen 127.0.0.1:PORT; server_name *.wild.test; return 200 "s-head"; }
server { listen 127.0.0.1:PORT; server_name *.deep.wild.test; return 200 "s-head-long"; }
server { listen 127.0.0.1:PORT; server_name www.tail.*; return 200 "s-tail"; }
server { listen 127.0.0.1:PORT; server_name .dot.test; return 200 "s-dot"; }
server { listen 127.0.0.1:PORT; server_name ~^api\d+\.rx\.test$; return 200 "s-regex"; }
server {
    listen 127.0.0.1:PORT default_server;
    server_name loc.test;
    location = / { return 200 "exact-root"; }
    location / { return 200 "prefix-root"; }
    location /docs/ { return 200 "docs"; }
    location /docs/api/ { return 200 "docs-api"; }
    location ^~ /static/ { return 200 "static-noregex"; }
    location ~ \.php$ { return 200 "regex-php"; }
    location ~* \.(png|jpg)$ { return 200 "regex-img-ci"; }
    location ~ ^/docs/.*\.txt$ { return 200 "regex-docs-txt"; }
    location = /exact { return 200 "exact"; }
    location /exact { return 200 "prefix-exact"; }
    location /nest/ {
        location /nest/inner/ { return 200 "nest-inner"; }
        location ~ \.html$ { return 200 "nest-regex-html"; }
        return 200 "nest";
    }
    location ^~ /nr/ {
        location ~ \.php$ { return 200 "nr-nested-php"; }
        return 200 "nr";
    }
    location /a { return 200 "a"; }
    location /ab { return 200 "ab"; }
    location ~ /ab[c]$ { return 200 "regex-abc"; }
    location @named { return 200 "named"; }
    location ~ ^/order { return 200 "order-1"; }
    location ~ ^/ord { return 200 "order-2"; }
}
"""

# (Host header or None, request target, expected answer)
CASES = [
    # locations (Host: loc.test)
    ("loc.test", "/", "exact-root"),
    ("loc.test", "/x", "prefix-root"),
    ("loc.test", "/docs/", "docs"),
    ("loc.test", "/docs/x", "docs"),
    ("loc.test", "/docs/api/x", "docs-api"),
    ("loc.test", "/docs/api/readme.txt", "regex-docs-txt"),
    ("loc.test", "/docs/readme.txt", "regex-docs-txt"),
    ("loc.test", "/static/a.php", "static-noregex"),
    ("loc.test", "/static/a.png", "static-noregex"),
    ("loc.test", "/x.php", "regex-php"),
    ("loc.test", "/docs/api/x.php", "regex-php"),
    ("loc.test", "/IMG.PNG", "regex-img-ci"),
    ("loc.test", "/img.png", "regex-img-ci"),
    ("loc.test", "/img.PHP", "prefix-root"),
    ("loc.test", "/exact", "exact"),
    ("loc.test", "/exact/", "prefix-exact"),
    ("loc.test", "/exactly", "prefix-exact"),
    ("loc.test", "/nest/", "nest"),
    ("loc.test", "/nest/inner/x", "nest-inner"),
    ("loc.test", "/nest/a.html", "nest-regex-html"),
    ("loc.test", "/nest/inner/a.html", "nest-regex-html"),
    ("loc.test", "/nest/a.php", "regex-php"),
    ("loc.test", "/nr/a.php", "nr-nested-php"),
    ("loc.test", "/nr/a.png", "nr"),
    ("loc.test", "/a", "a"),
    ("loc.test", "/ab", "ab"),
    ("loc.test", "/abc", "regex-abc"),
    ("loc.test", "/abd", "ab"),
    ("loc.test", "/order", "order-1"),
    ("loc.test", "/ordinal", "order-2"),
    ("loc.test", "/@named", "prefix-root"),
    ("loc.test", "/NEST/", "prefix-root"),
    ("loc.test", "/%64ocs/x", "docs"),
    ("loc.test", "/docs/../x.php", "regex-php"),
    ("loc.test", "/docs//api/x", "docs-api"),
    ("loc.test", "/docs/./api/x?y=1", "docs-api"),
    # servers
    ("exact.test", "/", "s-exact"),
    ("www.exact.test", "/", "s-exact"),
    ("EXACT.TEST", "/", "s-exact"),
    ("exact.test.", "/", "s-exact"),
    ("exact.test:8080", "/", "s-exact"),
    ("first.test", "/", "s-first"),
    ("a.wild.test", "/", "s-head"),
    ("a.b.wild.test", "/", "s-head"),
    ("x.deep.wild.test", "/", "s-head-long"),
    ("wild.test", "/srv", "prefix-root"),
    ("www.tail.com", "/", "s-tail"),
    ("www.tail.co.uk", "/", "s-tail"),
    ("tail.com", "/srv", "prefix-root"),
    ("dot.test", "/", "s-dot"),
    ("a.dot.test", "/", "s-dot"),
    ("api12.rx.test", "/", "s-regex"),
    ("api.rx.test", "/srv", "prefix-root"),
    ("unknown.test", "/srv", "prefix-root"),
    (None, "/srv", "prefix-root"),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("loc")
    conf = d / "nginx.conf"
    (d / "logs").mkdir()
    conf.write_text("user root; events {}\nhttp {\naccess_log off;\n%s\n}\n" % SERVERS.replace("PORT", "8080"))
    cycle = Cycle.build(str(d) + "/", str(conf), MODULES, test_only=True)
    tables = cycle.conf("http").http.listen_tables
    assert len(tables) == 1
    return tables[0][1].single


def answer(vs, host, target):
    p = HttpParser()
    if host is None:
        p.feed(b"GET %s HTTP/1.0\r\n\r\n" % target.encode())
    else:
        p.feed(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), host.encode()))
    head = p.next_head()
    srv = vs.find(normalize_host(head.host) if head.host else None)
    if srv.loc.return_ is not None:
        return srv.loc.return_[1].decode()
    loc, _ = srv.locations.find(head.uri)
    loc = loc or srv.loc
    return loc.return_[1].decode()


@pytest.mark.parametrize("host,target,expected", CASES)
def test_selection_matches_nginx(servers, host, target, expected):
    assert answer(servers, host, target) == expected


def test_table_is_big_enough():
    assert len(CASES) >= 30


def test_tree_duplicate_and_named():
    t = LocationTree()
    t.add("", "/a", "A")
    with pytest.raises(ValueError, match='duplicate location "/a"'):
        t.add("", "/a", "B")
    t.add("@", "@x", "X")
    assert t.find("@x") == (None, None)
    assert t.named["@x"] == "X"


def test_wildcard_longest_wins_regardless_of_order():
    vs = VirtualServers()
    vs.add_server("short", ["*.example.com"])
    vs.add_server("long", ["*.a.example.com"])
    assert vs.find("x.a.example.com") == "long"
    assert vs.find("x.b.example.com") == "short"
    assert vs.find("example.com") == "short"   # the first server is the default


@pytest.mark.parametrize("raw,norm", [
    ("Example.COM", "example.com"), ("a.b:80", "a.b"), ("[::1]:8080", "[::1]"), ("a.", "a"),
    ("a/b", None), ("a..b", None), ("a b", None), ("", None),
])
def test_normalize_host(raw, norm):
    assert normalize_host(raw) == norm


def check_against_nginx(port=18090):   # pragma: no cover - run by hand with nginx installed
    """python -c 'from tests.unit.http.test_locations import check_against_nginx as c; c()'"""
    import os
    import socket
    import subprocess
    import tempfile
    import time
    d = tempfile.mkdtemp()
    os.makedirs(d + "/logs")
    with open(d + "/nginx.conf", "w") as f:
        f.write("error_log logs/error.log; pid logs/nginx.pid; events {}\nhttp { access_log off;\n%s\n}\n"
                % SERVERS.replace("PORT", str(port)))
    proc = subprocess.Popen(["nginx", "-p", d + "/", "-c", d + "/nginx.conf", "-g", "daemon off;"])
    try:
        time.sleep(0.5)
        bad = 0
        for host, target, expected in CASES:
            s = socket.create_connection(("127.0.0.1", port))
            if host is None:
                s.sendall(b"GET %s HTTP/1.0\r\n\r\n" % target.encode())
            else:
                s.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                          % (target.encode(), host.encode()))
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            got = data.split(b"\r\n\r\n", 1)[1].decode()
            if got != expected:
                bad += 1
                print("MISMATCH", host, target, "nginx:", got, "table:", expected)
        print("%d cases, %d mismatches" % (len(CASES), bad))
    finally:
        proc.terminate()
        proc.wait()


def build(tmp_path, http):
    (tmp_path / "logs").mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text("user root; events {}\nhttp {\naccess_log off;\n%s\n}\n" % http)
    return Cycle.build(str(tmp_path) + "/", str(conf), MODULES, test_only=True)


@pytest.mark.parametrize("http,message", [
    ("server { listen 127.0.0.1:8080; listen 127.0.0.1:8080; }", "a duplicate listen 127.0.0.1:8080"),
    ("server { listen 127.0.0.1:8080 default_server; } server { listen 127.0.0.1:8080 default_server; }",
     "a duplicate default server for 127.0.0.1:8080"),
    ("server { listen 127.0.0.1:8080 backlog=10; } server { listen 127.0.0.1:8080 backlog=20; }",
     "duplicate listen options for 127.0.0.1:8080"),
    ("server { listen 127.0.0.1:99999; }", 'invalid port in "127.0.0.1:99999" of the "listen" directive'),
    ("server { listen 8080 foo; }", 'invalid parameter "foo"'),
    ("server { listen [::1:8080; }", 'invalid IPv6 address in "[::1:8080" of the "listen" directive'),
    ("server { location /a { location /b { } } }", 'location "/b" is outside location "/a"'),
    ("server { location = /a { location /a/b { } } }", 'location "/a/b" cannot be inside the exact location "/a"'),
    ("server { location /a { location @n { } } }", 'named location "@n" can be on the server level only'),
    ("server { location /a { } location /a { } }", 'duplicate location "/a"'),
    ("server { location ~ ( { } }", "pcre2_compile() failed"),
    ("server { location ! /a { } }", 'invalid location modifier "!"'),
    ("server { return 9999; }", 'invalid return code "9999"'),
    ("server { return /x; }", 'invalid return code "/x"'),
    ("server { add_header X 1 sometimes; }", 'invalid parameter "sometimes"'),
    ("server { allow 10.0.0.300; }", 'invalid parameter "10.0.0.300"'),
    ("server { server_name a*b; }", 'invalid server name or wildcard "a*b"'),
    ("large_client_header_buffers 0 8k;", 'invalid value "0"'),
    ("keepalive_timeout x;", '"keepalive_timeout" directive invalid value'),
    ("server { listen 8080; } location / { }", '"location" directive is not allowed here'),
])
def test_config_errors_in_nginx_words(tmp_path, http, message):
    from ngxws.core.directives import ConfigError
    with pytest.raises(ConfigError) as info:
        build(tmp_path, http)
    assert message in str(info.value)
    assert "nginx.conf:" in str(info.value)


def test_merge_inherits_http_to_location(tmp_path):
    cycle = build(tmp_path, """
        client_max_body_size 5k; server_tokens off; keepalive_timeout 10s 8s;
        server { listen 127.0.0.1:8080; client_header_timeout 7s;
                 location /a { client_max_body_size 1m; location /a/b { } }
                 location /c { add_header X 1; allow 127.0.0.1; deny all; } }
    """)
    srv = cycle.conf("http").http.servers[0]
    assert srv.client_header_timeout == 7000 and srv.large_client_header_buffers == (4, 8192)
    a, _ = srv.locations.find("/a")
    ab, _ = srv.locations.find("/a/b")
    c, _ = srv.locations.find("/c")
    assert (srv.loc.client_max_body_size, a.client_max_body_size, ab.client_max_body_size) == (5120, 1 << 20,
                                                                                             1 << 20)
    assert a.server_tokens is False and a.keepalive_timeout == 10000 and a.keepalive_header == 8
    assert a.root == str(tmp_path / "html") and a.index == ["index.html"]
    assert [h[0] for h in c.add_headers] == [b"X"] and a.add_headers == []
    assert [allow for _, allow in c.access] == [True, False] and a.access == []


def test_wildcard_and_specific_address_share_one_socket(tmp_path):
    cycle = build(tmp_path, """
        server { listen 8080; server_name any; return 200 "any"; }
        server { listen 127.0.0.1:8080; server_name lo; return 200 "lo"; }
        server { listen [::1]:8080; return 200 "v6"; }
    """)
    tables = cycle.conf("http").http.listen_tables
    assert sorted((opt.host, opt.port) for opt, _ in tables) == [("0.0.0.0", 8080), ("::1", 8080)]
    assert sorted(ls.addr_text for ls in cycle.listening) == ["0.0.0.0:8080", "[::1]:8080"]
    wild = [s for opt, s in tables if opt.host == "0.0.0.0"][0]

    class Conn:
        def __init__(self, local):
            self.local = local
    # connections to 127.0.0.1 are served by the servers that name it, as in nginx
    assert wild.lookup(Conn(("127.0.0.1", 8080))).default.names == ["lo"]
    assert wild.lookup(Conn(("10.1.2.3", 8080))).default.names == ["any"]


def test_plain_host_is_cached_and_bounded():
    from ngxws.http import locations
    for host, plain in (("127.0.0.1:9000", True), ("a.b-c.d", True), ("h.", True), ("a..b", False),
                        ("[::1]:80", False), ("-a", True), ("A.B", True), ("a b", False), ("", False)):
        for _ in range(2):      # the second answer from the cache
            assert locations.plain_host(host) is plain, host
            assert (locations.PLAIN_HOST.match(host) is not None) is plain
    for i in range(locations._PLAIN_HOSTS_MAX * 2 + 5):
        assert locations.plain_host("h%d" % i)
        assert len(locations._PLAIN_HOSTS) <= locations._PLAIN_HOSTS_MAX
