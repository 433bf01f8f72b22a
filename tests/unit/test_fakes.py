"""Every stand-in the unit tests use has only attributes its real class has.

A fake with an attribute the real object lacks lets code pass its tests and fail in the
worker: `$sent_http_NAME` read `request.response_headers`, which only the variables test's
FakeRequest had.  Each entry below names a fake (an instance, as the tests build it), the
class it stands for, and the names that are the test's own (what it records, how it is
driven); every other attribute of the fake, methods included, must exist on the real class:
as a class attribute, slot, property or method, a dataclass field, or an attribute that the
class's own code assigns to ``self``.
"""

import ast
import dataclasses
import inspect
import socket
import textwrap

import pytest

from ngxws.core.conf import Node
from ngxws.core.connection import Connection
from ngxws.core.cycle import Cycle
from ngxws.core.directives import ConfSet, Parser
from ngxws.core.listening import Listening
from ngxws.core.log import ConnectionLog, LogFile
from ngxws.core.loop import EventLoop
from ngxws.http.core_module import LocationConf, ServerConf
from ngxws.http.log_module import _OwnFile
from ngxws.http.request import Request
from ngxws.websocket.session import Location, Session

from ..helpers import http as helpers_http
from .core import fakes, test_listening, test_log
from .http import test_log_module, test_stub_status, test_variables
from .websocket import test_keepalive, test_module, test_push, test_upstream


def real_attributes(cls):
    names = set(dir(cls))
    if dataclasses.is_dataclass(cls):
        names.update(f.name for f in dataclasses.fields(cls))
    for klass in cls.__mro__:
        if not klass.__module__.startswith("ngxws"):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                    and isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
    return names


def fake_attributes(obj):
    return {name for name in dir(obj) if not name.startswith("__")}


def _keepalive_parts():
    s, loop = test_keepalive.fake()
    return s, loop


def _module_request():
    return test_module.FakeRequest("GET")


def _push_request():
    return test_push.FakeRequest({})


def _upstream_request():
    return test_upstream.FakeRequest(None, None, [])


#: (what, fake, real class, the fake's own names)
CASES = [
    ("core/fakes FakeLog", lambda: fakes.FakeLog(), ConnectionLog, {"records", "at", "_rec"}),
    ("core/fakes MemorySink", lambda: fakes.MemorySink(), LogFile, {"lines", "text"}),
    ("helpers/http FakeListening", lambda: helpers_http.FakeListening(None), Listening, set()),
    ("test_listening FakeListenSock", lambda: test_listening.FakeListenSock([]), socket.socket,
     {"socks", "then", "calls"}),
    ("test_variables FakeRequest", lambda: test_variables.FakeRequest(), Request, set()),
    ("test_variables FakeConn", lambda: test_variables.FakeConn(), Connection, set()),
    ("test_log_module FakeRequest", lambda: test_log_module.FakeRequest(), Request, {"conf"}),
    ("test_log_module FakeRequest.loc", lambda: test_log_module.FakeRequest().loc, LocationConf,
     set()),
    ("test_log_module FakeConn", lambda: test_log_module.FakeConn(), Connection, set()),
    ("test_log_module FakeCycle", lambda: test_log_module.FakeCycle(), Cycle, set()),
    ("test_log_module FakeLoop", lambda: test_log_module.FakeLoop(), EventLoop, {"fire"}),
    ("test_log_module Node", lambda: test_log_module.Node("a"), Node, set()),
    ("test_log_module Confs", lambda: test_log_module.Confs(None), ConfSet, {"main"}),
    ("test_log_module Cf", lambda: test_log_module.Cf("/tmp"), Parser, {"main"}),
    ("test_log_module CountingFile", lambda: test_log_module.CountingFile(), _OwnFile,
     {"writes", "reopened"}),
    ("test_log Conn", lambda: test_log.Conn(), Connection, set()),
    ("test_stub_status Conn", lambda: test_stub_status.Conn(3), Connection, set()),
    ("test_stub_status FakeRequest", lambda: test_stub_status.FakeRequest("GET"), Request,
     {"sent", "finalized"}),
    ("test_keepalive session", lambda: _keepalive_parts()[0], Session, {"closed"}),
    ("test_keepalive session.loc", lambda: _keepalive_parts()[0].loc, Location, set()),
    ("test_keepalive session.conn", lambda: _keepalive_parts()[0].conn, Connection, set()),
    ("test_keepalive log", lambda: _keepalive_parts()[0].conn.log, ConnectionLog, {"lines"}),
    ("test_keepalive FakeLoop", lambda: _keepalive_parts()[1], EventLoop, {"armed"}),
    ("test_module FakeLog", lambda: test_module.FakeLog(), ConnectionLog, {"lines", "_add"}),
    ("test_module FakeRequest", _module_request, Request, {"sent", "_conf"}),
    ("test_module FakeRequest.conn", lambda: _module_request().conn, Connection, set()),
    ("test_module FakeRequest.loc", lambda: _module_request().loc, LocationConf, set()),
    ("test_push FakeSession", lambda: test_push.FakeSession(None), Session, {"status", "got"}),
    ("test_push FakeSession.loc", lambda: test_push.FakeSession(None).loc, Location, set()),
    ("test_push FakeSession.conn", lambda: test_push.FakeSession(None).conn, Connection, set()),
    ("test_push FakeRequest", _push_request, Request, {"sent"}),
    ("test_push FakeRequest.conn", lambda: _push_request().conn, Connection, set()),
    ("test_upstream FakeSession", lambda: test_upstream.FakeSession(None), Session,
     {"sent", "closed", "finished"}),
    ("test_upstream FakeRequest", _upstream_request, Request, {"_conf"}),
]


@pytest.mark.parametrize("what,make,real,own", CASES, ids=[c[0] for c in CASES])
def test_fake_has_only_what_the_real_class_has(what, make, real, own):
    extra = fake_attributes(make()) - own - real_attributes(real)
    assert not extra, "%s has %s, which %s lacks" % (what, sorted(extra), real.__name__)


def test_the_check_finds_a_made_up_attribute():
    # what the check is for: the FakeRequest that had response_headers before Request did
    class Stale:
        method = "GET"
        response_bodies = ()
    assert fake_attributes(Stale()) - real_attributes(Request) == {"response_bodies"}
    assert "response_headers" in real_attributes(Request)
    # attributes assigned in __init__ (no slots) count
    assert {"open_files", "prefix"} <= real_attributes(Cycle)
    # and so do dataclass fields made by a default factory
    assert "add_headers" in real_attributes(LocationConf) and "names" in real_attributes(ServerConf)
