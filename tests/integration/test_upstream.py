"""websocket_pass end to end: the real ngxws, a real backend process, real WebSocket clients."""

import json
import os
import re
import select
import signal
import subprocess
import sys
import urllib.request

import pytest
import websocket  # websocket-client

from tests.helpers.server import ROOT, make_conf, wait_for

# A test backend: WebSocket-over-HTTP over stdlib http.server, threaded, keep-alive.  It records
# every request it gets (GET /stats returns them) and answers by path and message text.
BACKEND = r'''
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SEEN = []          # [(path, connection id, meta-user, [(name, content latin-1)])]
RELEASE = threading.Event()    # set by GET /release: answers to a TEXT "hold" wait for it


def parse(body):
    events, i = [], 0
    while i < len(body):
        j = body.index(b"\r\n", i)
        name, _, size = body[i:j].decode().partition(" ")
        content, i = None, j + 2
        if size:
            n = int(size, 16)
            content, i = body[i:i + n], i + n + 2
        events.append((name, content))
    return events


def event(name, content=None):
    if content is None:
        return name.encode() + b"\r\n"
    return b"%s %x\r\n%s\r\n" % (name.encode(), len(content), content)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/release":
            RELEASE.set()
        with LOCK:
            data = json.dumps(SEEN).encode()
        self.answer(200, data, "application/json")

    def do_POST(self):
        events = parse(self.rfile.read(int(self.headers["Content-Length"])))
        with LOCK:
            SEEN.append((self.path, self.headers.get("Connection-Id"), self.headers.get("Meta-User"),
                         self.headers.get("Push-Url"),
                         [(n, c.decode("latin-1") if c is not None else None) for n, c in events],
                         {k: self.headers.get(k) for k in ("X-Real-IP", "X-Secret", "X-Empty")}))
        if self.path.startswith("/slow"):
            time.sleep(2)
        if ("TEXT", b"hold") in events:
            RELEASE.wait(60)
        out, headers = b"", {}
        for name, content in events:
            if name == "OPEN":
                cookie = self.headers.get("Cookie", "")
                if "user=" not in cookie:
                    return self.answer(403, b"no user\n", "text/plain")
                user = cookie.split("user=", 1)[1].split(";")[0]
                headers["Set-Meta-User"] = user
                headers["X-Backend"] = "yes"
                if "chat" in self.headers.get("Sec-WebSocket-Protocol", ""):
                    headers["Sec-WebSocket-Protocol"] = "chat"
                out += event("OPEN") + event("TEXT", b"welcome " + user.encode())
            elif name == "TEXT":
                if content == b"who":
                    out += event("TEXT", (self.headers.get("Meta-User") or "-").encode())
                elif content == b"bye":
                    out += event("CLOSE", (4001).to_bytes(2, "big") + b"bye")
                else:
                    out += event("TEXT", b"echo:" + content)
            elif name == "BINARY":
                out += event("BINARY", content[::-1])
        self.answer(200, out, "application/websocket-events", headers)

    def answer(self, status, body, ctype, headers={}):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
srv.serve_forever()
'''

# A backend written with gripcontrol's WebSocketContext, the way Pushpin's examples and django-grip
# build their answers: OPEN when accepted, the context's out events ("m:"-prefixed messages), CLOSE,
# the grip extension and Set-Meta-* for changed metadata.
GRIP_BACKEND = r'''
import os, struct, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from gripcontrol import (WebSocketContext, WebSocketEvent, decode_websocket_events,
                         encode_websocket_events)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        meta = {k[5:].lower(): v for k, v in self.headers.items() if k.lower().startswith("meta-")}
        ctx = WebSocketContext(self.headers["Connection-Id"], meta, decode_websocket_events(body))
        if ctx.is_opening():
            ctx.accept()
            ctx.meta["user"] = "grip-user"
            ctx.send("welcome")
        while ctx.can_recv():
            try:
                message = ctx.recv()
            except IOError:
                break
            if message is None:
                ctx.close(ctx.close_code)
                break
            if message == "quit":
                ctx.close(4000)
                break
            ctx.send("%s: %s" % (ctx.meta.get("user"), message))
        events = [WebSocketEvent("OPEN")] if ctx.accepted else []
        events += ctx.out_events
        if ctx.closed:
            events.append(WebSocketEvent("CLOSE", struct.pack(">H", ctx.out_close_code or 1000)))
        out = encode_websocket_events(events)
        self.send_response(200)
        self.send_header("Content-Type", "application/websocket-events")
        if ctx.accepted:
            self.send_header("Sec-WebSocket-Extensions", "grip")
        for k, v in ctx.meta.items():
            if ctx.orig_meta.get(k) != v:
                self.send_header("Set-Meta-" + k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
srv.serve_forever()
'''

