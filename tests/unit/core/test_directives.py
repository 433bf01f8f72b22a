"""core/directives.py: dispatcher, include, slot setters, values, merge.

Expected messages were taken from nginx 1.22 (`nginx -t -c D/nginx.conf -p D/`), with D the folder.
"""

import copy
import pickle
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngxws.core.conf import COMMAND_LINE
from ngxws.core.directives import (
    MAX_DEPTH, UNSET, Args, ConfigError, ConfSet, Ctx, Directive, Parser, Slot, merge, parse_msec, parse_sec, parse_size,
    set_enum, set_flag, set_msec, set_num, set_path, set_sec, set_size, set_str,
)  # fmt: skip

# -- a small module set shaped like nginx's core, events and http modules ---------------------------


@dataclass
class CoreConf:
    worker_processes: object = UNSET
    pid: object = UNSET
    user: object = UNSET
    events: object = UNSET


@dataclass
class EventsConf:
    worker_connections: object = UNSET


@dataclass
class HttpMain:
    variables_hash_max_size: object = UNSET
    servers: list = field(default_factory=list)


@dataclass
class SrvConf:
    ssl_session_timeout: object = UNSET
    listen: list = field(default_factory=list)
    locations: list = field(default_factory=list)


@dataclass
class LocConf:
    sendfile: object = UNSET
    client_body_buffer_size: object = UNSET
    keepalive_timeout: object = UNSET
    keepalive_requests: object = UNSET
    lingering_close: object = UNSET
    default_type: object = UNSET
    types: object = UNSET


def events_block(cf, node, conf):
    if conf.events is not UNSET:
        raise ConfigError('"events" directive is duplicate')
    conf.events = True
    cf.handle(node.children, Ctx.EVENTS, cf.confs)


def http_block(cf, node, conf):
    confs = cf.confs.derive(Slot.MAIN)
    confs.set("http", Slot.MAIN, HttpMain())
    confs.set("http", Slot.SRV, SrvConf())
    confs.set("http", Slot.LOC, LocConf())
    cf.confs.set("http", Slot.MAIN, confs.get("http", Slot.MAIN))
    cf.handle(node.children, Ctx.HTTP, confs)
    if not confs.get("http").servers:  # runs only once the block is complete
        raise ConfigError("no servers")


def server_block(cf, node, conf):
    confs = cf.confs.derive(Slot.MAIN)
    confs.set("http", Slot.SRV, SrvConf())
    confs.set("http", Slot.LOC, LocConf())
    conf.servers.append(confs)
    cf.handle(node.children, Ctx.SRV, confs)


def location_block(cf, node, conf):
    confs = cf.confs.derive(Slot.MAIN, Slot.SRV)
    confs.set("http", Slot.LOC, LocConf())
    conf.locations.append((node.args, confs))
    cf.handle(node.children, Ctx.LOC, confs)


def listen(cf, node, conf):
    conf.listen.append(node.args)


def types_block(cf, node, conf):  # reads its children itself, as nginx's types {} does
    conf.types = {n.name: n.args for n in node.children}


HTTP_ANY = Ctx.HTTP | Ctx.SRV | Ctx.LOC


class Module:
    def __init__(self, name, *directives):
        self.name = name
        self.DIRECTIVES = directives


