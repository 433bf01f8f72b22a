"""The master process: forks workers, sleeps on signals, reloads, stops.

Theory of operation.  The master owns the listening sockets (opened by
``Cycle.build`` before any fork) and never touches a client.  It sleeps in
``sigtimedwait`` with every control signal blocked, so each signal is handled
in order, in the main flow, with the sender's pid.

Each worker gets a socketpair channel (nginx's ngx_channel, channel.py): the
master writes one command byte, ``Q`` (quit gracefully), ``W`` (retire after a
reload: stop accepting, keep WebSocket clients), ``T`` (terminate now) or
``R`` (reopen logs).  A signal is the fallback when the channel is gone.

The child's side of each fork is the ``worker_process_cycle`` the master is
given (``__main__`` passes worker.py's): the master and the worker both know
channel.py, and neither imports the other.

Reload: build the new cycle from the old; on ``ConfigError`` log ``emerg`` and
change nothing.  On success start the new workers first, then tell the old
ones to quit gracefully, so that some worker is always accepting.  Old workers
keep their WebSocket clients until those leave or worker_shutdown_timeout.

A worker that exits with EXIT_BOOT_FAILED could not start at all: the master
stops instead of respawning it in a loop (gunicorn's rule).
"""

import os
import signal
import socket
import time
import traceback

from . import signals
from .channel import CMD_QUIT, CMD_REOPEN, CMD_RETIRE, CMD_TERMINATE, EXIT_BOOT_FAILED
from .directives import ConfigError

#: how long a fast stop waits for workers before SIGKILL, seconds
TERMINATE_GRACE = 5.0


class Process:
    __slots__ = ("pid", "slot", "channel", "cycle", "exiting", "respawn", "started")

    def __init__(self, pid, slot, channel, cycle):
        self.pid = pid
        self.slot = slot
        self.channel = channel
        self.cycle = cycle
        #: told to quit; not respawned
        self.exiting = False
        self.respawn = True
        self.started = time.monotonic()