# Runs the example backend of README.md (its first python block) unchanged, on an ephemeral port.
DOC_RUNNER = r'''
import os, re, sys
text = open(sys.argv[1]).read()
code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
ns = {"__name__": "backend"}
exec(compile(code, "backend.py", "exec"), ns)
srv = ns["ThreadingHTTPServer"](("127.0.0.1", 0), ns["Handler"])
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
srv.serve_forever()
'''


class Backend:
    def __init__(self, tmp_path, script, *args):
        path = tmp_path / ("backend%d.py" % id(self))
        path.write_text(script)
        self.port_file = str(tmp_path / ("backend%d.port" % id(self)))
        self.proc = subprocess.Popen([sys.executable, str(path), *args, self.port_file],
                                     stdin=subprocess.DEVNULL)
        self.port = int(wait_for(lambda: os.path.exists(self.port_file) and open(self.port_file).read(),
                                 10, what="backend port"))

    def seen(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % self.port, timeout=5) as r:
            return json.load(r)

    def release(self):
        """Let the answers to TEXT "hold" go (BACKEND only)."""
        with urllib.request.urlopen("http://127.0.0.1:%d/release" % self.port, timeout=5) as r:
            r.read()

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture
def backends(tmp_path):
    started = []

    def start(script=BACKEND, *args):
        b = Backend(tmp_path, script, *args)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def gateway(ngxws_server, backend_port, extra=""):
    return ngxws_server(http="""
    server {
        listen 127.0.0.1:0;
        location /ws {
            websocket;
            websocket_pass http://127.0.0.1:%(port)d/events;
            websocket_pass_connect_timeout 1s;
            websocket_pass_read_timeout 5s;
            %(extra)s
        }
        location /slow {
            websocket;
            websocket_pass http://127.0.0.1:%(port)d/slow;
            websocket_pass_queue_size 4k;
        }
        location /echo {
            websocket;
        }
    }
    """ % {"port": backend_port, "extra": extra}, workers=1)


def connect(port, path="/ws", cookie="user=alice", **kw):
    ws = websocket.create_connection("ws://127.0.0.1:%d%s" % (port, path), cookie=cookie, timeout=10, **kw)
    push_url = ws.recv()
    assert re.match(r"http://[-\w]+@", push_url), push_url
    return ws, push_url


def close_frame(ws):
    """Read until the server's close frame; return (code, reason)."""
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big"), data[2:].decode()


def run_t(tmp_path, location_body):
    conf = tmp_path / "t.conf"
    conf.write_text(make_conf(str(tmp_path), http="server { listen 127.0.0.1:0; location /ws { %s } }"
                              % location_body))
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "ngxws", "-p", str(tmp_path) + "/", "-c", str(conf), "-t"],
                       env=env, capture_output=True, text=True, timeout=30)
    return r, str(conf)


