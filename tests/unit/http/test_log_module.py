"""The access log: formats, nginx's escaping, the directives and the buffers.

Expected lines are what nginx 1.22 wrote for the same requests (port and time
aside, which the fake request pins).
"""

import os
import re
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, strategies as st

from ngxws.core.directives import UNSET, ConfigError, Slot
from ngxws.http import log_module, variables
from ngxws.http.core_module import ServerConf
from ngxws.http.parser import Head
from ngxws.http.log_module import (COMBINED, LogBuffer, LogFormat, LogLocConf, escape_default, escape_json,
                                   log_request)

ALL_BYTES = bytes(b for b in range(1, 256) if b not in (10, 13))

# nginx 1.22, `log_format all '...|$http_x_foo'`, X-Foo carrying ALL_BYTES
NGINX_DEFAULT = (
    rb"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0B\x0C\x0E\x0F\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19"
    rb"\x1A\x1B\x1C\x1D\x1E\x1F !\x22#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\x5C]^_`"
    rb"abcdefghijklmnopqrstuvwxyz{|}~" + b"".join(b"\\x%02X" % b for b in range(0x7F, 0x100)))
# the same with escape=json
NGINX_JSON = (
    rb"\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\u000B\f\u000E\u000F\u0010\u0011\u0012\u0013"
    rb"\u0014\u0015\u0016\u0017\u0018\u0019\u001A\u001B\u001C\u001D\u001E\u001F !\"#$%&'()*+,-./"
    rb"0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
    + bytes(range(0x7F, 0x100)))


class FakeConn:
    peer = ("127.0.0.1", 34818)
    local = ("127.0.0.1", 55237)
    number = 2
    requests = 1


class FakeRequest:
    def __init__(self, **kw):
        self.method = "GET"
        self.target = "/r?x=1&b=2"
        self.uri = "/r"
        self.args = "x=1&b=2"
        self.http_version = b"1.1"
        self.headers = [(b"host", b"127.0.0.1:55237"), (b"user-agent", b"curl/7.88.1"),
                        (b"accept", b"*/*")]
        self.conn = FakeConn()
        self.srv_conf = None
        self.status = 200
        self.bytes_sent = 168
        self.body_bytes_sent = 20
        self.head = Head()
        self.head.length = 124
        self.start_time = 1795643967.889
        self.conf = None
        self.__dict__.update(kw)
        # the request line as read, as the parsers keep it in the Head
        self.head.request_line = "%s %s HTTP/%s" % (self.method, self.target,
                                                    self.http_version.decode())
        # the location: log_request asks it for the log module's conf once
        self.loc = SimpleNamespace(access_log=UNSET, module_conf=self.loc_conf)

    def loc_conf(self, module):
        assert module is log_module.module or module == "http_log"
        return self.conf


