"""The error log, in nginx's format and with nginx's eight levels.

A line reads ``2026/11/25 20:31:00 [notice] 1234#1234: *5 message, client: 127.0.0.1``.
Lines are written with one ``os.write`` each, unbuffered, as nginx does, so that a
worker that dies leaves every line it wrote behind.  Before the configuration is
read (and for ``-t``) messages go to stderr as ``ngxws: [emerg] message``.

Formatting costs more than anything else here, so callers on hot paths test
``log.debug_enabled`` (or compare ``log.level``) before building arguments.

A log file that cannot be written (a full disk) never raises: the line is lost, and the
file says so at most once a minute per process (nginx's rule for access logs), as an
``alert`` on the error log's other sinks, or on stderr when none of them took it
(``ErrorLog.report``). A file that could not be reopened (its directory removed) keeps
its old descriptor and is reported the same way, once.
"""

import errno
import logging
import os
import stat
import sys
import time

EMERG, ALERT, CRIT, ERROR, WARN, NOTICE, INFO, DEBUG = range(1, 9)
LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
LEVEL_BY_NAME = {name: n for n, name in enumerate(LEVELS, 1)}

# nginx's levels as stdlib levels, so that anything that speaks `logging` can be
# pointed at them; ngxws itself writes through ErrorLog.
for _n, _name in enumerate(LEVELS, 1):
    logging.addLevelName(60 - _n * 5, _name)


class ReopenError(OSError):
    """A reopen that failed, with the call that did: "open", "fstat", "chown" or "chmod"."""

    def __init__(self, call, err):
        super().__init__(err.errno, err.strerror)
        self.call = call


#: how often a file that cannot be written says so, seconds
WRITE_ERROR_INTERVAL = 60
_monotonic = time.monotonic


class LogFile:
    """A file opened by path, append-only, that can be reopened (USR1)."""

    __slots__ = ("path", "fd", "log", "failing", "error_time")

    def __init__(self, path):
        self.path = path
        self.fd = -1
        #: the ErrorLog that hears about this file's write errors (None: stderr)
        self.log = None
        #: the last write did not go through
        self.failing = False
        #: monotonic time of the last report of a write error
        self.error_time = None

    def open(self):
        """Open the file; raise OSError with nginx's open() wording as the caller's text."""
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, data):
        try:
            n = os.write(self.fd, data)
        except OSError as e:
            # A full disk must not take the worker down, nor hold up what it serves.
            self._failed('write() to "%s" failed (%d: %s)' % (self.path, e.errno, e.strerror))
            return
        if n != len(data):
            self._failed('write() to "%s" was incomplete: %d of %d' % (self.path, n, len(data)))
        elif self.failing:
            self.failing = False

    def _failed(self, msg):
        self.failing = True
        now = _monotonic()
        if self.error_time is not None and now - self.error_time < WRITE_ERROR_INTERVAL:
            return
        self.error_time = now
        if self.log is not None:
            self.log.report((self,), msg)
        else:
            write_stderr(("%s [alert] %d#%d: %s\n" % (_clock.now(), os.getpid(), os.getpid(), msg))
                         .encode("utf-8", "backslashreplace"))

    def reopen(self, uid=None):
        """Open the path again and swap descriptors; on failure keep the old file.

        `uid` (the master, for workers that run as another user): the file is given to that
        user and made readable and writable by its owner, so that the workers can reopen it
        in turn (nginx's ngx_reopen_files). Raises ReopenError.
        """
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        give = uid is not None
        try:
            try:
                # A file is given away only when it is the directory's own: never a symlink's
                # target, or whoever may write the log directory (the workers' user, say) could
                # have the master hand it any file of the system.
                fd = os.open(self.path, flags | (os.O_NOFOLLOW if give else 0), 0o644)
            except OSError as e:
                if not give or e.errno != errno.ELOOP:
                    raise
                give = False
                fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise ReopenError("open", e) from None
        if give:
            call = "fstat"
            try:
                st = os.fstat(fd)
                # a regular file with no other name (a hard link to another file is not ours)
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    if st.st_uid != uid:
                        call = "chown"
                        os.fchown(fd, uid, -1)
                    if st.st_mode & 0o600 != 0o600:
                        call = "chmod"
                        os.fchmod(fd, st.st_mode | 0o600)
            except OSError as e:
                os.close(fd)
                raise ReopenError(call, e) from None
        old, self.fd = self.fd, fd
        if old >= 0:
            os.close(old)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_stderr(data):
    """True when stderr took `data` whole."""
    try:
        return os.write(2, data) == len(data)
    except OSError:
        return False


