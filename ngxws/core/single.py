"""``master_process off``: one process that is master and worker at once (nginx's single mode).

For debugging and tests.  QUIT, TERM/INT and USR1 behave as in a worker; a
reload needs a master, so HUP is logged and ignored.
"""

import socket

from .channel import EXIT_BOOT_FAILED
from .worker import Worker


def single_process_cycle(cycle, write_pid, remove_pid):
    ours, _theirs = socket.socketpair()
    worker = Worker(cycle, 0, ours)
    try:
        worker.init()
    except OSError as e:
        cycle.log.emerg("%s", e)
        return EXIT_BOOT_FAILED
    write_pid()
    try:
        return worker.run()
    finally:
        remove_pid()
