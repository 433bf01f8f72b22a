"""Integration fixtures: the real ``ngxws`` as a subprocess, in a temp prefix.

``ngxws_server`` is a factory::

    def test_x(ngxws_server):
        srv = ngxws_server(http='server { listen 127.0.0.1:0; location / { return 200 "hi"; } }')
        port = srv.port()          # from the master's "listening on" notice

Every wait polls a condition with a bound; every process is stopped by pid at
teardown; a test fails at teardown if the error log holds an ``[alert]``,
``[crit]`` or ``[emerg]`` line it did not declare (``srv.allow("pattern")``),
as nginx-tests does.

Run as root (CI), ngxws would switch its workers to ``nobody``, which cannot read a
Python under /root (pyenv): a config without a ``user`` directive of its own gets
``-g "user root;"`` (``ROOT_USER`` in tests/helpers/server.py), and test_user.py covers
the switch itself.

The helpers test files import (`wait_for`, `make_conf`, `Server`, ...) are in
tests/helpers/server.py.
"""

import pytest

from tests.helpers.server import Server, make_conf


@pytest.fixture
def ngxws_server(tmp_path, request):
    servers = []

    def factory(http=None, conf=None, start=True, prefix=None, **kw):
        """`prefix`: a directory of the test's own (one other users can reach), else in tmp_path."""
        if prefix is None:
            prefix = tmp_path / ("p%d" % len(servers))
            prefix.mkdir()
        text = conf if conf is not None else make_conf(str(prefix), http=http, **kw)
        text = text.replace("{prefix}", str(prefix))
        srv = Server(prefix, text)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield factory

    failures = []
    for srv in servers:
        srv.stop()
        srv.kill_all()
        bad = srv.bad_lines()
        if bad:
            failures.append("\n".join(bad))
    if failures:
        pytest.fail("error log has unexpected alert/crit/emerg lines:\n" + "\n".join(failures))
