"""nginx parity: the directives real nginx configs carry, decided by real nginx.

Each check runs ``/usr/sbin/nginx`` and ngxws on the same config text: ``-t`` verdicts and
``[emerg]`` messages must be equal, and live servers must answer the same request alike.
"""

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import zlib

import pytest

from tests.helpers.server import ROOT, ROOT_USER_LINE, wait_for

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

_EMERG = re.compile(r"\[emerg\] (?:\d+#\d+: )?(.*)")


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _conf(prefix, http, main=""):
    return ("%s\nerror_log %s/error.log;\npid %s/run.pid;\n%s\nevents {}\nhttp {\n%s\n}\n"
            % (ROOT_USER_LINE, prefix, prefix, main, http))


def test_both(tmp_path, http, main=""):
    """(nginx's, ngxws's) ``-t`` outcome on the same config: (passed, first emerg message)."""
    out = []
    for name, cmd in (("nginx", [NGINX]), ("ngxws", [sys.executable, "-m", "ngxws"])):
        prefix = tmp_path / name
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "t.conf"
        conf.write_text(_conf(prefix, http, main).replace("{prefix}", str(prefix)))
        proc = subprocess.run([*cmd, "-t", "-p", str(prefix) + "/", "-c", str(conf)], capture_output=True,
                              text=True, timeout=30, env=_env(), cwd=str(prefix))
        m = _EMERG.search(proc.stderr)
        out.append((proc.returncode == 0, m.group(1).replace(str(prefix), "P") if m else None))
    return out


test_both.__test__ = False


ACCEPTED = [
    "client_body_temp_path /tmp/body;",
    "client_body_temp_path /tmp/body 1 2;",
    "client_body_temp_path /tmp/body 1 2 2;",
    "server_names_hash_bucket_size 64;",
    "server_names_hash_max_size 1024;",
    "connection_pool_size 512;",
    "request_pool_size 4k;",
    "types_hash_max_size 2048;",
    "types_hash_bucket_size 64;",
    "sendfile on;",
    "tcp_nopush on;",
    "tcp_nodelay off;",
    "open_file_cache off;",
    "open_file_cache max=1000 inactive=20s;",
    "open_file_cache_valid 30s;",
    "open_file_cache_min_uses 2;",
    "open_file_cache_errors on;",
]

REFUSED = [
    "client_body_temp_path /tmp/body 1 2 3 4;",
    "client_body_temp_path /tmp/body x;",
    "server_names_hash_bucket_size x;",
    "types_hash_max_size abc;",
    "connection_pool_size 100;",
    "connection_pool_size 257;",
    "request_pool_size 1x;",
    "sendfile maybe;",
    "tcp_nodelay;",
    "open_file_cache on;",
    "open_file_cache max=0;",
    "open_file_cache max=10 inactive=x;",
    "open_file_cache inactive=10s;",
    "open_file_cache_min_uses x;",
    "open_file_cache_valid x;",
    "open_file_cache_errors yes;",
]

SERVER = "server {\n listen 127.0.0.1:1;\n location / { %s return 200 ok; }\n}\n"


@needs_nginx
@pytest.mark.parametrize("line", ACCEPTED)
def test_tuning_directives_accepted_like_nginx(tmp_path, line):
    nginx, ngxws = test_both(tmp_path, line + "\n" + SERVER % "")
    assert nginx == (True, None)
    assert ngxws == nginx


@needs_nginx
@pytest.mark.parametrize("line", REFUSED)
def test_tuning_directives_refused_like_nginx(tmp_path, line):
    nginx, ngxws = test_both(tmp_path, line + "\n" + SERVER % "")
    assert nginx[0] is False and nginx[1]
    assert ngxws == nginx


@needs_nginx
def test_tuning_directives_contexts_like_nginx(tmp_path):
    # location level: sendfile and friends are allowed, the server-name hashes are not
    for line, ok in (("sendfile off; tcp_nopush off; tcp_nodelay on; open_file_cache off;", True),
                     ("server_names_hash_max_size 512;", False), ("connection_pool_size 512;", False)):
        nginx, ngxws = test_both(tmp_path, SERVER % line)
        assert nginx[0] is ok
        assert ngxws == nginx


