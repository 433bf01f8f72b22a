"""The cycle: one parsed configuration with everything it opened.

nginx's ``ngx_init_cycle(old)`` in small.  ``Cycle.build`` reads the config,
runs every module's conf hooks, opens the log files and the listening sockets,
and returns a new cycle.  It either succeeds whole or raises ``ConfigError``
having closed whatever it opened, so that on reload a broken config leaves the
running cycle exactly as it was.

Listening sockets that the old cycle already has for the same address are
taken over, not reopened: that is what lets a reload keep every port and never
refuse a connection.
"""

import errno
import multiprocessing

from .directives import ConfigError, ConfSet, Ctx, Parser, Slot
from .listening import Listening
from .log import ErrorLog, LogFile, ReopenError, StderrFile


class Cycle:
    def __init__(self, prefix, conf_file, modules, params=None):
        self.prefix = prefix
        self.conf_file = conf_file
        self.modules = modules
        #: -g text
        self.params = params
        self.confs = None
        self.log = None
        #: [Listening], opened in the master before fork
        self.listening = []
        #: [Listening] opened by this worker alone (``add_listening``), e.g. the push port
        self.worker_listening = []
        #: path -> LogFile, so that one path is opened once (error and access logs alike)
        self.open_files = {}
        #: set in a worker
        self.loop = None
        self.pool = None
        self.worker_slot = 0
        self.exiting = False
        #: the master asked for a stop (QUIT), not a retirement after a reload
        self.quitting = False
        self.connection_counter = None
        #: ``-s``: read the config, open nothing
        self.signaller = False

    # -- building ---------------------------------------------------------------

    @classmethod
    def build(cls, prefix, conf_file, modules, params=None, old=None, test_only=False, log=None,
              signaller=False):
        """Read and apply the config; raise ConfigError (everything closed) on failure.

        `log`: where the config's warnings go (the old cycle's log on reload); default stderr.
        `signaller` (``-s``): the config is read only for the pid file's path, and no log file
        is opened, as nginx's signal process: ``-s reopen`` must work when a log's directory
        is gone.
        """
        cycle = cls(prefix, conf_file, modules, params)
        cycle.signaller = signaller
        try:
            cycle._read_conf(log if log is not None else old.log if old is not None else None)
            if test_only:
                return cycle
            cycle._open_logs()
            cycle._open_listening(old)
            cycle.connection_counter = old.connection_counter if old is not None else \
                multiprocessing.Value("Q", 0, lock=True)
            for m in cycle.modules:
                m.init_module(cycle)
        except BaseException:
            cycle.close(keep_from=old)
            raise
        return cycle

    def _read_conf(self, log=None):
        cf = Parser(self.modules, self.prefix, self.conf_file, self)
        cf.log = log
        self.parser = cf
        confs = ConfSet()
        for m in self.modules:
            confs.set(m.name, Slot.MAIN, m.create_main_conf(cf))
        self.confs = confs
        if self.params:
            cf.handle(cf.parse_text(self.params, "command line"), Ctx.MAIN, confs)
        cf.handle(cf.parse_file(self.conf_file), Ctx.MAIN, confs)
        for m in self.modules:
            conf = confs.get(m.name, Slot.MAIN)
            if conf is not None:
                m.init_main_conf(cf, conf)

    def conf(self, module_name):
        """The main conf of a module."""
        return self.confs.get(module_name, Slot.MAIN)

    def _open_logs(self):
        core = self.conf("core")
        sinks = []
        for (path, level), (file, line) in zip(core.error_log, core.error_log_where):
            if path == "stderr":
                sinks.append((StderrFile(), level))
                continue
            try:
                f = self.open_file(path)
            except OSError as e:
                where = " in %s:%d" % (file, line) if file else ""
                raise ConfigError('open() "%s" failed (%d: %s)%s' % (path, e.errno, e.strerror, where)) from None
            sinks.append((f, level))
        self.log = ErrorLog(sinks)
        for f in self.open_files.values():
            # write errors of every file (access logs too) are said on this log
            f.log = self.log

    def open_file(self, path):
        """A log file opened once per path per cycle; reopened together on USR1."""
        f = self.open_files.get(path)
        if f is None:
            f = LogFile(path)
            if not self.signaller:
                f.open()
            self.open_files[path] = f
        return f

    def reopen_files(self, uid=None, worker=False):
        """USR1. The master passes the workers' `uid` (``user``): each file is given to that
        user, so that the workers, which reopen after the master, can open it too.

        A file that cannot be reopened keeps its old descriptor and is reported on the
        error log's other sinks (stderr when none is left). In a `worker`, a path that is
        gone (ENOENT) was the master's failure first, and the master said so: said once.
        """
        failed = []
        for f in self.open_files.values():
            try:
                f.reopen(uid)
            except ReopenError as e:
                if worker and e.errno == errno.ENOENT and e.call == "open":
                    continue
                if e.call == "chown":
                    msg = 'chown("%s", %d) failed (%d: %s)' % (f.path, uid, e.errno, e.strerror)
                else:
                    msg = '%s() "%s" failed (%d: %s)' % (e.call, f.path, e.errno, e.strerror)
                failed.append((f, msg))
        files = tuple(f for f, _ in failed)
        for _, msg in failed:
            self.log.report(files, msg)

    def add_listen(self, host, port, handler, servers, backlog=511, reuseport=False, ipv6only=True):
        """Config time: ask for a listening socket, opened in the master before fork."""
        ls = Listening(host, port, handler=handler, servers=servers, backlog=backlog,
                       reuseport=reuseport, ipv6only=ipv6only)
        self.listening.append(ls)
        return ls

    def _open_listening(self, old):
        taken = {}
        if old is not None:
            for ls in old.listening:
                if ls.sock is not None:
                    taken.setdefault((ls.host, ls.ports), ls)
        for ls in self.listening:
            prev = taken.pop((ls.host, ls.ports), None)
            if prev is not None and not ls.reuseport:
                # The same address in both configs: take the socket over.
                ls.sock = prev.sock
                ls.fd = prev.fd
                ls.port = prev.port
                ls.addr_text = prev.addr_text
                continue
            try:
                ls.open()
            except OSError as e:
                raise ConfigError(str(e)) from None
            self.log.notice("listening on %s", ls.addr_text)

    def next_connection_number(self):
        """nginx's ngx_connection_counter: unique across every worker of this master."""
        counter = self.connection_counter
        with counter.get_lock():
            counter.value += 1
            return counter.value

    # -- worker side -----------------------------------------------------------

    def add_listening(self, host, port, handler, servers, backlog=511):
        """The seed's ngx_listen.diff, made public: open a listening socket in THIS worker.

        Called from a module's ``init_process``, after fork.  The socket belongs
        to this worker alone (the WebSocket module's private push port); it is
        registered with this worker's loop at once.  ``port`` may be 0
        (ephemeral) or a "9000-9100" range.  Raises OSError with nginx's bind()
        wording in ``str()`` when no port can be had.
        """
        ls = Listening(host, port, handler=handler, servers=servers, backlog=backlog)
        ls.pool = self.pool
        ls.open()
        self.worker_listening.append(ls)
        self.loop.add_listening(ls)
        return ls

    # -- teardown ------------------------------------------------------------

    def close(self, keep_from=None):
        """Close what this cycle opened, except sockets shared with ``keep_from``."""
        keep = set()
        if keep_from is not None:
            keep = {id(ls.sock) for ls in keep_from.listening if ls.sock is not None}
        for ls in self.listening:
            if ls.sock is not None and id(ls.sock) not in keep:
                ls.close()
        for f in self.open_files.values():
            if keep_from is None or f.path not in keep_from.open_files or \
                    keep_from.open_files[f.path] is not f:
                f.close()

    def release_old(self, old):
        """After a successful reload: close the old cycle's sockets and files the new one does not use."""
        mine = {id(ls.sock) for ls in self.listening}
        for ls in old.listening:
            if ls.sock is not None and id(ls.sock) not in mine:
                ls.close()
        for f in old.open_files.values():
            if self.open_files.get(f.path) is not f:
                f.close()