class StderrFile:
    """stderr as a log file: never reopened, never closed."""

    __slots__ = ("path", "failing")

    def __init__(self):
        self.path = "stderr"
        #: nowhere to report its own errors: a line stderr did not take is lost
        self.failing = False

    def open(self):
        pass

    def write(self, data):
        self.failing = not write_stderr(data)

    def reopen(self, uid=None):
        pass

    def close(self):
        pass


class _Clock:
    """nginx's cached log time: formatted once per second, not per line."""

    __slots__ = ("sec", "text")

    def __init__(self):
        self.sec = -1
        self.text = ""

    def now(self):
        sec = int(time.time())
        if sec != self.sec:
            self.sec = sec
            self.text = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(sec))
        return self.text


_clock = _Clock()


class _Levels:
    """One method per level, for both the error log and a connection's view of it."""

    __slots__ = ()

    def emerg(self, fmt, *args):
        self.log(EMERG, fmt, *args)

    def alert(self, fmt, *args):
        self.log(ALERT, fmt, *args)

    def crit(self, fmt, *args):
        self.log(CRIT, fmt, *args)

    def error(self, fmt, *args):
        self.log(ERROR, fmt, *args)

    def warn(self, fmt, *args):
        self.log(WARN, fmt, *args)

    def notice(self, fmt, *args):
        self.log(NOTICE, fmt, *args)

    def info(self, fmt, *args):
        self.log(INFO, fmt, *args)

    def debug(self, fmt, *args):
        if self.debug_enabled:
            self.log(DEBUG, fmt, *args)


class ErrorLog(_Levels):
    """One or more sinks, each with its own level, as several ``error_log`` lines give."""

    def __init__(self, sinks=None, startup=False):
        #: [(file, level)]; empty means stderr at ``error`` until a config says otherwise.
        self.sinks = sinks if sinks is not None else [(StderrFile(), ERROR)]
        #: before the config is read, lines are ``ngxws: [level] msg`` on stderr.
        self.startup = startup
        self.pid = os.getpid()
        self._update()

    def _update(self):
        self.level = max((lvl for _, lvl in self.sinks), default=0)
        self.debug_enabled = self.level >= DEBUG

    def set_pid(self):
        """Called after fork: lines carry the writing process's pid."""
        self.pid = os.getpid()

    def log(self, level, fmt, *args):
        if level > self.level:
            return
        self.emit(level, fmt % args if args else fmt)

    def emit(self, level, msg, force=False):
        """Write one formatted message; ``force`` (debug_connection) ignores the sinks' levels."""
        if self.startup:
            sys.stderr.write("ngxws: [%s] %s\n" % (LEVELS[level - 1], msg))
            sys.stderr.flush()
            return
        line = ("%s [%s] %d#%d: %s\n" % (_clock.now(), LEVELS[level - 1], self.pid, self.pid, msg)).encode(
            "utf-8", "backslashreplace")
        for f, lvl in self.sinks:
            if level <= lvl or force:
                f.write(line)

    def report(self, failed, msg):
        """An ``alert`` about the files in `failed` (that cannot be written, or reopened): to
        every other sink that takes alerts, and to stderr when none of them took it."""
        line = ("%s [alert] %d#%d: %s\n" % (_clock.now(), self.pid, self.pid, msg)).encode(
            "utf-8", "backslashreplace")
        told = False
        for f, lvl in self.sinks:
            if lvl < ALERT or f in failed:
                continue
            f.write(line)
            if not f.failing:
                told = True
        if not told:
            write_stderr(line)

    def reopen(self):
        for f, _ in self.sinks:
            try:
                f.reopen()
            except OSError as e:
                self.alert('reopen() "%s" failed (%d: %s)', f.path, e.errno, e.strerror)


class ConnectionLog(_Levels):
    """The error log as one connection sees it: ``*N`` before, context after.

    ``action`` is what the connection is doing ("reading client request line"),
    nginx's ``log->action``; ``context`` is an optional callable that returns the
    text after the client address (``, server: x, request: "GET / HTTP/1.1"``),
    set by the module that owns the connection (nginx's ``log->handler``).
    """

    __slots__ = ("error_log", "conn", "action", "context", "debug_enabled")

    def __init__(self, error_log, conn, debug=False):
        self.error_log = error_log
        self.conn = conn
        self.action = None
        self.context = None
        #: ``debug_connection`` matched this client: debug lines are written whatever the levels
        self.debug_enabled = debug or error_log.debug_enabled

    def log(self, level, fmt, *args):
        el = self.error_log
        if level > el.level and not (self.debug_enabled and level == DEBUG):
            return
        msg = fmt % args if args else fmt
        conn = self.conn
        tail = ""
        if self.action:
            tail = " while " + self.action
        client = getattr(conn, "addr_text", None)
        if client:
            tail += ", client: " + client
        if self.context is not None:
            tail += self.context()
        el.emit(level, "*%d %s%s" % (conn.number, msg, tail), force=level > el.level)