CORE = Module(
    "core",
    Directive("worker_processes", Ctx.MAIN, Args.TAKE1, set_num("worker_processes")),
    Directive("pid", Ctx.MAIN, Args.TAKE1, set_path("pid")),
    Directive("user", Ctx.MAIN, Args.TAKE12, set_str("user")),
    Directive("events", Ctx.MAIN, Args.BLOCK | Args.NOARGS, events_block),
    Directive("http", Ctx.MAIN, Args.BLOCK | Args.NOARGS, http_block),
)
EVENTS = Module("events", Directive("worker_connections", Ctx.EVENTS, Args.TAKE1, set_num("worker_connections")))
HTTP = Module(
    "http",
    Directive("variables_hash_max_size", Ctx.HTTP, Args.TAKE1, set_num("variables_hash_max_size")),
    Directive("server", Ctx.HTTP, Args.BLOCK | Args.NOARGS, server_block),
    Directive("location", Ctx.SRV | Ctx.LOC, Args.BLOCK | Args.TAKE12, location_block, Slot.SRV),
    Directive("listen", Ctx.SRV, Args.ONEMORE, listen, Slot.SRV),
    Directive("ssl_session_timeout", Ctx.HTTP | Ctx.SRV, Args.TAKE1, set_sec("ssl_session_timeout"), Slot.SRV),
    Directive("sendfile", HTTP_ANY, Args.FLAG, set_flag("sendfile"), Slot.LOC),
    Directive("client_body_buffer_size", HTTP_ANY, Args.TAKE1, set_size("client_body_buffer_size"), Slot.LOC),
    Directive("keepalive_timeout", HTTP_ANY, Args.TAKE12, set_msec("keepalive_timeout"), Slot.LOC),
    Directive("keepalive_requests", HTTP_ANY, Args.TAKE1, set_num("keepalive_requests"), Slot.LOC),
    Directive(
        "lingering_close", HTTP_ANY, Args.TAKE1, set_enum("lingering_close", {"off": 0, "on": 1, "always": 2}), Slot.LOC
    ),
    Directive("default_type", HTTP_ANY, Args.TAKE1, set_str("default_type"), Slot.LOC),
    Directive("types", HTTP_ANY, Args.BLOCK | Args.NOARGS, types_block, Slot.LOC),
)
# Another module with a same-named directive in another context, like nginx's upstream "server".
SEEN = []
OTHER = Module("other", Directive("server", Ctx.EVENTS, Args.TAKE1, lambda cf, node, conf: SEEN.append(conf)))
MODULES = (CORE, EVENTS, HTTP, OTHER)


def top_confs():
    confs = ConfSet()
    confs.set("core", Slot.MAIN, CoreConf())
    confs.set("events", Slot.MAIN, EventsConf())
    confs.set("other", Slot.MAIN, "other's conf")
    return confs


def write(folder, files):
    for name, body in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if isinstance(body, bytes) else body.encode())


def run(tmp_path, text, params=None, **files):
    """Handles D/nginx.conf as Cycle.build does; returns the top ConfSet."""
    write(tmp_path, {"nginx.conf": text, **files})
    cf = Parser(MODULES, str(tmp_path) + "/", str(tmp_path / "nginx.conf"))
    confs = top_confs()
    if params is not None:
        cf.handle(cf.parse_text(params), Ctx.MAIN, confs)
    cf.handle(cf.parse_file(cf.conf_file), Ctx.MAIN, confs)
    return confs


def fails(tmp_path, text, params=None, **files):
    with pytest.raises(ConfigError) as info:
        run(tmp_path, text, params, **files)
    return str(info.value).replace(str(tmp_path), "D")


# -- values get converted once -----------------------------------------------------------------------


def test_values_are_converted_and_land_in_their_slot(tmp_path):
    confs = run(
        tmp_path,
        """
        worker_processes 4; pid logs/ngxws.pid; user www data;
        events { worker_connections 1024; server x; }
        http {
            variables_hash_max_size 512;
            sendfile On; client_body_buffer_size 64k; keepalive_timeout 1m30s; lingering_close ALWAYS;
            server {
                listen 127.0.0.1:80; listen 81 default_server;
                ssl_session_timeout 5m;
                location / { keepalive_requests 7; default_type 'text/plain'; }
            }
        }
        """,
    )
    core = confs.get("core")
    assert (core.worker_processes, core.pid, core.user) == (4, f"{tmp_path}/logs/ngxws.pid", "www")
    assert confs.get(EVENTS).worker_connections == 1024
    assert SEEN[-1] == "other's conf"  # "server" in events{} went to the other module
    http = confs.get("http")
    assert http.variables_hash_max_size == 512
    (server,) = http.servers
    srv = server.get("http", Slot.SRV)
    assert srv.listen == [["127.0.0.1:80"], ["81", "default_server"]] and srv.ssl_session_timeout == 300
    (args, location), = srv.locations
    assert args == ["/"]
    assert location.get("http", Slot.SRV) is srv and location.get("http") is http
    loc = location.get("http", Slot.LOC)
    assert (loc.keepalive_requests, loc.default_type, loc.sendfile) == (7, "text/plain", UNSET)


def test_a_module_without_a_conf_gets_none(tmp_path):
    got = []
    module = Module("x", Directive("x", Ctx.ANY, Args.NOARGS, lambda cf, node, conf: got.append(conf)))
    cf = Parser((module,), str(tmp_path), str(tmp_path / "nginx.conf"))
    cf.handle(cf.parse_text("x;", "/f"), Ctx.MAIN, ConfSet())
    assert got == [None]