@pytest.fixture(autouse=True)
def utc_clock(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(variables, "clock", lambda: 1795643967.889)
    variables._time.sec = -1
    yield
    monkeypatch.undo()
    time.tzset()
    variables._time.sec = -1


# -- escaping and formats -----------------------------------------------------------

def test_default_escaping_is_nginx():
    assert escape_default(ALL_BYTES) == NGINX_DEFAULT
    assert escape_default(b"plain text") == b"plain text"


def test_json_escaping_is_nginx():
    assert escape_json(ALL_BYTES) == NGINX_JSON
    assert escape_json(b"\n\r") == b"\\n\\r"


@pytest.mark.parametrize("kw,line", [
    ({}, b'127.0.0.1 - - [25/Nov/2026:21:59:27 +0000] "GET /r?x=1&b=2 HTTP/1.1" 200 20 "-" "curl/7.88.1"\n'),
    # a request nginx refused after reading its line
    (dict(request_line="GET /a%20b?x=%22q\x7f HTTP/1.1", status=400, body_bytes_sent=157, headers=[]),
     b'127.0.0.1 - - [25/Nov/2026:21:59:27 +0000] "GET /a%20b?x=%22q\\x7F HTTP/1.1" 400 157 "-" "-"\n'),
    (dict(request_line="garbage", method="", target="", status=400, body_bytes_sent=157, headers=[]),
     b'127.0.0.1 - - [25/Nov/2026:21:59:27 +0000] "garbage" 400 157 "-" "-"\n'),
    (dict(method="GET", target="/", args="", status=204, body_bytes_sent=0,
          headers=[(b"authorization", b"Basic Ym9iOnB3"), (b"user-agent", b"curl/7.88.1")]),
     b'127.0.0.1 - bob [25/Nov/2026:21:59:27 +0000] "GET / HTTP/1.1" 204 0 "-" "curl/7.88.1"\n'),
    (dict(method="GET", target="/", args="", http_version=b"1.0", status=204, body_bytes_sent=0,
          headers=[]),
     b'127.0.0.1 - - [25/Nov/2026:21:59:27 +0000] "GET / HTTP/1.0" 204 0 "-" "-"\n'),
])
def test_combined_matches_nginx(kw, line):
    assert LogFormat("combined", COMBINED).render(FakeRequest(**kw)) == line


def test_escaped_header_in_combined():
    r = FakeRequest(headers=[(b"user-agent", b'a"b\\c\x01\xc3\xa9')])
    assert LogFormat("combined", COMBINED).render(r).endswith(b'"-" "a\\x22b\\x5Cc\\x01\\xC3\\xA9"\n')


def test_json_and_none_formats_log_missing_as_empty():
    r = FakeRequest(headers=[(b"x-foo", b'a"b\\c\x01\xc3\xa9')])
    j = LogFormat("j", "$request|$http_x_foo|$http_absent", escape="json")
    assert j.render(r) == b'GET /r?x=1&b=2 HTTP/1.1|a\\"b\\\\c\\u0001\xc3\xa9|\n'
    n = LogFormat("n", "$request|$http_x_foo|$http_absent", escape="none")
    assert n.render(r) == b'GET /r?x=1&b=2 HTTP/1.1|a"b\\c\x01\xc3\xa9|\n'


def test_found_but_empty_is_not_a_dash():
    assert LogFormat("x", "[$is_args][$args]").render(FakeRequest(args="")) == b"[][-]\n"


def test_config_text_is_utf8_wire_text_is_bytes():
    r = FakeRequest(srv_conf=ServerConf(names=["b\u00fccher.test"]))
    assert LogFormat("x", "\u00e9 $server_name").render(r) == b"\xc3\xa9 b\\xC3\\xBCcher.test\n"


@pytest.mark.parametrize("text,message", [
    ("a $- b", 'invalid parameter "$- b"'),
    ("a $", 'invalid parameter "$"'),
    ("a$$b", 'invalid parameter "$$b"'),
    ("a ${} b", 'invalid parameter "${} b"'),
    ("a ${x b", 'the closing bracket in "x" variable is missing'),
    ("a $1 b", 'unknown "1" variable'),
    ("$nope", 'unknown "nope" variable'),
])
def test_format_errors_in_nginx_words(text, message):
    with pytest.raises(ConfigError) as e:
        LogFormat("x", text)
    assert e.value.msg == message


# -- directives ---------------------------------------------------------------------

class Node:
    def __init__(self, *args):
        self.name = "x"
        self.args = list(args)
        self.file = "t.conf"
        self.line = 1
        self.children = None


class Confs:
    def __init__(self, main):
        self.main = main

    def get(self, name, slot):
        assert name == "http_log" and slot is Slot.MAIN
        return self.main


class FakeCycle:
    def __init__(self):
        self.open_files = {}

    def open_file(self, path):
        f = self.open_files.get(path)
        if f is None:
            f = self.open_files[path] = log_module._OwnFile(path)
        return f


class Cf:
    def __init__(self, prefix, cycle=None):
        self.prefix = str(prefix)
        self.cycle = cycle if cycle is not None else FakeCycle()
        self.main = log_module.module.create_http_main_conf(self)
        self.confs = Confs(self.main)

    def full_path(self, path):
        return os.path.join(self.prefix, path)


def directive(name):
    for d in log_module.HttpLogModule.DIRECTIVES:
        if d.name == name:
            return d.setter
    raise KeyError(name)


def log_format(cf, *args):
    directive("log_format")(cf, Node(*args), cf.main)


def access_log(cf, conf, *args):
    directive("access_log")(cf, Node(*args), conf)


@pytest.fixture
def cf(tmp_path):
    (tmp_path / "logs").mkdir()
    return Cf(tmp_path)


def test_log_format_directive(cf):
    log_format(cf, "x", "escape=json", "$uri ", "$status")
    assert cf.main.formats["x"].escape == "json"
    assert cf.main.formats["x"].render(FakeRequest()) == b"/r 200\n"
    log_format(cf, "empty", "escape=none")       # nginx accepts it too
    with pytest.raises(ConfigError, match='duplicate "log_format" name "combined"'):
        log_format(cf, "combined", "$uri")
    with pytest.raises(ConfigError, match='duplicate "log_format" name "x"'):
        log_format(cf, "x", "$uri")
    with pytest.raises(ConfigError, match='unknown log format escaping "zz"'):
        log_format(cf, "y", "escape=zz", "a")


@pytest.mark.parametrize("args,message", [
    (("logs/a.log", "foo"), 'unknown log format "foo"'),
    (("logs/a.log", "combined", "bogus"), 'invalid parameter "bogus"'),
    (("logs/a.log", "combined", "buffer=xx"), 'invalid buffer size "xx"'),
    (("logs/a.log", "combined", "buffer=0"), 'invalid buffer size "0"'),
    (("logs/a.log", "combined", "flush=1s"), 'no buffer is defined for access_log "logs/a.log"'),
    (("logs/a.log", "combined", "flush=zz", "buffer=1k"), 'invalid flush time "zz"'),
    (("off", "combined"), 'invalid parameter "combined"'),
    (("logs/a.log", "combined", "if=$nope"), 'unknown "nope" variable'),
    (("nodir/a.log",), 'open() "%s" failed (2: No such file or directory)'),
])
def test_access_log_errors_in_nginx_words(cf, args, message):
    if "%s" in message:
        message = message % cf.full_path(args[0])
    with pytest.raises(ConfigError) as e:
        access_log(cf, LogLocConf(), *args)
    assert e.value.msg == message


def test_same_path_conflicting_parameters(cf):
    access_log(cf, LogLocConf(), "logs/a.log", "combined", "buffer=4k")
    with pytest.raises(ConfigError, match='access_log "logs/a.log" already defined with conflicting'):
        access_log(cf, LogLocConf(), "logs/a.log", "combined")
    with pytest.raises(ConfigError, match="conflicting"):
        access_log(cf, LogLocConf(), "logs/a.log", "combined", "buffer=8k")
    # same parameters: one buffer, one file for both
    a, b = LogLocConf(), LogLocConf()
    access_log(cf, a, "logs/a.log", "combined", "buffer=4k", "flush=1s")
    access_log(cf, b, "logs/a.log", "combined", "buffer=4k")
    assert a.logs[0].buffer is b.logs[0].buffer
    assert len(cf.cycle.open_files) == 1


def test_merge_default_inherit_and_off(cf):
    m = log_module.module
    http, srv, loc, loc2 = (LogLocConf() for _ in range(4))
    m.merge_loc_conf(LogLocConf(), http)     # nginx merges the http level with nothing set
    assert [log.buffer.path for log in http.logs] == [cf.full_path("logs/access.log")]
    assert http.logs[0].format is cf.main.formats["combined"]
    access_log(cf, srv, "off")
    m.merge_loc_conf(http, srv)
    assert srv.off
    m.merge_loc_conf(srv, loc)
    assert loc.off                           # inherited
    access_log(cf, loc2, "logs/b.log")
    m.merge_loc_conf(srv, loc2)
    assert not loc2.off and len(loc2.logs) == 1


def test_default_log_opened_only_when_used(tmp_path):
    (tmp_path / "logs").mkdir()
    cf = Cf(tmp_path)
    conf = LogLocConf()
    access_log(cf, conf, "logs/b.log")
    log_module.module.merge_loc_conf(LogLocConf(), conf)
    assert sorted(os.listdir(tmp_path / "logs")) == ["b.log"]


def test_several_logs_and_condition(cf, tmp_path):
    log_format(cf, "short", "$status $uri")
    conf = LogLocConf()
    access_log(cf, conf, "logs/a.log")
    access_log(cf, conf, "logs/s.log", "short")
    access_log(cf, conf, "logs/c.log", "short", "if=$arg_log")
    log_module.module.merge_loc_conf(LogLocConf(), conf)
    log_request(FakeRequest(conf=conf))
    log_request(FakeRequest(conf=conf, args="log=1", target="/r?log=1"))
    log_request(FakeRequest(conf=conf, args="log=0", target="/r?log=0"))
    logs = tmp_path / "logs"
    assert (logs / "a.log").read_bytes().count(b"\n") == 3
    assert (logs / "s.log").read_bytes() == b"200 /r\n" * 3
    assert (logs / "c.log").read_bytes() == b"200 /r\n"


def test_off_logs_nothing(cf, tmp_path):
    conf = LogLocConf()
    access_log(cf, conf, "off")
    log_request(FakeRequest(conf=conf))
    assert not (tmp_path / "logs" / "access.log").exists()


# -- buffers ------------------------------------------------------------------------

class CountingFile:
    def __init__(self):
        self.writes = []
        self.reopened = 0

    def write(self, data):
        self.writes.append(bytes(data))

    def reopen(self):
        self.reopened += 1


class FakeLoop:
    def __init__(self):
        self.timers = {}

    def add_timer(self, ev, ms):
        ev.timer_set = True
        self.timers[ev] = ms

    def del_timer(self, ev):
        ev.timer_set = False
        self.timers.pop(ev, None)

    def fire(self):
        for ev in list(self.timers):
            self.del_timer(ev)
            ev.timedout = True
            ev.handler(ev)


def test_unbuffered_is_one_write_per_line():
    f = CountingFile()
    b = LogBuffer("p", f)
    b.attach(FakeLoop())
    b.write(b"one\n")
    b.write(b"two\n")
    assert f.writes == [b"one\n", b"two\n"]


def test_buffer_fills_then_writes_whole_lines():
    f = CountingFile()
    loop = FakeLoop()
    b = LogBuffer("p", f, size=10, flush_ms=1000)
    b.attach(loop)
    b.write(b"aaaa\n")
    assert f.writes == [] and loop.timers[b.event] == 1000
    b.write(b"bbbb\n")                  # exactly full
    assert f.writes == []
    b.write(b"cccc\n")                  # would not fit: the buffer goes first
    assert f.writes == [b"aaaa\nbbbb\n"]
    b.write(b"a line longer than the buffer\n")
    assert f.writes == [b"aaaa\nbbbb\n", b"cccc\n", b"a line longer than the buffer\n"]


def test_flush_timer_writes_what_is_pending():
    f = CountingFile()
    loop = FakeLoop()
    b = LogBuffer("p", f, size=4096, flush_ms=500)
    b.attach(loop)
    b.write(b"x\n")
    b.write(b"y\n")
    assert loop.timers == {b.event: 500}
    assert b.event.cancelable               # never holds up a graceful exit
    loop.fire()
    assert f.writes == [b"x\ny\n"]
    loop.fire()
    assert f.writes == [b"x\ny\n"]          # nothing pending, nothing written


def test_reopen_flushes_into_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "access.log")
    f = log_module._OwnFile(path)
    b = LogBuffer(path, f, size=4096, flush_ms=1000)
    b.attach(FakeLoop())
    monkeypatch.setattr(log_module, "_buffers", [b])
    b.write(b"before\n")
    os.rename(path, path + ".1")            # logrotate
    log_module.reopen()
    b.write(b"after\n")
    log_module.flush_all()
    assert (tmp_path / "access.log.1").read_bytes() == b"before\n"
    assert (tmp_path / "access.log").read_bytes() == b"after\n"
    f.close()


