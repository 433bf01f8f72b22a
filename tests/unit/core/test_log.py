import os
import re

from ngxws.core.log import ALERT, DEBUG, ERROR, INFO, ConnectionLog, ErrorLog, LogFile


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