def test_setters_store_converted_values():
    cf = Parser((), "/p/", "/p/conf/nginx.conf")
    loc = LocConf()
    node = lambda name, *args: type("N", (), {"name": name, "args": list(args)})  # noqa: E731
    set_flag("sendfile")(cf, node("sendfile", "On"), loc)
    set_size("client_body_buffer_size")(cf, node("client_body_buffer_size", "64k"), loc)
    set_msec("keepalive_timeout")(cf, node("keepalive_timeout", "1m30s"), loc)
    set_enum("lingering_close", {"off": 0, "on": 1, "always": 2})(cf, node("lingering_close", "ALWAYS"), loc)
    assert (loc.sendfile, loc.client_body_buffer_size, loc.keepalive_timeout, loc.lingering_close) == (
        True, 65536, 90000, 2,
    )  # fmt: skip
    core = CoreConf()
    set_path("pid")(cf, node("pid", "/run/x.pid"), core)
    assert core.pid == "/run/x.pid"


# -- errors, each as nginx words it -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("events {}\nlisen 80;\n", 'unknown directive "lisen" in D/nginx.conf:2'),
        ("events {}\nhttp { worker_processes 1; }\n", '"worker_processes" directive is not allowed here in D/nginx.conf:2'),
        ("listen 80;", '"listen" directive is not allowed here in D/nginx.conf:1'),
        ("events {}\nworker_processes 1 2;\n", 'invalid number of arguments in "worker_processes" directive in D/nginx.conf:2'),
        ("events {}\ninclude a b;\n", 'invalid number of arguments in "include" directive in D/nginx.conf:2'),
        ("events {}\ninclude;\n", 'invalid number of arguments in "include" directive in D/nginx.conf:2'),
        ("http { sendfile; }", 'invalid number of arguments in "sendfile" directive in D/nginx.conf:1'),
        ("http { sendfile on off; }", 'invalid number of arguments in "sendfile" directive in D/nginx.conf:1'),
        ("http { server { listen; } }", 'invalid number of arguments in "listen" directive in D/nginx.conf:1'),
        ("http { server { location {} } }", 'invalid number of arguments in "location" directive in D/nginx.conf:1'),
        ("http { server { location a b c {} } }", 'invalid number of arguments in "location" directive in D/nginx.conf:1'),
        ("events x {}", 'invalid number of arguments in "events" directive in D/nginx.conf:1'),
        ("events {}\nhttp;\n", 'directive "http" has no opening "{" in D/nginx.conf:2'),
        ("events {}\nworker_processes 1 {}\n", 'directive "worker_processes" is not terminated by ";" in D/nginx.conf:2'),
        ("events {}\ninclude a {}\n", 'directive "include" is not terminated by ";" in D/nginx.conf:2'),
        ("events {}\nworker_processes 1;\nworker_processes 2;\n", '"worker_processes" directive is duplicate in D/nginx.conf:3'),
        ("events { worker_connections 10; worker_connections 20; }\n", '"worker_connections" directive is duplicate in D/nginx.conf:1'),
        ("events {}\nevents {}", '"events" directive is duplicate in D/nginx.conf:2'),
        ("http { sendfile on; sendfile on; }", '"sendfile" directive is duplicate in D/nginx.conf:1'),
        ("http { client_body_buffer_size 1; client_body_buffer_size 1; }", '"client_body_buffer_size" directive is duplicate in D/nginx.conf:1'),
        ("http { keepalive_timeout 1; keepalive_timeout 1; }", '"keepalive_timeout" directive is duplicate in D/nginx.conf:1'),
        ("http { keepalive_requests 1; keepalive_requests 1; }", '"keepalive_requests" directive is duplicate in D/nginx.conf:1'),
        ("http { lingering_close on; lingering_close off; }", '"lingering_close" directive is duplicate in D/nginx.conf:1'),
        ("http { ssl_session_timeout 1; ssl_session_timeout 1; }", '"ssl_session_timeout" directive is duplicate in D/nginx.conf:1'),
        ("http { default_type a; default_type b; }", '"default_type" directive is duplicate in D/nginx.conf:1'),
        ("pid a; pid b;", '"pid" directive is duplicate in D/nginx.conf:1'),
        ("events {}\nhttp { sendfile maybe; }\n", 'invalid value "maybe" in "sendfile" directive, it must be "on" or "off" in D/nginx.conf:2'),
        ("events {}\nhttp { client_body_buffer_size 12x; }\n", '"client_body_buffer_size" directive invalid value in D/nginx.conf:2'),
        ("events {}\nhttp { keepalive_timeout 1y; }\n", '"keepalive_timeout" directive invalid value in D/nginx.conf:2'),
        ("events {}\nhttp { ssl_session_timeout 500ms; }\n", '"ssl_session_timeout" directive invalid value in D/nginx.conf:2'),
        ("events {}\nhttp { keepalive_requests abc; }\n", '"keepalive_requests" directive invalid number in D/nginx.conf:2'),
        ("events {}\nhttp { lingering_close sometimes; }\n", 'invalid value "sometimes" in D/nginx.conf:2'),
        ("events {}\ninclude /x/y.conf;\n", 'open() "/x/y.conf" failed (2: No such file or directory) in D/nginx.conf:2'),
        ("events {}\ninclude sub;\n", 'open() "D/sub" failed (2: No such file or directory) in D/nginx.conf:2'),
        # the setter of a multi-line directive is reported at its ";" line
        ("events {}\nhttp { server { listen 80; } keepalive_requests\n 80\n x; }", 'invalid number of arguments in "keepalive_requests" directive in D/nginx.conf:4'),
    ],
)  # fmt: skip
def test_errors(tmp_path, text, expected):
    assert fails(tmp_path, text) == expected


