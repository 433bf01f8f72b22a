"""The signal table, as nginx's ``signals[]``.

The master blocks every signal it acts on and sleeps in ``sigtimedwait``: the
kernel hands it one signal at a time with the sender's pid, so nothing runs in
a handler at all and nginx's ``signal 1 (SIGHUP) received from 99`` can be
logged.  Workers use handlers that only set a flag, with ``set_wakeup_fd``
waking their loop.
"""

import signal

#: ngxws -s NAME -> signal, nginx's names
COMMANDS = {
    "stop": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "reopen": signal.SIGUSR1,
    "reload": signal.SIGHUP,
}

#: signal -> what the master says it is doing, nginx's words
MASTER_ACTIONS = {
    signal.SIGHUP: "reconfiguring",
    signal.SIGQUIT: "shutting down",
    signal.SIGTERM: "exiting",
    signal.SIGINT: "exiting",
    signal.SIGUSR1: "reopening logs",
    signal.SIGWINCH: "gracefully shutting down workers",
    signal.SIGCHLD: "",
}

MASTER_SIGNALS = frozenset(MASTER_ACTIONS) | {signal.SIGUSR2, signal.SIGALRM, signal.SIGIO}


def signal_name(signo):
    try:
        return signal.Signals(signo).name
    except ValueError:
        return "SIG%d" % signo


def block_master_signals():
    signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)


def unblock_all():
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
