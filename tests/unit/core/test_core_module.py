"""core/core_module.py: ``user``, ``worker_rlimit_core``, ``working_directory`` and the check that
a worker's user can read the Python it keeps importing from.

Messages are compared with real nginx (`nginx -t`) on the same file where nginx has them.
"""

import grp
import os
import pathlib
import pwd
import re
import shutil
import subprocess
import tempfile

import pytest

from ngxws.core import core_module
from ngxws.core.conf import ConfigError
from ngxws.core.core_module import User, default_user, unreadable_python
from ngxws.core.cycle import Cycle
from ngxws.modules import MODULES

NGINX = shutil.which("nginx")


def ngxws_t(tmp_path, text):
    """Cycle.build on D/nginx.conf as `ngxws -t` does: the core conf, or the ConfigError text."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    try:
        cycle = Cycle.build(str(tmp_path) + "/", str(conf), MODULES, test_only=True)
    except ConfigError as e:
        return str(e).replace(str(tmp_path), "D")
    return cycle.conf("core")


def nginx_t(tmp_path, text):
    """nginx's [emerg] message for the same file, or None when nginx accepts it."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    r = subprocess.run([NGINX, "-t", "-p", str(tmp_path) + "/", "-c", str(conf),
                        "-g", "error_log stderr; pid %s/nginx.pid;" % tmp_path],
                       capture_output=True, text=True, timeout=30)
    m = re.search(r"\[emerg\] (?:\d+#\d+: )?(.*)", r.stderr)
    return m.group(1).replace(str(tmp_path), "D") if m else None


def has_group(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="nginx reads `user` only as root")
@pytest.mark.skipif(NGINX is None, reason="the oracle, Debian's nginx, is not installed")
@pytest.mark.parametrize("text", [
    "user nosuchuser;\nevents {}\n",
    "user nobody nosuchgroup;\nevents {}\n",
    # the group defaults to the one named as the user, which Debian does not have for nobody
    "user nobody;\nevents {}\n",
    "user;\nevents {}\n",
    "user a b c;\nevents {}\n",
    "user root;\nuser root;\nevents {}\n",
    "events {}\nhttp { user root; }\n",
    "worker_rlimit_core lots;\nevents {}\n",
    "worker_rlimit_core -1;\nevents {}\n",
    "worker_rlimit_core 1m;\nworker_rlimit_core 1m;\nevents {}\n",
    "working_directory;\nevents {}\n",
    "working_directory /a /b;\nevents {}\n",
])
def test_errors_as_nginx(tmp_path, text):
    expected = nginx_t(tmp_path, text)
    got = ngxws_t(tmp_path, text)
    if expected is None:
        # nginx accepts it (a system with a "nobody" group): ngxws too, unless this Python is
        # closed to the user
        assert not isinstance(got, str) or got.startswith('user "nobody" cannot ')
    else:
        assert got == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="nginx reads `user` only as root")
def test_user_and_group(tmp_path):
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    core = ngxws_t(tmp_path, "user root;\nevents {}\n")
    assert core.user is None        # user root: nothing to switch to
    core = ngxws_t(tmp_path, "master_process off; user nobody %s;\nevents {}\n" % group)
    assert core.user is None        # one process, which stays who it is
    # with a readable Python the user is kept; this interpreter may not be, then the check says so
    result = ngxws_t(tmp_path, "user nobody %s;\nevents {}\n" % group)
    if isinstance(result, str):
        assert result.startswith('user "nobody" cannot ') and result.endswith("D/nginx.conf:1")
    else:
        assert result.user == User("nobody", pwd.getpwnam("nobody").pw_uid, grp.getgrnam(group).gr_gid)


def test_default_user_is_nginx_s():
    user = default_user()
    want = "nobody" if has_group("nobody") else "nogroup"
    assert user == User("nobody", pwd.getpwnam("nobody").pw_uid, grp.getgrnam(want).gr_gid)


def test_limits_and_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    core = ngxws_t(tmp_path, "worker_rlimit_core 500m; working_directory /var/cores;\nevents {}\n")
    assert core.worker_rlimit_core == 500 << 20 and core.working_directory == "/var/cores"
    core = ngxws_t(tmp_path, "events {}\n")
    assert core.worker_rlimit_core is None and core.working_directory is None and core.user is None