def test_main_file_open_error_has_no_location(tmp_path):
    cf = Parser(MODULES, str(tmp_path), str(tmp_path / "nonexist.conf"))
    with pytest.raises(ConfigError) as info:
        cf.parse_file(cf.conf_file)
    assert str(info.value) == f'open() "{tmp_path}/nonexist.conf" failed (2: No such file or directory)'


def test_non_utf8_file_is_a_config_error(tmp_path):
    assert fails(tmp_path, "events {}\ninclude a.conf;\n", **{"a.conf": b"\n# caf\xe9\n"}) == (
        "invalid UTF-8 byte 0xe9 in D/a.conf:2"
    )
    assert fails(tmp_path, b"\xff") == "invalid UTF-8 byte 0xff in D/nginx.conf:1"


def test_bad_path_is_a_config_error(tmp_path):
    assert fails(tmp_path, 'include "x\x00y";').startswith('open() "D/x\x00y" failed (22: ')


# -- include ---------------------------------------------------------------------------------------------


def test_include_glob_is_sorted_relative_to_the_main_conf_and_skips_dotfiles(tmp_path):
    files = {"c/b": "worker_processes 2;", "c/a": "user a;", "c/.h": "lisen;", "conf.d/x.conf": "pid p;"}
    confs = run(tmp_path, "include c/*;\ninclude conf.d/*.conf;\n", **files)
    core = confs.get("core")
    assert (core.user, core.worker_processes, core.pid) == ("a", 2, f"{tmp_path}/p")
    assert fails(tmp_path / "1", "include c/*;\n", **{"c/a": "x;", "c/b": "y;"}) == 'unknown directive "x" in D/c/a:1'


def test_include_glob_without_a_match_is_fine(tmp_path):
    assert fails(tmp_path, "events {}\ninclude nomatch/*.conf;\nfoo;\n") == 'unknown directive "foo" in D/nginx.conf:3'


def test_include_is_relative_to_the_main_conf_folder_from_any_file(tmp_path):
    files = {"conf/conf.d/a.conf": "\ninclude conf.d/sub/b.conf;\n", "conf/conf.d/sub/b.conf": "x y;\n"}
    write(tmp_path, {"conf/nginx.conf": "events {}\ninclude conf.d/a.conf;\n", **files})
    cf = Parser(MODULES, str(tmp_path), str(tmp_path / "conf/nginx.conf"))
    with pytest.raises(ConfigError) as info:
        cf.handle(cf.parse_file(cf.conf_file), Ctx.MAIN, top_confs())
    assert str(info.value) == f'unknown directive "x" in {tmp_path}/conf/conf.d/sub/b.conf:1'


