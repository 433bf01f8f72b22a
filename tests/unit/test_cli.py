import pytest

from ngxws.__main__ import UsageError, parse_args


def test_bundled_and_glued_flags():
    o = parse_args(["-tq", "-cfoo.conf", "-p", "/x/", "-g", "daemon off;"])
    assert o.test and o.quiet and o.conf_file == "foo.conf" and o.prefix == "/x/"
    assert o.directives == "daemon off;"


def test_signal_names():
    assert parse_args(["-s", "reload"]).signal == "reload"
    with pytest.raises(UsageError, match='invalid option: "-s restart"'):
        parse_args(["-s", "restart"])


def test_missing_value():
    with pytest.raises(UsageError, match='option "-c" requires file name'):
        parse_args(["-c"])


def test_V_prints_versions_from_metadata(capsys):
    import importlib.metadata
    import sys

    import ngxws
    from ngxws.__main__ import SHIPPED_PREFIX, main

    assert main(["-V"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    # nginx -V's first line, the version from its one place (setup.cfg reads ngxws.__version__)
    assert lines[0] == "ngxws version: ngxws/%s" % ngxws.__version__
    assert lines[1] == "built with Python %s (%s)" % (sys.version.split()[0], sys.executable)
    assert lines[2] == "frames by wsproto %s, HTTP by h11 %s" % (
        importlib.metadata.version("wsproto"), importlib.metadata.version("h11"))
    assert lines[3] == "configure arguments: --prefix=<current directory> --conf-path=conf/nginx.conf"
    assert lines[4] == "shipped prefix: %s" % SHIPPED_PREFIX
    assert len(lines) == 5


def test_shipped_prefix_is_the_clone_s_conf_and_html():
    """One copy of each file: the clone's conf/ and html/ link to the package's."""
    import os

    from ngxws.__main__ import SHIPPED_PREFIX

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for rel in ("conf/nginx.conf", "html/index.html"):
        assert os.path.islink(os.path.join(root, rel))
        assert os.path.samefile(os.path.join(root, rel), os.path.join(SHIPPED_PREFIX, rel))


def test_missing_default_config_says_where_and_how(tmp_path, monkeypatch, capsys):
    import shlex
    import subprocess

    from ngxws.__main__ import SHIPPED_PREFIX, main

    monkeypatch.chdir(tmp_path)
    assert main(["-t"]) == 1
    lines = capsys.readouterr().err.splitlines()
    conf = tmp_path / "conf" / "nginx.conf"
    assert lines == [
        'ngxws: [emerg] open() "%s" failed (2: No such file or directory)' % conf,
        "ngxws: configuration file %s test failed" % conf,
        'ngxws: without -c FILE the configuration file is conf/nginx.conf in the prefix "%s/"'
        " (-p PREFIX, else the current directory)" % tmp_path,
        'ngxws: the default configuration and demo page are in "%s"; to start from them: cp -R %s %s/ && '
        "mkdir -p %s/logs" % (SHIPPED_PREFIX, shlex.quote(SHIPPED_PREFIX + "/."), tmp_path, tmp_path),
    ]
    # the command it gives makes a prefix that passes -t
    cmd = lines[-1].split("to start from them: ", 1)[1]
    assert subprocess.run(cmd, shell=True, timeout=30).returncode == 0
    assert main(["-t"]) == 0
    assert "test is successful" in capsys.readouterr().err
    # -p names the prefix; the hint names it too
    other = tmp_path / "other"
    other.mkdir()
    assert main(["-p", str(other), "-s", "reload"]) == 1
    assert 'in the prefix "%s/"' % other in capsys.readouterr().err


def test_missing_named_config_gives_no_hint(tmp_path, capsys):
    from ngxws.__main__ import main

    assert main(["-p", str(tmp_path), "-c", "x.conf", "-t"]) == 1
    assert "without -c FILE" not in capsys.readouterr().err


def test_s_opens_no_log_file(tmp_path, capsys):
    """nginx -s reads the config for the pid path only: no access log is created."""
    import os
    import signal

    from ngxws.__main__ import main

    conf = tmp_path / "nginx.conf"
    # (user root: as root, -t checks that the workers' user can read Python, which nobody
    # cannot under /root)
    conf.write_text("%spid %s/x.pid;\nerror_log %s/e.log;\nevents {}\nhttp { access_log %s/a.log; "
                    "server { listen 127.0.0.1:0; access_log %s/b.log; } }\n"
                    % ((("user root;\n" if os.geteuid() == 0 else ""),) + (tmp_path,) * 4))
    (tmp_path / "x.pid").write_text("%d\n" % os.getpid())
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *a: got.append(a[0]))
    try:
        assert main(["-p", str(tmp_path), "-c", str(conf), "-s", "reopen"]) == 0
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == [signal.SIGUSR1]
    assert sorted(os.listdir(tmp_path)) == ["nginx.conf", "x.pid"]
    # -t opens them, as nginx -t does (and so reports an unwritable log)
    assert main(["-p", str(tmp_path), "-c", str(conf), "-t"]) == 0
    assert {"a.log", "b.log"} <= set(os.listdir(tmp_path))
