import os
import pwd
import re

import pytest

from ngxws.core import log as log_mod
from ngxws.core.cycle import Cycle
from ngxws.core.log import (
    ALERT, DEBUG, ERROR, INFO, WRITE_ERROR_INTERVAL, ConnectionLog, ErrorLog, LogFile,
)
from ngxws.modules import MODULES

from .fakes import MemorySink


class Conn:
    number = 7
    addr_text = "127.0.0.1"


def read(path):
    with open(path) as f:
        return f.read()


def test_line_format_and_levels(tmp_path):
    f = LogFile(str(tmp_path / "error.log"))
    f.open()
    log = ErrorLog([(f, INFO)])
    log.notice("signal %d (%s) received from %d, %s", 1, "SIGHUP", 99, "reconfiguring")
    log.debug("not written")
    text = read(f.path)
    assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[notice\] %d#%d: signal 1 \(SIGHUP\) received "
                        r"from 99, reconfiguring\n" % (os.getpid(), os.getpid()), text)
    assert not log.debug_enabled


def test_several_sinks_each_with_its_level(tmp_path):
    a, b = LogFile(str(tmp_path / "a")), LogFile(str(tmp_path / "b"))
    a.open()
    b.open()
    log = ErrorLog([(a, ALERT), (b, DEBUG)])
    log.error("e")
    log.debug("d")
    assert read(a.path) == ""
    assert "[error]" in read(b.path) and "[debug]" in read(b.path)
    assert log.debug_enabled


def test_connection_log_prefix_and_context(tmp_path):
    f = LogFile(str(tmp_path / "e"))
    f.open()
    log = ConnectionLog(ErrorLog([(f, ERROR)]), Conn())
    log.action = "reading client request line"
    log.context = lambda: ", server: example"
    log.error("client sent invalid request")
    assert read(f.path).endswith(": *7 client sent invalid request while reading client request line, "
                                 "client: 127.0.0.1, server: example\n")


def test_reopen_after_rotation(tmp_path):
    path = str(tmp_path / "e")
    f = LogFile(path)
    f.open()
    log = ErrorLog([(f, ERROR)])
    log.error("one")
    os.rename(path, path + ".1")
    log.reopen()
    log.error("two")
    assert "one" in read(path + ".1") and "two" not in read(path + ".1")
    assert "two" in read(path)


def test_debug_connection_forces_debug_for_one_connection(tmp_path):
    f = LogFile(str(tmp_path / "e"))
    f.open()
    el = ErrorLog([(f, ERROR)])
    quiet = ConnectionLog(el, Conn())
    loud = ConnectionLog(el, Conn(), debug=True)
    quiet.debug("not for this one")
    loud.debug("websocket ping sent")
    loud.info("info stays filtered")
    text = read(f.path)
    assert "not for this one" not in text and "info stays filtered" not in text
    assert "[debug]" in text and "*7 websocket ping sent, client: 127.0.0.1" in text


# -- a log that cannot be written ----------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def full(path="/dev/full"):
    """A LogFile on /dev/full: every write fails with ENOSPC, as on a full disk."""
    f = LogFile(path)
    f.open()
    return f