def test_include_glob_with_a_space(tmp_path):
    assert fails(tmp_path, 'include "a *.conf";', **{"a 1.conf": "zz;\n"}) == 'unknown directive "zz" in D/a 1.conf:1'


def test_include_a_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    assert fails(tmp_path, "events {}\ninclude sub;\n") == 'pread() "D/sub" failed (21: Is a directory)'
    (tmp_path / "conf.d/dir.conf").mkdir(parents=True)
    assert fails(tmp_path, "include conf.d/*.conf;") == 'pread() "D/conf.d/dir.conf" failed (21: Is a directory)'


def test_include_inside_a_block_uses_that_block(tmp_path):
    confs = run(tmp_path, "events {\ninclude ev.conf;\n}\n", **{"ev.conf": "worker_connections 5;"})
    assert confs.get("events").worker_connections == 5


def test_an_included_file_is_a_file_of_its_own(tmp_path):
    assert fails(tmp_path, "events {\ninclude a.conf;\n", **{"a.conf": "worker_connections 1;\n}\n"}) == (
        'unexpected "}" in D/a.conf:2'
    )
    assert fails(tmp_path, "events {}\ninclude a.conf;\n", **{"a.conf": "http {\n"}) == (
        'unexpected end of file, expecting "}" in D/a.conf:2'
    )


def test_include_reads_what_fstat_promises(tmp_path):
    assert fails(tmp_path, "include /dev/zero;\nfoo;") == 'unknown directive "foo" in D/nginx.conf:2'


# -- nginx reports the first problem in file order ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lisen 80;\nevents {\n", 'unknown directive "lisen" in D/nginx.conf:1'),
        ("events {}\nx${b}{ c;\n", 'unknown directive "x${b}" in D/nginx.conf:2'),
        ("worker_processes 1;\nworker_processes 2;\n}", '"worker_processes" directive is duplicate in D/nginx.conf:2'),
        ("events { worker_connections x;", '"worker_connections" directive invalid number in D/nginx.conf:1'),
        ("events { worker_connections 1; }\nworker_processes 1 2 {", 'directive "worker_processes" is not terminated by ";" in D/nginx.conf:2'),
        ('events { lisen; } a "b"c;', 'unknown directive "lisen" in D/nginx.conf:1'),
        # the block's setter does not go on after the error inside it ("no servers" would)
        ("http {\n", 'unexpected end of file, expecting "}" in D/nginx.conf:2'),
        ("http {\n server {} }\n}", 'unexpected "}" in D/nginx.conf:3'),
        # a block setter that reads its children itself still lets the error through
        ("http { server {} types { text/html html;", 'unexpected end of file, expecting "}" in D/nginx.conf:1'),
    ],
)  # fmt: skip
def test_first_problem_in_file_order(tmp_path, text, expected):
    assert fails(tmp_path, text) == expected


def test_first_problem_in_file_order_across_includes(tmp_path):
    assert fails(tmp_path, "include a.conf;\n}\n", **{"a.conf": "\nlisen;\n"}) == 'unknown directive "lisen" in D/a.conf:2'
    assert fails(tmp_path, "include b.conf;\nlisen;\n", **{"b.conf": "}"}) == 'unexpected "}" in D/b.conf:1'


# -- -g ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, expected",
    [
        ("foo bar;", 'unknown directive "foo" in command line'),
        ("foo bar", 'unexpected end of parameter, expecting ";" in command line'),
        ("events {}", "block directives are not supported in -g option in command line"),
        ("worker_processes 1 2;", 'invalid number of arguments in "worker_processes" directive in command line'),
        ("include /nonexist;", 'open() "/nonexist" failed (2: No such file or directory) in command line'),
        ("worker_processes 1;", '"worker_processes" directive is duplicate in D/nginx.conf:1'),
    ],
)
def test_command_line(tmp_path, params, expected):
    assert fails(tmp_path, "worker_processes 2;", params) == expected


def test_command_line_values(tmp_path):
    confs = run(tmp_path, "events {}", "pid /run/p.pid; user 'a b';")
    assert (confs.get("core").pid, confs.get("core").user) == ("/run/p.pid", "a b")


# -- Parser, ConfSet, Args ---------------------------------------------------------------------------