@pytest.mark.parametrize("body, message", [
    ("websocket_pass ftp://x/;", 'invalid URL prefix in "ftp://x/"'),
    ("websocket_pass http://127.0.0.1:99999/;", 'invalid port in upstream "127.0.0.1:99999/"'),
    ("websocket_pass http://[::1/;", 'invalid IPv6 address in upstream "[::1/"'),
    ("websocket_pass http://127.0.0.1:1/; websocket_pass http://127.0.0.1:2/;",
     '"websocket_pass" directive is duplicate'),
    ("websocket_pass_connect_timeout 5x;", '"websocket_pass_connect_timeout" directive invalid value'),
    ("websocket_pass_keepalive -1;", '"websocket_pass_keepalive" directive invalid'),
    ("websocket_pass_queue_size 0;", '"websocket_pass_queue_size" directive invalid value'),
    ("websocket_pass_header X-A;", 'invalid number of arguments in "websocket_pass_header" directive'),
    ('websocket_pass_header "X A" b;', 'invalid header "X A" in "websocket_pass_header" directive'),
    ("websocket_pass_header X-A $no_such_variable;", 'unknown "no_such_variable" variable'),
])
def test_config_errors(tmp_path, body, message):
    r, conf = run_t(tmp_path, body)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert message in r.stderr.splitlines()[0], r.stderr
    assert conf + ":" in r.stderr.splitlines()[0]


def test_config_ok(tmp_path):
    r, _ = run_t(tmp_path, "websocket_pass http://[::1]:8000/events; websocket_pass_keepalive 4; "
                           "websocket_pass_header X-Secret s3; websocket_pass_header X-Other o; "
                           "websocket_pass_connect_timeout 2s; websocket_pass_read_timeout 1m; "
                           "websocket_pass_queue_size 1m;")
    assert r.returncode == 0, r.stderr
    r, _ = run_t(tmp_path, "websocket_pass unix:/tmp/ngxws-test-none.sock:/ev;")
    assert r.returncode == 0, r.stderr


def test_open_accepted_with_backend_headers(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port, "websocket_pass_header X-Real-IP $remote_addr; "
                                        "websocket_pass_header X-Secret s3; "
                                        "websocket_pass_header X-Empty $http_x_nothing;")
    ws, push_url = connect(srv.port(), subprotocols=["superchat", "chat"])
    assert ws.recv() == "welcome alice"
    assert ws.getsubprotocol() == "chat"
    assert ws.getheaders().get("x-backend") == "yes"
    assert "set-meta-user" not in ws.getheaders()
    ws.close()
    opened = [s for s in b.seen() if s[4][:1] == [["OPEN", None]]]
    assert opened and opened[0][0] == "/events"
    assert opened[0][3] == push_url, "the backend learns the client's push URL at OPEN"
    assert opened[0][1] == push_url.split("//")[1].split("@")[0], "Connection-Id is the session id"
    assert opened[0][5] == {"X-Real-IP": "127.0.0.1", "X-Secret": "s3", "X-Empty": None}


def test_open_refused_403(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), timeout=10)
    assert exc.value.status_code == 403
    assert b"no user" in (exc.value.resp_body or b"")
    # the worker goes on serving
    ws, _ = connect(srv.port())
    assert ws.recv() == "welcome alice"
    ws.close()