def test_write_error_reported_once_a_minute_on_the_other_sink(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(log_mod, "_monotonic", clock)
    bad = full()
    good = MemorySink()
    log = ErrorLog([(bad, ERROR), (good, ERROR)])
    bad.log = log
    for _ in range(100):
        log.error("lost")
        clock.now += 0.1
    alerts = [line for line in good.lines if "[alert]" in line]
    assert len(alerts) == 1
    assert alerts[0].endswith(': write() to "/dev/full" failed (28: No space left on device)\n')
    assert bad.failing
    assert sum("lost" in line for line in good.lines) == 100
    clock.now += WRITE_ERROR_INTERVAL
    log.error("lost again")
    assert len([line for line in good.lines if "[alert]" in line]) == 2


def test_write_error_of_an_access_log_goes_to_the_error_log(monkeypatch):
    monkeypatch.setattr(log_mod, "_monotonic", Clock())
    good = MemorySink()
    log = ErrorLog([(good, ERROR)])
    access = full()
    access.log = log
    for _ in range(10):
        access.write(b"a request\n")
    assert [line for line in good.lines if "[alert]" in line] == [
        line for line in good.lines if 'write() to "/dev/full" failed (28: ' in line]
    assert len(good.lines) == 1


def test_write_error_with_no_other_sink_goes_to_stderr(monkeypatch, capfd):
    monkeypatch.setattr(log_mod, "_monotonic", Clock())
    bad = full()
    log = ErrorLog([(bad, ERROR)])
    bad.log = log
    for _ in range(5):
        log.error("lost")
    err = capfd.readouterr().err
    assert err.count('[alert] %d#%d: write() to "/dev/full" failed (28: No space left on device)'
                     % (os.getpid(), os.getpid())) == 1


def test_a_file_that_recovers_is_not_failing(tmp_path, monkeypatch):
    monkeypatch.setattr(log_mod, "_monotonic", Clock())
    f = LogFile(str(tmp_path / "x"))
    f.open()
    real = f.fd
    f.fd = full().fd
    f.write(b"lost\n")
    assert f.failing
    f.fd = real
    f.write(b"kept\n")
    assert not f.failing and read(f.path) == "kept\n"


def cycle_with_logs(tmp_path, error_dir, access_dir):
    conf = tmp_path / "nginx.conf"
    conf.write_text("user root; events {}\nerror_log %s/error.log;\nhttp { access_log %s/access.log; }\n"
                    % (error_dir, access_dir))
    return Cycle.build(str(tmp_path) + "/", str(conf), MODULES)


def test_reopen_of_a_removed_directory_said_once(tmp_path, capfd):
    gone = tmp_path / "gone"
    gone.mkdir()
    (tmp_path / "logs").mkdir()
    cycle = cycle_with_logs(tmp_path, tmp_path / "logs", gone)
    try:
        os.rename(gone, tmp_path / "moved")
        cycle.reopen_files(worker=True)       # a worker: the master said it
        assert "failed" not in read(tmp_path / "logs" / "error.log")
        cycle.reopen_files()                  # the master
        text = read(tmp_path / "logs" / "error.log")
        assert text.count('[alert]') == 1
        assert 'open() "%s/access.log" failed (2: No such file or directory)' % gone in text
        # the old descriptor stays: lines go on (to the moved file)
        cycle.open_files[str(gone / "access.log")].write(b"still\n")
        assert read(tmp_path / "moved" / "access.log") == "still\n"
    finally:
        cycle.close()
    assert capfd.readouterr().err == ""


def test_reopen_failure_of_the_only_error_log_goes_to_stderr(tmp_path, capfd):
    gone = tmp_path / "gone"
    gone.mkdir()
    cycle = cycle_with_logs(tmp_path, gone, gone)
    try:
        os.rename(gone, tmp_path / "moved")
        cycle.reopen_files()
    finally:
        cycle.close()
    err = capfd.readouterr().err
    assert err.count("[alert]") == 2
    assert 'open() "%s/error.log" failed (2: No such file or directory)' % gone in err
    assert 'open() "%s/access.log" failed (2: No such file or directory)' % gone in err
    assert "[alert]" not in read(tmp_path / "moved" / "error.log")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_reopen_gives_the_file_to_the_workers_user(tmp_path):
    nobody = pwd.getpwnam("nobody").pw_uid
    path = tmp_path / "access.log"
    f = LogFile(str(path))
    f.open()
    os.rename(path, str(path) + ".1")
    f.reopen(nobody)
    st = os.stat(path)
    assert st.st_uid == nobody and st.st_mode & 0o600 == 0o600
    f.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_reopen_never_gives_away_a_symlinks_target_or_a_hard_link(tmp_path):
    # whoever may write the log directory could point the log at any file of the system
    nobody = pwd.getpwnam("nobody").pw_uid
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    logs = tmp_path / "logs"
    logs.mkdir()
    f = LogFile(str(logs / "error.log"))
    f.open()
    os.unlink(logs / "error.log")
    os.symlink(secret, logs / "error.log")
    f.reopen(nobody)
    assert os.stat(secret).st_uid == 0 and os.stat(secret).st_mode & 0o777 == 0o600
    os.unlink(logs / "error.log")
    os.link(secret, logs / "error.log")
    f.reopen(nobody)
    assert os.stat(secret).st_uid == 0
    f.close()