def _peer_socket_option(pid, client):
    """TCP_NODELAY of the socket in process ``pid`` whose peer is ``client`` (pidfd_getfd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, pid, 0)            # pidfd_open
    if pidfd < 0:
        pytest.skip("pidfd_open: errno %d" % ctypes.get_errno())
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)   # pidfd_getfd
            if fd < 0:
                pytest.skip("pidfd_getfd: errno %d" % ctypes.get_errno())
            with socket.socket(fileno=fd) as s:
                try:
                    if s.type == socket.SOCK_STREAM and s.getpeername() == client:
                        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                except OSError:
                    pass
    finally:
        os.close(pidfd)
    raise AssertionError("no socket of %d is connected to %r" % (pid, client))


@pytest.mark.parametrize("value,expect", [("on", 1), ("off", 0), ("", 1)])
def test_tcp_nodelay_set_on_accepted_sockets(ngxws_server, value, expect):
    """The worker's side of a connection has TCP_NODELAY unless ``tcp_nodelay off``."""
    line = "tcp_nodelay %s;" % value if value else ""
    srv = ngxws_server(http="%s\nserver { listen 127.0.0.1:0; location / { return 200 ok; } }" % line)
    with socket.create_connection(("127.0.0.1", srv.port()), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 200 OK")
        (worker,) = srv.workers()
        assert bool(_peer_socket_option(worker, c.getsockname())) == bool(expect)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """Real nginx in a temp prefix on a free port, stopped by pid."""

    def __init__(self, tmp_path, http, main=""):
        self.prefix = tmp_path / "nginx-live"
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        self.http, self.main, self.proc = http, main, None

    def start(self):
        for _ in range(5):
            self.port = _free_port()
            conf = self.prefix / "nginx.conf"
            conf.write_text(_conf(self.prefix, self.http.replace("{port}", str(self.port)), self.main)
                            .replace("{prefix}", str(self.prefix)))
            self.proc = subprocess.Popen([NGINX, "-p", str(self.prefix) + "/", "-c", str(conf), "-g",
                                          "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def up():
                if self.proc.poll() is not None:
                    return "exited"
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return "up"
                except OSError:
                    return None
            if wait_for(up, 10, what="nginx up") == "up":
                return self
        pytest.fail("could not start nginx on a free port")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _get(port, target="/", headers=(), version="1.1"):
    """One request on its own connection: (status, {lower name: value}, body de-chunked)."""
    lines = ["GET %s HTTP/%s" % (target, version), "Host: x", "Connection: close", *headers]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for f in fields:
        name, _, value = f.partition(":")
        hdrs[name.strip().lower()] = value.strip()
    if hdrs.get("transfer-encoding") == "chunked":
        out = b""
        while True:
            size, _, rest = body.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out += rest[:n]
            body = rest[n + 2:]
        body = out
    return int(status_line.split()[1]), hdrs, body


def _both(ngxws_server, tmp_path, server, requests, http_main="", files=None):
    """Answers of nginx and ngxws to the same requests on the same http block."""
    site = tmp_path / "site"
    site.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        (site / name).write_bytes(data)
    http = (http_main + "\n" + server).replace("{site}", str(site))
    srv = ngxws_server(http=http.replace("{port}", "0"))
    ours = [_get(srv.port(), *req) for req in requests]
    ng = Nginx(tmp_path, "access_log off;\n" + http).start()
    try:
        theirs = [_get(ng.port, *req) for req in requests]
    finally:
        ng.stop()
    return ours, theirs


GZIP_SERVER = """server {
    listen 127.0.0.1:{port};
    gzip on;
    gzip_types text/plain application/json;
    gzip_min_length 100;
    gzip_vary on;
    gzip_comp_level 6;
    location = /long { default_type text/plain; return 200 "%s"; }
    location = /short { default_type text/plain; return 200 "short"; }
    location = /css { default_type text/css; return 200 "%s"; }
    location = /proxied { gzip_proxied any; default_type text/plain; return 200 "%s"; }
    location / { root {site}; }
}""" % (("x" * 300,) * 3)

MATTER = ("content-encoding", "vary", "content-type", "etag", "accept-ranges", "last-modified")


def _normal(answer):
    status, hdrs, body = answer
    if hdrs.get("content-encoding") == "gzip":
        body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
    body = re.sub(rb"<center>(ngxws|nginx)/[0-9.]+</center>", b"<center>SERVER</center>", body)
    return status, {k: hdrs.get(k) for k in MATTER}, body


@needs_nginx
def test_gzip_like_nginx(ngxws_server, tmp_path):
    gz = ("Accept-Encoding: gzip, deflate",)
    requests = [("/long", gz), ("/long", ()), ("/long", ("Accept-Encoding: gzip;q=0",)),
                ("/long", ("Accept-Encoding: deflate, GZIP",)), ("/short", gz), ("/css", gz),
                ("/long", gz + ("Via: 1.1 proxy",)), ("/proxied", gz + ("Via: 1.1 proxy",)),
                ("/long", gz, "1.0"), ("/page.html", gz), ("/page.html", ()), ("/data.json", gz),
                ("/missing", gz)]
    ours, theirs = _both(ngxws_server, tmp_path, GZIP_SERVER, requests,
                         http_main="include %s;" % os.path.join(ROOT, "conf", "mime.types"),
                         files={"page.html": b"<p>" + b"hello " * 200 + b"</p>",
                                "data.json": b'{"k": "%s"}' % (b"v" * 500)})
    for req, a, b in zip(requests, ours, theirs):
        assert a[1].get("content-encoding") == b[1].get("content-encoding"), req
        assert a[1].get("transfer-encoding") == b[1].get("transfer-encoding"), req
        assert _normal(a) == _normal(b), req
    # the compressed ones really are compressed
    assert ours[0][1]["content-encoding"] == "gzip" and len(ours[0][2]) < 300


@needs_nginx
@pytest.mark.parametrize("line", ["gzip on;", "gzip_comp_level 10;", "gzip_comp_level x;", "gzip_proxied foo;",
                                  "gzip_proxied off any;", "gzip_min_length x;", "gzip_http_version 2.0;",
                                  "gzip_http_version 1.0;", "gzip_buffers 16 8k;", "gzip_buffers 16 x;",
                                  "gzip_types *;", "gzip_vary x;", "gzip_disable msie6;"])
def test_gzip_directives_checked_like_nginx(tmp_path, line):
    nginx, ngxws = test_both(tmp_path, line + "\n" + SERVER % "")
    assert ngxws == nginx


@needs_nginx
def test_mime_types_shipped_like_nginx(ngxws_server, tmp_path):
    """``include mime.types`` with ngxws's own table gives the types nginx's table gives."""
    mime = os.path.join(ROOT, "conf", "mime.types")
    exts = ["html", "css", "js", "json", "png", "jpg", "svg", "woff2", "pdf", "zip", "mp4", "webm",
            "txt", "xml", "wasm", "ico", "gif", "webp", "mp3", "unknownext"]
    server = ("include %s;\ndefault_type application/octet-stream;\n"
              "server { listen 127.0.0.1:{port}; location / { root {site}; } }" % mime)
    ours, theirs = _both(ngxws_server, tmp_path, server, [("/f." + e,) for e in exts],
                         files={"f." + e: b"data" for e in exts})
    for e, a, b in zip(exts, ours, theirs):
        assert a[0] == b[0] == 200
        assert a[1]["content-type"] == b[1]["content-type"], e
    if os.path.exists("/etc/nginx/mime.types"):
        debian = ("include /etc/nginx/mime.types;\ndefault_type application/octet-stream;\n"
                  "server { listen 127.0.0.1:{port}; location / { root {site}; } }")
        _, deb = _both(ngxws_server, tmp_path / "deb", debian, [("/f." + e,) for e in exts],
                       files={"f." + e: b"data" for e in exts})
        for e, a, b in zip(exts, ours, deb):
            assert a[1]["content-type"] == b[1]["content-type"], e


DEBIAN_CONF = """user {user};
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
include {prefix}/modules-enabled/*.conf;

events {
	worker_connections 768;
	# multi_accept on;
}

http {

	##
	# Basic Settings
	##

	sendfile on;
	tcp_nopush on;
	types_hash_max_size 2048;
	# server_tokens off;

	# server_names_hash_bucket_size 64;
	# server_name_in_redirect off;

	include {prefix}/mime.types;
	default_type application/octet-stream;

	##
	# Logging Settings
	##

	access_log {prefix}/logs/access.log;

	##
	# Gzip Settings
	##

	gzip on;

	# gzip_vary on;
	# gzip_proxied any;
	# gzip_comp_level 6;
	# gzip_buffers 16 8k;
	# gzip_http_version 1.1;
	# gzip_types text/plain text/css application/json application/javascript text/xml application/xml application/xml+rss text/javascript;

	##
	# Virtual Host Configs
	##

	include {prefix}/conf.d/*.conf;
	include {prefix}/sites-enabled/*;
}
"""

SITE_DEFAULT = """server {
	listen 127.0.0.1:%s default_server;

	root {prefix}/www;
	index index.html index.htm index.nginx-debian.html;

	server_name _;

	location / {
		try_files_placeholder
	}
%s}
"""


def _python_readable_by(user):
    import pwd
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return False
    path = os.path.dirname(os.path.realpath(sys.executable))
    while path != "/":
        st = os.stat(path)
        if st.st_uid != pw.pw_uid and not st.st_mode & 0o001:
            return False
        path = os.path.dirname(path)
    return True


def _debian_tree(prefix, ws=True, port="0"):
    for d in ("modules-enabled", "conf.d", "sites-enabled", "www", "logs"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.join(ROOT, "conf", "mime.types"), prefix / "mime.types")
    (prefix / "www" / "index.html").write_text("<h1>Welcome</h1>\n" * 10)
    ws_loc = "\n\tlocation /ws {\n\t\twebsocket;\n\t}\n" if ws else ""
    site = SITE_DEFAULT % (port, ws_loc)
    (prefix / "sites-enabled" / "default").write_text(site.replace("try_files_placeholder", "")
                                                       .replace("{prefix}", str(prefix)))
    # nginx needs a real user: Debian's www-data where Python can be read by it, else root
    user = "www-data" if os.geteuid() != 0 or _python_readable_by("www-data") else "root"
    conf = DEBIAN_CONF.replace("{user}", user).replace("{prefix}", str(prefix))
    (prefix / "nginx.conf").write_text(conf)
    return prefix / "nginx.conf"


@needs_nginx
def test_debian_default_conf_starts_unchanged(ngxws_server, tmp_path):
    """Debian's /etc/nginx/nginx.conf shape, its default site plus a websocket location."""
    import base64
    # nginx takes the same tree (without the websocket location, which it does not know)
    ngx_prefix = tmp_path / "nginx-debian"
    conf = _debian_tree(ngx_prefix, ws=False, port="8080")
    proc = subprocess.run([NGINX, "-t", "-p", str(ngx_prefix) + "/", "-c", str(conf)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr

    # Debian's error_log is at nginx's default level (error), which logs no "listening on"
    # notice: the test picks the port itself
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prefix = tmp_path / "debian"
    conf = _debian_tree(prefix, port=str(port))
    srv = ngxws_server(conf=conf.read_text(), start=False, prefix=prefix)
    srv.args = ["-g", "daemon off;"]
    srv.pid_path = str(prefix / "nginx.pid")
    srv.start()

    def accepts():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(accepts, 10, what="port %d accepting" % port)
    status, hdrs, body = _get(port, "/", ("Accept-Encoding: gzip",))
    assert status == 200
    assert hdrs["content-type"] == "text/html"
    assert hdrs["content-encoding"] == "gzip"
    assert zlib.decompress(body, 16 + zlib.MAX_WBITS) == b"<h1>Welcome</h1>\n" * 10
    # the websocket location upgrades
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk
            data += chunk
        assert data.startswith(b"HTTP/1.1 101 ")
    wait_for(lambda: os.path.exists(prefix / "logs" / "access.log")
             and b"GET / HTTP/1.1" in (prefix / "logs" / "access.log").read_bytes(), 10, what="access log")


def test_load_module_of_shared_object_refused(tmp_path):
    """Debian's modules-enabled/*.conf loads .so files: ngxws says it loads Python modules only."""
    prefix = tmp_path / "debian"
    conf = _debian_tree(prefix)
    (prefix / "modules-enabled" / "50-mod-nchan.conf").write_text(
        "load_module modules/ngx_nchan_module.so;\n")
    proc = subprocess.run([sys.executable, "-m", "ngxws", "-t", "-p", str(prefix) + "/", "-c", str(conf)],
                          capture_output=True, text=True, timeout=30, env=_env())
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        'ngxws: [emerg] load_module "modules/ngx_nchan_module.so": ngxws loads Python modules only, '
        'not shared objects: write "package.module:Class" in %s:1' % (prefix / "modules-enabled"
                                                                        / "50-mod-nchan.conf"))
    assert "Traceback" not in proc.stderr