def test_init_process_attaches_this_cycles_buffers(tmp_path):
    (tmp_path / "logs").mkdir()
    cycle = FakeCycle()
    cf = Cf(tmp_path, cycle)
    access_log(cf, LogLocConf(), "logs/a.log", "combined", "buffer=1k")

    cycle.loop = FakeLoop()     # in the worker, after fork
    log_module.module.init_process(cycle)
    try:
        assert [b.path for b in log_module._buffers] == [cf.full_path("logs/a.log")]
        assert log_module._buffers[0].loop is cycle.loop
        log_module._buffers[0].write(b"line\n")
        log_module.module.exit_process(cycle)
        assert (tmp_path / "logs" / "a.log").read_bytes() == b"line\n"
    finally:
        log_module._buffers = []


# -- through the real parser ----------------------------------------------------------

def build(tmp_path, http):
    from ngxws.core.cycle import Cycle
    from ngxws.modules import MODULES
    (tmp_path / "logs").mkdir(exist_ok=True)
    conf = tmp_path / "ngxws.conf"
    conf.write_text("user root; events {}\nhttp {\n%s\n}\n" % http)
    return Cycle.build(str(tmp_path) + "/", str(conf), MODULES, test_only=True), str(conf)


def test_config_through_the_parser(tmp_path):
    from ngxws.http.stub_status import stub_status_handler
    cycle, _ = build(tmp_path, """
        log_format short '$status $uri';
        access_log logs/a.log short buffer=4k flush=2s;
        server {
            listen 127.0.0.1:0;
            location = /status { stub_status; }
            location /x { access_log off; return 200 "x"; }
            location /y { access_log logs/y.log; access_log logs/a.log short buffer=4k flush=2s; }
        }""")
    try:
        assert sorted(cycle.open_files) == [str(tmp_path / "logs" / "a.log"), str(tmp_path / "logs" / "y.log")]
        srv = cycle.confs.get("http", Slot.MAIN).http.servers[0]
        top = srv.loc.confs.get("http_log", Slot.LOC)
        assert [(log.buffer.size, log.buffer.flush_ms, log.format.name) for log in top.logs] == [(4096, 2000, "short")]
        locs = {loc.name: loc for loc in [p[2] for p in srv.locations.prefixes] + list(srv.locations.exact.values())}
        assert locs["/status"].handler is stub_status_handler
        assert locs["/status"].confs.get("http_log", Slot.LOC).logs == top.logs
        assert locs["/x"].confs.get("http_log", Slot.LOC).off
        y = locs["/y"].confs.get("http_log", Slot.LOC).logs
        assert [log.format.name for log in y] == ["combined", "short"]
        assert y[1].buffer is top.logs[0].buffer
    finally:
        cycle.close()


