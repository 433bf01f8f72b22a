"""A worker process: the loop, its signals, and its graceful exit.

Theory of operation.  After fork the worker builds its own EventLoop (the
selector is made here, never shared with the master), its ConnectionPool, and
starts accepting on the listening sockets it inherited.  Then every module's
``init_process`` runs (the WebSocket module opens its private push port
there), and the worker switches to the ``user`` of the config (core_module.py)
before its first loop iteration.  A failure before the first iteration is a
boot failure: the worker exits with EXIT_BOOT_FAILED and the master stops
rather than respawn it.

Commands reach it over its channel (one byte each) or as signals whose
handlers only set a flag and wake the loop through ``set_wakeup_fd``.

Graceful exit (QUIT, or an old worker after a reload): stop accepting, close
the listening sockets, ask each module to wind down (idle keep-alive
connections close, requests in flight finish, WebSocket clients stay until they
leave), and exit once no connection is left.  ``worker_shutdown_timeout``
bounds the wait; when it fires, modules close what they hold (WebSockets with
1001) and the rest is closed outright.
"""

import gc
import ipaddress
import os
import signal
import socket

from .channel import CMD_QUIT, CMD_REOPEN, CMD_RETIRE, CMD_TERMINATE, EXIT_BOOT_FAILED
from .connection import Connection, ConnectionPool
from .core_module import raise_nofile, set_core_limit, set_dumpable, switch_user
from .log import ConnectionLog
from .loop import Event, EventLoop


#: after worker_shutdown_timeout, how long peers get to answer a close before the worker exits, ms
CLOSE_WAIT_MS = 3000


class _Channel:
    """A socket the loop reads that is not a client connection (channel, wakeup fd)."""

    __slots__ = ("sock", "fd", "read", "write", "closed", "log")

    def __init__(self, sock, handler, log):
        self.sock = sock
        self.fd = sock.fileno()
        self.read = Event(handler, self)
        self.write = Event(None, self, True)
        self.closed = False
        self.log = log


