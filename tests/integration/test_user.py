"""``user``, ``worker_rlimit_core`` and ``working_directory``: the workers' identity, as the
kernel reports it in /proc/PID/status.

CI runs as root with a Python under /root (pyenv), which ``nobody`` cannot read. Both cases
are covered: that Python with ``user nobody`` is refused in one ``[emerg]`` line and starts
nothing; Debian's /usr/bin/python3, with copies of wsproto and h11 in a world-readable
directory and this work tree (under /work, 755) on PYTHONPATH, really switches, and the
switched workers push, echo, reload and reopen their logs.
"""

import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile

import h11
import pytest
import websocket  # websocket-client
import wsproto

from tests.helpers.server import ROOT, make_conf, wait_for
from .test_websocket import first_url, push

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = pwd.getpwnam("nobody")

WS_HTTP = """
    server {
        listen 127.0.0.1:0;
        location /ws { websocket; }
        location / { return 200 "ok\\n"; }
    }"""


def status(pid):
    """Uid, Gid (real, effective, saved, fs) and Groups of a process, from /proc."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("Uid", "Gid"):
                out[name] = [int(x) for x in value.split()]
            elif name == "Groups":
                out[name] = sorted(int(x) for x in value.split())
    return out


def group_of(name):
    return next(g for g in ("nobody", "nogroup") if _group_exists(g)) if name is None else name


def _group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def user_with_groups():
    """A user with supplementary groups, if this system has one, so that initgroups shows;
    else nobody."""
    for g in grp.getgrall():
        for member in g.gr_mem:
            try:
                pw = pwd.getpwnam(member)
            except KeyError:
                continue
            if pw.pw_uid != 0:
                return pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name
    return "nobody", group_of(None)


@pytest.fixture
def readable(tmp_path):
    """A world-readable directory (prefix and PYTHONPATH live there), removed at the end."""
    path = tempfile.mkdtemp(prefix="ngxws-user-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def system_python(readable):
    """Environment for SYSTEM_PYTHON: copies of the installed wsproto and h11 (no download)
    beside this work tree, all readable by any user."""
    assert os.path.exists(SYSTEM_PYTHON), "Debian's python3 is needed (.ci/run installs it)"
    lib = os.path.join(readable, "lib")
    os.mkdir(lib)
    for module in (wsproto, h11):
        src = os.path.dirname(module.__file__)
        shutil.copytree(src, os.path.join(lib, os.path.basename(src)),
                        ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, _, filenames in os.walk(lib):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    # every directory down to the work tree must be searchable by others
    path = ROOT
    while path != "/":
        assert os.stat(path).st_mode & 0o005 == 0o005, "%s is not readable by others" % path
        path = os.path.dirname(path)
    return {"PYTHONPATH": lib + os.pathsep + ROOT}


def prefix_in(readable, name="p"):
    prefix = os.path.join(readable, name)
    os.mkdir(prefix)
    os.chmod(prefix, 0o755)
    return prefix


def start(ngxws_server, readable, main, python=True, workers=2, name="p", **kw):
    prefix = prefix_in(readable, name)
    srv = ngxws_server(conf=make_conf(prefix, http=WS_HTTP, main=main, user="", workers=workers,
                                      http_main="access_log %s/access.log;" % prefix),
                       prefix=prefix, start=False)
    srv.user_args = ()
    if python:
        srv.python = SYSTEM_PYTHON
        srv.env = system_python(readable)
    for k, v in kw.items():
        setattr(srv, k, v)
    return srv


def user_line(srv):
    with open(srv.conf_path) as f:
        return next(n for n, line in enumerate(f, 1) if line.startswith("user "))


def run_t(srv):
    env = dict(os.environ, **srv.env) if srv.env else dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(srv.command("-t"), env=env, capture_output=True, text=True, timeout=30)


def echo_and_push(port):
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % port, timeout=5)
    url = first_url(ws)
    ws.send("echo as nobody")
    assert ws.recv() == "echo as nobody"
    assert push(url, "push as nobody") == 204
    assert ws.recv() == "push as nobody"
    ws.close()


def http_get(port, path="/"):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


# -- (a) a Python the user cannot read ---------------------------------------------------------

def unreadable_for_nobody():
    path = sys.prefix
    while path != "/":
        st = os.stat(path)
        if st.st_mode & 0o001 == 0 and st.st_uid != NOBODY.pw_uid:
            return path
        path = os.path.dirname(path)
    return None


@pytest.mark.parametrize("main", ["user nobody %s;" % group_of(None), ""])
def test_unreadable_python_refused_at_t_and_start(ngxws_server, readable, main):
    blocker = unreadable_for_nobody()
    if blocker is None:
        pytest.fail("this interpreter (%s) is readable by nobody; the case needs one under a "
                    "directory closed to others, as pyenv's /root" % sys.prefix)
    srv = start(ngxws_server, readable, main, python=False)
    r = run_t(srv)
    assert r.returncode == 1
    emerg = [line for line in r.stderr.splitlines() if "[emerg]" in line]
    assert len(emerg) == 1, r.stderr
    line = emerg[0]
    assert 'user "nobody" cannot search "%s"' % blocker in line
    assert 'or use "user root;"' in line
    if main:
        assert line.endswith("in %s:%d" % (srv.conf_path, user_line(srv)))
    assert "test failed" in r.stderr

    # start-up: the same line, exit code 1, no worker, no pid file, nothing logged as started
    srv.start(wait=False)
    assert srv.proc.wait(30) == 1
    assert line.split("[emerg] ", 1)[1] in srv.stderr_text()
    assert srv.master_pid() is None
    assert "start worker" not in srv.log_text()
    assert not os.path.exists(os.path.join(srv.prefix, "notice.log")) or \
        "listening on" not in open(os.path.join(srv.prefix, "notice.log")).read()


def test_user_root_keeps_root(ngxws_server, readable):
    srv = start(ngxws_server, readable, "user root;", python=False, workers=1)
    assert run_t(srv).returncode == 0
    srv.start()
    (pid,) = srv.wait_workers(1)
    st = status(pid)
    assert st["Uid"] == [0, 0, 0, 0] and st["Gid"] == [0, 0, 0, 0]
    assert http_get(srv.port()) == (200, b"ok\n")


# -- (b) a Python the user can read: the switch itself -------------------------------------------

def test_workers_switch_user_push_echo_reload_reopen(ngxws_server, readable):
    name, group = user_with_groups()
    pw = pwd.getpwnam(name)
    gid = grp.getgrnam(group).gr_gid
    groups = sorted(set(os.getgrouplist(name, gid)))
    srv = start(ngxws_server, readable, "user %s %s;" % (name, group))
    r = run_t(srv)
    assert r.returncode == 0, r.stderr
    srv.start()

    def check_workers():
        pids = srv.wait_workers(2)
        # a worker switches right after its init_process: wait (bounded) until every one has
        wait_for(lambda: all(status(pid)["Uid"][0] != 0 for pid in pids), 10, what="workers switched")
        for pid in pids:
            st = status(pid)
            assert st["Uid"] == [pw.pw_uid] * 4, (pid, st)
            assert st["Gid"] == [gid] * 4, (pid, st)
            assert st["Groups"] == groups, (pid, st)
            # not made dumpable: nothing asked for cores
            assert os.stat("/proc/%d/status" % pid).st_uid == 0
        return pids

    workers = check_workers()
    master = status(srv.pid)
    assert master["Uid"] == [0, 0, 0, 0]
    port = srv.port()
    echo_and_push(port)
    assert http_get(port) == (200, b"ok\n")

    # HUP: new workers, switched as well
    srv.signal(signal.SIGHUP)
    wait_for(lambda: not set(srv.workers()) & set(workers), 15, what="new workers")
    check_workers()
    echo_and_push(port)

    # USR1 after a rotation: the master creates the files again and gives them to the user,
    # then the switched workers reopen them and write there
    access = os.path.join(srv.prefix, "access.log")
    error = srv.error_log
    os.rename(access, access + ".1")
    os.rename(error, error + ".1")
    srv.signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(access) and os.path.exists(error), what="reopened files")
    srv.wait_log(r"\[notice\] (\d+)#\1: reopening logs", count=2)
    for path in (access, error):
        assert os.stat(path).st_uid == pw.pw_uid
    assert http_get(port, "/after-reopen") == (200, b"ok\n")
    wait_for(lambda: "/after-reopen" in open(access).read(), what="access line in the new file")
    lines = open(error).read()
    assert "[alert]" not in lines and "[emerg]" not in lines, lines
    echo_and_push(port)


def test_rlimit_core_and_working_directory(ngxws_server, readable):
    wd = os.path.join(readable, "cores")
    os.mkdir(wd)
    os.chown(wd, NOBODY.pw_uid, -1)
    srv = start(ngxws_server, readable, "user nobody %s; worker_rlimit_core 500m; "
                "working_directory %s;" % (group_of(None), wd), workers=1)
    srv.start()
    (pid,) = srv.wait_workers(1)
    with open("/proc/%d/limits" % pid) as f:
        core = next(line for line in f if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["524288000", "524288000"], core
    assert os.readlink("/proc/%d/cwd" % pid) == wd
    assert status(pid)["Uid"] == [NOBODY.pw_uid] * 4
    # PR_SET_DUMPABLE again after the switch: /proc/PID belongs to the worker's user
    assert os.stat("/proc/%d/status" % pid).st_uid == NOBODY.pw_uid
    echo_and_push(srv.port())


def test_working_directory_that_fails_stops_the_master(ngxws_server, readable):
    srv = start(ngxws_server, readable, "user root; working_directory %s/none;" % readable,
                python=False, workers=1)
    srv.allow(r'\[alert\] .*chdir\("%s/none"\) failed \(2: No such file or directory\)' % readable)
    srv.allow(r"\[alert\] .*exited with code 3")
    srv.allow(r"\[emerg\] .*could not start, exiting")
    srv.start(wait=False)
    assert srv.proc.wait(30) == 1
    assert 'chdir("%s/none") failed (2: No such file or directory)' % readable in srv.log_text()


# -- (c) not root: the directive is ignored, with nginx's warning ---------------------------------

def test_user_ignored_when_master_is_not_root(ngxws_server, readable):
    srv = start(ngxws_server, readable, "user nobody %s;" % group_of(None), workers=1)
    os.chown(srv.prefix, NOBODY.pw_uid, NOBODY.pw_gid)

    def become_nobody():
        os.setgroups([])
        os.setgid(NOBODY.pw_gid)
        os.setuid(NOBODY.pw_uid)

    srv.preexec_fn = become_nobody
    srv.start()
    warning = ('ngxws: [warn] the "user" directive makes sense only if the master process runs '
               'with super-user privileges, ignored in %s:%d' % (srv.conf_path, user_line(srv)))
    assert warning in srv.stderr_text().splitlines()
    (pid,) = srv.wait_workers(1)
    assert status(srv.pid)["Uid"] == [NOBODY.pw_uid] * 4
    assert status(pid)["Uid"] == [NOBODY.pw_uid] * 4
    echo_and_push(srv.port())