@pytest.mark.parametrize("http,message", [
    ("access_log logs/a.log nope;", 'unknown log format "nope" in %s:3'),
    ("server { location / { log_format x '$uri'; } }", '"log_format" directive is not allowed here in %s:3'),
    ("log_format x;", 'invalid number of arguments in "log_format" directive in %s:3'),
    ("server { stub_status on; stub_status; location / { stub_status x; } }", 'invalid parameter "x" in %s:3'),
    ("stub_status;", '"stub_status" directive is not allowed here in %s:3'),
])
def test_config_errors(tmp_path, http, message):
    with pytest.raises(ConfigError) as e:
        build(tmp_path, http)
    assert str(e.value) == message % (tmp_path / "ngxws.conf")


def test_a_getter_returning_unicode_takes_the_slow_path(monkeypatch):
    monkeypatch.setitem(variables.VARIABLES, "unicode_test", lambda r: 'caf\u00e9 \u263a"')
    r = FakeRequest()
    line = b'"caf\\xC3\\xA9 \\xE2\\x98\\xBA\\x22" 200\n'
    assert LogFormat("x", '"$unicode_test" $status').render(r) == line
    assert LogFormat("j", '"$unicode_test"', escape="json").render(r) == '"caf\u00e9 \u263a\\""\n'.encode()
    assert LogFormat("n", "$unicode_test", escape="none").render(r) == 'caf\u00e9 \u263a"\n'.encode()