def test_set_meta_round_trip_and_client_meta_not_relayed(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, _ = connect(srv.port(), header=["Meta-User: mallory"])
    assert ws.recv() == "welcome alice"
    ws.send("who")
    assert ws.recv() == "alice"
    ws.close()
    # the OPEN request carried no Meta-User although the client sent one
    assert [s[2] for s in b.seen() if s[4][:1] == [["OPEN", None]]] == [None]


def test_reply_events_reach_the_client(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, _ = connect(srv.port())
    assert ws.recv() == "welcome alice"
    ws.send("hi")
    assert ws.recv() == "echo:hi"
    ws.send_binary(b"\x01\x02\x03")
    assert ws.recv() == b"\x03\x02\x01"
    ws.send("bye")
    assert close_frame(ws) == (4001, "bye")


def test_burst_of_1000_in_order_and_batched(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, push_url = connect(srv.port())
    assert ws.recv() == "welcome alice"
    for i in range(1000):
        ws.send("m%d" % i)
    got = [ws.recv() for _ in range(1000)]
    assert got == ["echo:m%d" % i for i in range(1000)]
    ws.close()
    cid = push_url.split("//")[1].split("@")[0]
    requests = [s for s in b.seen() if s[1] == cid and any(e[0] == "TEXT" for e in s[4])]
    texts = [e[1] for s in requests for e in s[4] if e[0] == "TEXT"]
    assert texts == ["m%d" % i for i in range(1000)]
    assert len(requests) < 1000, "messages that arrive during a request are batched"


def test_close_forwarded_with_its_code(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, push_url = connect(srv.port())
    assert ws.recv() == "welcome alice"
    ws.close(status=4003, reason=b"gone")
    cid = push_url.split("//")[1].split("@")[0]
    wait_for(lambda: any(s[1] == cid and ["CLOSE", "\x0f\xa3gone"] in s[4] for s in b.seen()), 10,
             what="CLOSE 4003 at the backend")


def test_unclean_leave_sends_disconnect(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, push_url = connect(srv.port())
    assert ws.recv() == "welcome alice"
    ws.sock.close()
    cid = push_url.split("//")[1].split("@")[0]
    wait_for(lambda: any(s[1] == cid and ["DISCONNECT", None] in s[4] for s in b.seen()), 10,
             what="DISCONNECT at the backend")


def test_backend_down_closes_1011_and_worker_keeps_serving(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, _ = connect(srv.port())
    assert ws.recv() == "welcome alice"
    b.stop()
    ws.send("anyone?")
    assert close_frame(ws)[0] == 1011
    srv.wait_log(r"\[error\] .*websocket upstream failed: .*upstream: \"http://127\.0\.0\.1:%d/events\""
                 % b.port)
    # a new handshake is refused with 502, and the echo location still works
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), cookie="user=bob", timeout=10)
    assert exc.value.status_code == 502
    echo, _ = connect(srv.port(), "/echo")
    echo.send("still here")
    assert echo.recv() == "still here"
    echo.close()


def test_slow_backend_does_not_slow_other_clients(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    slow, _ = connect(srv.port(), "/slow")   # OPEN itself took 2 s
    assert slow.recv() == "welcome alice"
    echo, _ = connect(srv.port(), "/echo")
    slow.send("hold")
    # the backend has the message and holds its answer until released
    wait_for(lambda: any(s[0] == "/slow" and ["TEXT", "hold"] in s[4] for s in b.seen()), 10,
             what="the held request at the backend")
    # meanwhile the one worker serves its other clients (each recv bounded by the timeout)
    for i in range(50):
        echo.send("e%d" % i)
        assert echo.recv() == "e%d" % i
    assert select.select([slow.sock], [], [], 0)[0] == [], "the held answer came early"
    b.release()
    assert slow.recv() == "echo:hold"
    echo.close()
    slow.close()


def test_queue_overflow_closes_1008(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, _ = connect(srv.port(), "/slow")
    assert ws.recv() == "welcome alice"
    for i in range(20):
        ws.send("x" * 1000)
    assert close_frame(ws) == (1008, "upstream queue full")
    srv.wait_log(r"\[error\] .*websocket upstream queue over websocket_pass_queue_size 4096")


def test_docs_example_backend(ngxws_server, backends, tmp_path):
    b = backends(DOC_RUNNER, os.path.join(ROOT, "README.md"))
    srv = gateway(ngxws_server, b.port)
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection("ws://127.0.0.1:%d/ws" % srv.port(), timeout=10)
    assert exc.value.status_code == 403
    alice, _ = connect(srv.port(), cookie="session=secret-alice")
    assert alice.recv() == "hello alice"
    bob, _ = connect(srv.port(), cookie="session=secret-bob")
    assert bob.recv() == "hello bob"
    alice.send("@bob are you there?")
    assert alice.recv() == "alice said: @bob are you there?"
    assert bob.recv() == "alice: are you there?"
    alice.close()
    bob.close()


def test_gripcontrol_backend(ngxws_server, backends):
    pytest.importorskip("gripcontrol")
    b = backends(GRIP_BACKEND)
    srv = gateway(ngxws_server, b.port)
    ws, _ = connect(srv.port())
    assert ws.recv() == "welcome", "the GRIP message prefix is removed"
    ws.send("hi")
    assert ws.recv() == "grip-user: hi", "Set-Meta-User came back as Meta-User"
    ws.send("quit")
    assert close_frame(ws)[0] == 4000


def test_round_trips_through_a_backend_that_writes_head_and_body_apart(ngxws_server, backends):
    # http.server writes the head and the body of an answer in two send()s without TCP_NODELAY,
    # on one keep-alive connection: every answer comes back whole and in order. (Without quick
    # ACKs each took ~40 ms; tests/unit/http/test_client.py checks the TCP_QUICKACK, and
    # python -m bench.upstream shows the round trip.)
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, push_url = connect(srv.port())
    assert ws.recv() == "welcome alice"
    for i in range(21):
        ws.send("r%d" % i)
        assert ws.recv() == "echo:r%d" % i
    cid = push_url.split("//")[1].split("@")[0]
    texts = [c for s in b.seen() if s[1] == cid for n, c in s[4] if n == "TEXT"]
    assert texts == ["r%d" % i for i in range(21)]
    ws.close()


def test_client_ping_is_answered_and_forwarded(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, push_url = connect(srv.port())
    assert ws.recv() == "welcome alice"
    ws.ping("are you there")
    opcode, data = ws.recv_data(control_frame=True)
    assert (opcode, data) == (websocket.ABNF.OPCODE_PONG, b"are you there"), "ngxws answers it"
    cid = push_url.split("//")[1].split("@")[0]
    wait_for(lambda: any(s[1] == cid and ["PING", "are you there"] in s[4] for s in b.seen()), 10,
             what="PING at the backend")
    ws.close()


def test_quit_tells_the_backend(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    ws, push_url = connect(srv.port())
    assert ws.recv() == "welcome alice"
    srv.signal(signal.SIGQUIT)
    ws.settimeout(3)
    assert close_frame(ws)[0] == 1001
    ws.send_close(1001)
    cid = push_url.split("//")[1].split("@")[0]
    wait_for(lambda: any(s[1] == cid and s[4] and s[4][-1][0] == "CLOSE" for s in b.seen()), 10,
             what="CLOSE at the backend")
    srv.proc.wait(15)
    closes = [s[4][-1] for s in b.seen() if s[1] == cid and s[4][-1][0] == "CLOSE"]
    # one CLOSE, with code 1001 (the reason is the server's "server shutting down")
    assert len(closes) == 1 and closes[0][1][:2] == "\x03\xe9"


def test_unix_socket_backend(ngxws_server, backends, tmp_path):
    path = str(tmp_path / "backend.sock")
    script = BACKEND.replace('''srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)''', """
import socketserver
class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
srv = UnixServer(%r, Handler)
srv.server_address = ("unix", 0)""" % path)
    backends(script)
    srv = ngxws_server(http="""
    server {
        listen 127.0.0.1:0;
        location /ws {
            websocket;
            websocket_pass unix:%s:/over-unix;
        }
    }
    """ % path, workers=1)
    ws, _ = connect(srv.port())
    assert ws.recv() == "welcome alice"
    ws.send("via unix")
    assert ws.recv() == "echo:via unix"
    ws.close()


def test_reload_keeps_upstream_clients(ngxws_server, backends):
    b = backends()
    srv = gateway(ngxws_server, b.port)
    old = set(srv.wait_workers(1))
    ws, _ = connect(srv.port())
    assert ws.recv() == "welcome alice"
    srv.signal(signal.SIGHUP)
    wait_for(lambda: set(srv.workers()) - old, 15, what="a new worker")
    # the old worker keeps this client and its upstream; new clients go to the new worker
    ws.send("still there?")
    assert ws.recv() == "echo:still there?"
    fresh, _ = connect(srv.port(), cookie="user=bob")
    assert fresh.recv() == "welcome bob"
    fresh.send("new")
    assert fresh.recv() == "echo:new"
    fresh.close()
    ws.close()