def test_parser_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cf = Parser((), "p", "p/conf/nginx.conf", cycle="c")
    assert cf.prefix == f"{tmp_path}/p/" and cf.conf_file == f"{tmp_path}/p/conf/nginx.conf"
    assert cf.conf_prefix == f"{tmp_path}/p/conf/" and cf.cycle == "c" and cf.ctx == Ctx.MAIN
    assert cf.full_path("logs/x") == f"{tmp_path}/p/logs/x" and cf.full_path("/abs") == "/abs"


def test_handle_restores_the_context(tmp_path):
    cf = Parser(MODULES, str(tmp_path), str(tmp_path / "nginx.conf"))
    confs = top_confs()
    cf.handle(cf.parse_text("events { worker_connections 3; }", str(tmp_path / "x")), Ctx.MAIN, confs)
    assert cf.ctx == Ctx.MAIN and isinstance(cf.confs, ConfSet)


def test_confset():
    confs = ConfSet()
    main, srv, loc = object(), object(), object()
    confs.set("m", Slot.MAIN, main)
    confs.set(CORE, Slot.SRV, srv)
    confs.set("m", Slot.LOC, loc)
    assert confs.get("m") is main and confs.get("core", Slot.SRV) is srv and confs.get("x") is None
    child = confs.derive(Slot.MAIN, Slot.SRV)
    assert child.get("m") is main and child.get(CORE, Slot.SRV) is srv and child.get("m", Slot.LOC) is None
    child.set("m", Slot.LOC, 1)
    assert confs.get("m", Slot.LOC) is loc


@pytest.mark.parametrize(
    "spec, ok",
    [
        (Args.NOARGS, [0]),
        (Args.TAKE1, [1]),
        (Args.TAKE7, [7]),
        (Args.TAKE12, [1, 2]),
        (Args.TAKE13, [1, 3]),
        (Args.TAKE23, [2, 3]),
        (Args.TAKE123, [1, 2, 3]),
        (Args.TAKE1234, [1, 2, 3, 4]),
        (Args.FLAG, [1]),
        (Args.ONEMORE, list(range(1, 10))),
        (Args.TWOMORE, list(range(2, 10))),
        (Args.ANY, list(range(10))),
        (Args.BLOCK | Args.NOARGS, [0]),
        (Args.BLOCK | Args.ANY, list(range(10))),
    ],
)
def test_arity(tmp_path, spec, ok):
    module = Module("m", Directive("d", Ctx.ANY, spec, lambda cf, node, conf: None))
    cf = Parser((module,), str(tmp_path), str(tmp_path / "nginx.conf"))
    block = " {}" if Args.BLOCK in spec else ";"
    for n in range(10):
        text = "d" + " a" * n + block
        if n in ok:
            cf.handle(cf.parse_text(text, "/f"), Ctx.MAIN, ConfSet())
        else:
            with pytest.raises(ConfigError, match='invalid number of arguments in "d" directive in /f:1'):
                cf.handle(cf.parse_text(text, "/f"), Ctx.MAIN, ConfSet())


def test_setter_errors_get_the_node_location_unless_they_have_one(tmp_path):
    def setter(cf, node, conf):
        raise ConfigError("own", "/elsewhere", 9) if node.args else ConfigError("bare")

    cf = Parser((Module("m", Directive("d", Ctx.ANY, Args.ANY, setter)),), str(tmp_path), "/n.conf")
    for text, expected in (("\nd;", "bare in /f:2"), ("d x;", "own in /elsewhere:9")):
        with pytest.raises(ConfigError) as info:
            cf.handle(cf.parse_text(text, "/f"), Ctx.MAIN, ConfSet())
        assert str(info.value) == expected


# -- values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ms",
    [
        ("1w", 604800000), ("2d", 172800000), ("1h", 3600000), ("1m30s", 90000), ("500ms", 500), ("1m30", 90000),
        ("30", 30000), ("0", 0), ("1h30m10s5ms", 5410005), ("1m 30s", 90000), ("1m  30s", 90000),
        ("9223372036854775", 9223372036854775000), ("1hm", 3600000),
        ("1y", None), ("1M", None), ("1s1s", None), ("1m1h", None), ("5ms1s", None), ("s", None), (" 1s", None),
        ("1S", None), ("9223372036854775807", None), ("-1", None), ("", None), ("1 30s", None), ("\u0661", None),
    ],
)  # fmt: skip
def test_parse_msec(text, ms):
    if ms is None:
        with pytest.raises(ValueError):
            parse_msec(text)
    else:
        assert parse_msec(text) == ms