class Worker:
    def __init__(self, cycle, slot, channel):
        self.cycle = cycle
        self.slot = slot
        self.log = cycle.log
        self.channel_sock = channel
        self.quit = False
        #: retire after a reload: like quit, but WebSocket clients stay
        self.retire = False
        self.terminate = False
        self.reopen = False
        self.shutting_down = False
        self.shutdown_timer = None
        #: set once modules were told to close what they hold; the deadline (ms) for their peers
        self.closing_deadline = None

    # -- signals and channel -------------------------------------------------------

    def _on_signal(self, signo, frame):
        if signo == signal.SIGQUIT:
            self.quit = True
        elif signo == signal.SIGWINCH:
            self.retire = True
        elif signo in (signal.SIGTERM, signal.SIGINT):
            self.terminate = True
        elif signo == signal.SIGUSR1:
            self.reopen = True

    def channel_handler(self, ev):
        ch = ev.data
        try:
            data = ch.sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # The master is gone: nobody will ever tell us to stop. Exit gracefully.
            self.cycle.loop.update(ch, False, False)
            ch.closed = True
            self.quit = True
            return
        for cmd in data:
            cmd = bytes((cmd,))
            if cmd == CMD_QUIT:
                self.quit = True
            elif cmd == CMD_RETIRE:
                self.retire = True
            elif cmd == CMD_TERMINATE:
                self.terminate = True
            elif cmd == CMD_REOPEN:
                self.reopen = True

    def wakeup_handler(self, ev):
        try:
            while ev.data.sock.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            return

    # -- setup ------------------------------------------------------------

    def init(self):
        cycle = self.cycle
        log = self.log
        log.set_pid()
        cycle.worker_slot = self.slot
        core = cycle.conf("core")
        if core.worker_rlimit_nofile:
            raise_nofile(log, core.worker_rlimit_nofile)
        if core.worker_rlimit_core is not None:
            set_core_limit(log, core.worker_rlimit_core)
        events = cycle.conf("events")
        loop = EventLoop(log)
        cycle.loop = loop
        cycle.pool = ConnectionPool(loop, log, events.worker_connections, counter=cycle.next_connection_number,
                                    log_factory=connection_log_factory(events.debug_connection))

        for signo in (signal.SIGQUIT, signal.SIGWINCH, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(signo, self._on_signal)
        for signo in (signal.SIGHUP, signal.SIGUSR2):
            signal.signal(signo, signal.SIG_IGN)
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake = (wake_r, wake_w)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        loop.update(_Channel(wake_r, self.wakeup_handler, log), True, False)
        self.channel_sock.setblocking(False)
        loop.update(_Channel(self.channel_sock, self.channel_handler, log), True, False)

        for ls in cycle.listening:
            ls.pool = cycle.pool
            loop.add_listening(ls)
        for m in cycle.modules:
            m.init_process(cycle)
        self.drop_privileges(core)
        # Everything made so far lives as long as the worker: keep it out of the
        # cyclic collector's full passes, which otherwise walk it again and again.
        gc.freeze()

    def drop_privileges(self, core):
        """nginx's worker init, after the modules' init_process (so that a push port below
        1024 can still be bound) and before the first client byte is read: the user switch,
        then PR_SET_DUMPABLE and working_directory, which nginx does after it too. A failure
        is a boot failure, as in nginx (exit code 2, never respawned)."""
        log = self.log
        if core.user is not None and os.geteuid() == 0:
            if not switch_user(log, core.user):
                raise SystemExit(EXIT_BOOT_FAILED)
        if core.worker_rlimit_core is not None or core.working_directory:
            set_dumpable(log)
        if core.working_directory:
            try:
                os.chdir(core.working_directory)
            except OSError as e:
                log.alert('chdir("%s") failed (%d: %s)', core.working_directory, e.errno, e.strerror)
                raise SystemExit(EXIT_BOOT_FAILED) from None

    # -- the loop ---------------------------------------------------------

    def run(self):
        loop = self.cycle.loop
        while True:
            loop.run_once()
            if self.terminate:
                self.log.notice("exiting")
                self.close_now()
                break
            if (self.quit or self.retire) and not self.shutting_down:
                self.start_shutdown()
            elif self.quit and not self.cycle.quitting:
                # a retiring worker told to stop after all (master QUIT after a reload)
                self.cycle.quitting = True
                self.tell_modules(graceful=True)
            if self.reopen:
                self.reopen = False
                for m in self.cycle.modules:
                    m.reopen(self.cycle)
                # with a master, it reopened first and said what failed
                self.cycle.reopen_files(worker=self.cycle.conf("core").master_process)
                self.log.notice("reopening logs")
            if self.shutting_down and self.done():
                self.log.notice("exiting")
                break
        for m in self.cycle.modules:
            m.exit_process(self.cycle)
        self.log.notice("exit")
        return 0

    def tell_modules(self, graceful):
        for m in self.cycle.modules:
            m.shutdown(self.cycle, graceful)

    def start_shutdown(self):
        cycle = self.cycle
        self.shutting_down = True
        cycle.exiting = True
        cycle.quitting = self.quit
        cycle.loop.exiting = True
        self.log.notice("gracefully shutting down")
        for ls in cycle.listening:
            ls.close()
        self.tell_modules(graceful=True)
        timeout = cycle.conf("core").worker_shutdown_timeout
        if timeout:
            ev = Event(self.shutdown_timer_handler, self)
            self.shutdown_timer = ev
            cycle.loop.add_timer(ev, timeout)

    def shutdown_timer_handler(self, ev):
        self.log.notice("shutdown timeout")
        self.close_held()

    def close_held(self):
        """worker_shutdown_timeout passed: modules close what they hold (WebSockets: 1001),
        their peers get CLOSE_WAIT_MS to answer, then whatever is left is closed."""
        self.tell_modules(graceful=False)
        self.closing_deadline = self.cycle.loop.now_ms + CLOSE_WAIT_MS
        ev = Event(self.close_wait_handler, self)
        self.cycle.loop.add_timer(ev, CLOSE_WAIT_MS)

    def close_wait_handler(self, ev):
        self.close_connections()

    def close_now(self):
        """TERM: fast stop. Modules get one chance to say goodbye, then every connection closes."""
        self.tell_modules(graceful=False)
        self.close_connections()

    def close_connections(self):
        # Whatever the modules left: every connection the selector still watches.
        sel = self.cycle.loop.selector
        owners = [key.data for key in sel.get_map().values()] if sel is not None else []
        for conn in owners:
            if isinstance(conn, Connection) and not conn.closed:
                conn.close()

    def done(self):
        cycle = self.cycle
        if any(m.busy(cycle) for m in cycle.modules):
            return False
        if not cycle.quitting:
            # A retiring worker whose clients are all gone has nothing left to keep:
            # from here on it is a plain graceful stop (its push port closes too).
            cycle.quitting = True
            self.tell_modules(graceful=True)
        return cycle.pool.used == 0


def connection_log_factory(debug_connection):
    """nginx's debug_connection: debug lines for the listed clients only, decided at accept."""
    if not debug_connection:
        return ConnectionLog
    networks = [n for n in debug_connection if not isinstance(n, tuple)]
    unix = any(isinstance(n, tuple) for n in debug_connection)

    def factory(error_log, conn):
        peer = conn.peer
        if isinstance(peer, tuple) and peer:
            try:
                addr = ipaddress.ip_address(peer[0].split("%", 1)[0])
            except ValueError:
                addr = None
            debug = addr is not None and any(addr in n for n in networks if n.version == addr.version)
        else:
            debug = unix
        return ConnectionLog(error_log, conn, debug)

    return factory


def worker_process_cycle(cycle, slot, channel):
    worker = Worker(cycle, slot, channel)
    try:
        worker.init()
    except OSError as e:
        cycle.log.emerg("%s", e)
        return EXIT_BOOT_FAILED
    return worker.run()