class Master:
    def __init__(self, cycle, build, write_pid, remove_pid, worker_process_cycle):
        self.cycle = cycle
        self.log = cycle.log
        #: build(old) -> new Cycle, raises ConfigError
        self.build = build
        self.write_pid = write_pid
        self.remove_pid = remove_pid
        #: worker_process_cycle(cycle, slot, channel) -> exit status, run in each forked child
        self.worker_process_cycle = worker_process_cycle
        self.processes = {}
        self.quitting = False
        self.terminating = False
        self.terminate_deadline = None
        self.halted = False

    # -- spawning --------------------------------------------------------------

    def free_slot(self):
        used = {p.slot for p in self.processes.values()}
        slot = 0
        while slot in used:
            slot += 1
        return slot

    def start_workers(self, cycle):
        self.log.notice("start worker processes")
        n = cycle.conf("core").worker_processes
        for _ in range(n):
            self.spawn(cycle, self.free_slot())

    def spawn(self, cycle, slot):
        parent, child = socket.socketpair()
        parent.set_inheritable(False)
        pid = os.fork()
        if pid == 0:
            code = EXIT_BOOT_FAILED
            try:
                parent.close()
                for p in self.processes.values():
                    p.channel.close()
                signals.unblock_all()
                code = self.worker_process_cycle(cycle, slot, child)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                # the log's writes never raise: a full disk loses the line, not the exit code
                cycle.log.alert("worker process failed: %s", traceback.format_exc().rstrip())
                code = EXIT_BOOT_FAILED
            finally:
                os._exit(code)
        child.close()
        parent.setblocking(False)
        self.processes[pid] = Process(pid, slot, parent, cycle)
        self.log.notice("start worker process %d", pid)
        return pid

    # -- talking to workers ------------------------------------------------------

    def command(self, proc, cmd, fallback):
        try:
            proc.channel.send(cmd)
            return
        except OSError:
            pass
        try:
            os.kill(proc.pid, fallback)
        except ProcessLookupError:
            return

    def signal_workers(self, cmd, fallback, only=None):
        for p in list(self.processes.values()):
            if only is not None and not only(p):
                continue
            if cmd in (CMD_QUIT, CMD_RETIRE, CMD_TERMINATE):
                p.exiting = True
                p.respawn = False
            self.command(p, cmd, fallback)

    # -- the loop -------------------------------------------------------------

    def run(self):
        signals.block_master_signals()
        self.start_workers(self.cycle)
        self.write_pid()
        try:
            while True:
                timeout = 1.0
                if self.terminate_deadline is not None:
                    timeout = max(0.01, min(timeout, self.terminate_deadline - time.monotonic()))
                info = signal.sigtimedwait(signals.MASTER_SIGNALS, timeout)
                if info is not None:
                    self.on_signal(info.si_signo, info.si_pid)
                self.reap()
                if self.terminate_deadline is not None and time.monotonic() >= self.terminate_deadline:
                    for p in self.processes.values():
                        self.log.alert("worker process %d did not exit in time, sending SIGKILL", p.pid)
                        try:
                            os.kill(p.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            continue
                    self.terminate_deadline = time.monotonic() + TERMINATE_GRACE
                if (self.quitting or self.terminating or self.halted) and not self.processes:
                    break
        finally:
            self.remove_pid()
            self.log.notice("exit")
        return 1 if self.halted else 0

    def on_signal(self, signo, sender):
        action = signals.MASTER_ACTIONS.get(signo, "")
        name = signals.signal_name(signo)
        if action:
            self.log.notice("signal %d (%s) received from %d, %s", signo, name, sender, action)
        else:
            self.log.notice("signal %d (%s) received from %d", signo, name, sender)
        if signo == signal.SIGCHLD:
            return
        if signo in (signal.SIGTERM, signal.SIGINT):
            self.stop(graceful=False)
        elif signo == signal.SIGQUIT:
            self.stop(graceful=True)
        elif signo == signal.SIGHUP:
            if not (self.quitting or self.terminating):
                self.reload()
        elif signo == signal.SIGUSR1:
            user = self.cycle.conf("core").user
            self.cycle.reopen_files(user.uid if user is not None else None)
            self.signal_workers(CMD_REOPEN, signal.SIGUSR1)
        elif signo == signal.SIGWINCH:
            self.signal_workers(CMD_RETIRE, signal.SIGWINCH)

    def stop(self, graceful):
        if graceful:
            self.quitting = True
            self.signal_workers(CMD_QUIT, signal.SIGQUIT)
        else:
            self.terminating = True
            self.signal_workers(CMD_TERMINATE, signal.SIGTERM)
            if self.terminate_deadline is None:
                self.terminate_deadline = time.monotonic() + TERMINATE_GRACE
        self.close_listening()

    def close_listening(self):
        # The master keeps no socket a client could still reach once it stops.
        for ls in self.cycle.listening:
            ls.close()

    def reload(self):
        old = self.cycle
        try:
            new = self.build(old)
        except ConfigError as e:
            self.log.emerg("%s", e)
            return
        except Exception:
            self.log.alert("reload failed: %s", traceback.format_exc().rstrip())
            return
        self.cycle = new
        self.log = new.log
        self.log.notice("reconfiguring")
        old_procs = [p for p in self.processes.values() if not p.exiting]
        self.start_workers(new)
        for p in old_procs:
            p.exiting = True
            p.respawn = False
            self.command(p, CMD_RETIRE, signal.SIGWINCH)
        new.release_old(old)

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.processes.pop(pid, None)
            if os.WIFSIGNALED(status):
                self.log.alert("worker process %d exited on signal %d", pid, os.WTERMSIG(status))
                code = None
            else:
                code = os.WEXITSTATUS(status)
                if code == 0:
                    self.log.notice("worker process %d exited with code %d", pid, code)
                else:
                    self.log.alert("worker process %d exited with code %d", pid, code)
            if proc is None:
                continue
            proc.channel.close()
            if code == EXIT_BOOT_FAILED and not proc.exiting:
                self.log.emerg("worker process %d could not start, exiting", pid)
                self.halted = True
                self.stop(graceful=False)
                continue
            if proc.respawn and not (self.quitting or self.terminating or self.halted):
                self.spawn(proc.cycle if proc.cycle is self.cycle else self.cycle, proc.slot)