@pytest.mark.parametrize(
    "text, sec",
    [
        ("1y", 31536000), ("1M", 2592000), ("1w", 604800), ("30", 30), ("1y1M1w1d1h1m1s", 34822861),
        ("9223372036854775807", 9223372036854775807),
        ("500ms", None), ("92233720368547758070", None), ("1d1y", None), ("", None),
    ],
)  # fmt: skip
def test_parse_sec(text, sec):
    if sec is None:
        with pytest.raises(ValueError):
            parse_sec(text)
    else:
        assert parse_sec(text) == sec


@pytest.mark.parametrize(
    "text, size",
    [
        ("1k", 1024), ("1K", 1024), ("1m", 1048576), ("1M", 1048576), ("1g", 1073741824), ("1G", 1073741824),
        ("0", 0), ("12", 12), ("9223372036854775807", 9223372036854775807),
        ("9007199254740991k", 9223372036854774784),
        ("k", None), (" 1k", None), ("9223372036854775808", None), ("9007199254740992k", None), ("-1", None),
        ("1kk", None), ("", None), ("1\u212a", None), ("\u00b2", None),
    ],
)  # fmt: skip
def test_parse_size(text, size):
    if size is None:
        with pytest.raises(ValueError):
            parse_size(text)
    else:
        assert parse_size(text) == size


# -- merge, UNSET ------------------------------------------------------------------------------------


def test_merge():
    parent = LocConf(sendfile=True, keepalive_timeout=UNSET, keepalive_requests=5)
    child = LocConf(keepalive_requests=9)
    assert merge(child, parent, keepalive_timeout=75000, sendfile=False) is child
    assert (child.sendfile, child.keepalive_timeout, child.keepalive_requests) == (True, 75000, 9)
    assert child.client_body_buffer_size is UNSET  # no default given: stays unset
    assert merge(LocConf(), None, sendfile=False).sendfile is False
    with pytest.raises(TypeError):
        merge(LocConf(), None, no_such_field=1)


def test_unset_is_one_object():
    assert repr(UNSET) == "UNSET"
    assert copy.deepcopy(UNSET) is UNSET and pickle.loads(pickle.dumps(UNSET)) is UNSET
    assert copy.deepcopy(LocConf()).sendfile is UNSET


def test_ctx_any_is_every_context():
    assert all(ctx in Ctx.ANY for ctx in (Ctx.MAIN, Ctx.EVENTS, Ctx.HTTP, Ctx.SRV, Ctx.LOC))


# -- no traceback for any input -------------------------------------------------------------------------


def test_a_file_that_includes_itself(tmp_path):
    assert fails(tmp_path, "include nginx.conf;") == (
        f'"include" directive is nested too deep (more than {MAX_DEPTH} levels) in D/nginx.conf:1'
    )


def test_deep_nesting(tmp_path):
    deep = "http { server { " + "location / { " * 200 + "}" * 200 + "} }"
    assert fails(tmp_path, deep) == f'"location" directive is nested too deep (more than {MAX_DEPTH} levels) in D/nginx.conf:1'
    run(tmp_path, "http { server { " + "location / { " * 90 + "}" * 90 + "} }")


def test_config_error_pickles_with_its_location():
    err = pickle.loads(pickle.dumps(ConfigError("m", "/f", 3)))
    assert (err.msg, err.file, err.line, str(err)) == ("m", "/f", 3, "m in /f:3")


TOKENS = [
    *(d.name for m in MODULES for d in m.DIRECTIVES), "include", "lisen", "on", "off", "1k", "30s", "x",
    "*", "c/*", "a.conf", "1", "2", " ", "\n", ";", "{", "}", '"', "'", "#", "\\",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join), st.booleans())
def test_any_text_gives_confs_or_a_config_error(tmp_path, text, as_param):
    write(tmp_path, {"a.conf": "worker_processes 1;", "c/b": "http {"})
    cf = Parser(MODULES, str(tmp_path), str(tmp_path / "nginx.conf"))
    try:
        cf.handle(cf.parse_text(text, COMMAND_LINE if as_param else str(tmp_path / "nginx.conf")), Ctx.MAIN, top_confs())
    except ConfigError as err:
        assert err.msg and str(err).startswith(err.msg)