def test_user_ignored_with_a_warning_when_not_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    core = ngxws_t(tmp_path, "events {}\nuser nobody nosuchgroup;\n")
    assert core.user is None
    assert capsys.readouterr().err == (
        'ngxws: [warn] the "user" directive makes sense only if the master process runs with '
        'super-user privileges, ignored in %s/nginx.conf:2\n' % tmp_path)


# -- can the user read what a worker imports ------------------------------------------------------

def me():
    pw = pwd.getpwuid(os.getuid())
    return User(pw.pw_name, pw.pw_uid, pw.pw_gid)


def tree(tmp_path):
    lib = tmp_path / "opt" / "lib"
    (lib / "pkg").mkdir(parents=True)
    (lib / "pkg" / "__init__.py").write_text("")
    (lib / "mod.py").write_text("")
    return lib


def paths(lib):
    return [str(lib)], [str(lib / "pkg" / "__init__.py"), str(lib / "mod.py")]


def test_readable_tree_passes(tmp_path):
    lib = tree(tmp_path)
    assert unreadable_python(me(), paths(lib)) is None


def test_closed_directory_on_the_way(tmp_path):
    lib = tree(tmp_path)
    opt = tmp_path / "opt"
    opt.chmod(0o600)       # read, no search
    try:
        problem = unreadable_python(me(), paths(lib))
    finally:
        opt.chmod(0o755)
    assert problem.startswith('user "%s" cannot search "%s" (on the way to "%s")' % (me().name, opt, lib))
    assert 'or use "user root;"' in problem


def test_unreadable_module_file(tmp_path):
    lib = tree(tmp_path)
    (lib / "mod.py").chmod(0o200)
    problem = unreadable_python(me(), paths(lib))
    assert problem.startswith('user "%s" cannot read "%s",' % (me().name, lib / "mod.py"))


def test_unlistable_package_directory(tmp_path):
    lib = tree(tmp_path)
    (lib / "pkg").chmod(0o300)    # search, no read: a lazy submodule import cannot list it
    try:
        problem = unreadable_python(me(), paths(lib))
    finally:
        (lib / "pkg").chmod(0o755)
    assert problem.startswith('user "%s" cannot read "%s",' % (me().name, lib / "pkg"))


def test_owner_bits_decide_for_the_owner(tmp_path):
    # as the kernel does: the owner gets the owner's bits even when others' would allow more
    lib = tree(tmp_path)
    (lib / "mod.py").chmod(0o044)
    problem = unreadable_python(me(), paths(lib))
    assert problem is not None and '"%s"' % (lib / "mod.py") in problem


@pytest.fixture
def open_dir():
    """A directory every user can reach (tmp_path's parents are closed to others)."""
    path = tempfile.mkdtemp()
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def test_group_bits_for_a_member(open_dir):
    lib = tree(open_dir)
    (lib / "mod.py").chmod(0o040)
    other = User(me().name, me().uid + 1 if me().uid < 60000 else 1, me().gid)
    # not the owner, a member of the file's group (its primary group): the group's read bit
    assert unreadable_python(other, ([], [str(lib / "mod.py")])) is None
    (lib / "mod.py").chmod(0o004)
    assert unreadable_python(other, ([], [str(lib / "mod.py")])) is not None


def test_symlinked_directory_checks_its_target(tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir()
    (closed / "real").mkdir()
    link = tmp_path / "link"
    link.symlink_to(closed / "real")
    closed.chmod(0o600)
    try:
        problem = unreadable_python(me(), ([str(link)], []))
    finally:
        closed.chmod(0o755)
    assert problem is not None and 'cannot search "%s"' % closed in problem


def test_missing_paths_are_not_problems(tmp_path):
    assert unreadable_python(me(), ([str(tmp_path / "gone")], [str(tmp_path / "gone.py")])) is None


def test_this_interpreter_is_judged(monkeypatch):
    # the default paths: the standard library and every loaded module's file, ngxws's included
    dirs, files = core_module._python_paths()
    assert any(os.path.isfile(os.path.join(d, "os.py")) for d in dirs)
    assert core_module.__file__ in files
    import wsproto
    assert os.path.abspath(wsproto.__file__) in files