# -- properties ---------------------------------------------------------------------



def _unescape(b):
    return re.sub(rb"\\x([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), b)


@given(st.binary())
def test_default_escaping_round_trips_and_leaves_only_printable_ascii(b):
    out = escape_default(b)
    assert all(0x20 <= c < 0x7F and c != 0x22 for c in out)
    assert _unescape(out) == b


@given(st.binary())
def test_rendered_value_equals_escaped_bytes(b):
    """The text path of render() escapes exactly as the bytes functions do."""
    r = FakeRequest(headers=[(b"x-v", b)])
    assert LogFormat("d", "$http_x_v").render(r) == (escape_default(b) if b else b"") + b"\n"
    assert LogFormat("j", "$http_x_v", escape="json").render(r) == escape_json(b) + b"\n"
    assert LogFormat("n", "$http_x_v", escape="none").render(r) == b + b"\n"


def test_decoded_uri_is_logged_as_the_bytes_sent():
    """$uri is decoded text (invalid UTF-8 kept as surrogates); its log value is the bytes."""
    r = FakeRequest(uri="/\u00e9\u2028\udcff\n", target="/%C3%A9%E2%80%A8%FF%0A")
    assert LogFormat("d", "$uri").render(r) == b"/\\xC3\\xA9\\xE2\\x80\\xA8\\xFF\\x0A\n"
    assert LogFormat("j", "$uri", escape="json").render(r) == b"/\xc3\xa9\xe2\x80\xa8\xff\\n\n"
    assert LogFormat("n", "$uri", escape="none").render(r) == b"/\xc3\xa9\xe2\x80\xa8\xff\n\n"


def test_a_getter_returning_surrogates_logs_their_bytes(monkeypatch):
    monkeypatch.setitem(variables.VARIABLES, "unicode_test", lambda r: "a\u263a\udcff")
    assert LogFormat("j", "$unicode_test", escape="json").render(FakeRequest()) == b"a\xe2\x98\xba\xff\n"
