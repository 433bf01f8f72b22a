"""The master's channel to each worker (nginx's ngx_channel.h): what goes over it.

Each worker holds one end of a socketpair whose other end stays with the master.
The master writes one command byte per message; the worker reads them on its
loop and acts on each in order.  A signal is the master's fallback when the
channel is gone (see master.py).

The worker's exit status is the other way back: EXIT_BOOT_FAILED means the
worker could not start at all, and the master stops instead of respawning it.

This module stays sans-IO (tests/unit/test_layering.py): the socketpair and its
reads and writes belong to master.py and worker.py.
"""

#: quit gracefully: close listeners, let requests finish, close WebSocket clients with 1001
CMD_QUIT = b"Q"
#: an old worker after a reload: stop accepting, keep WebSocket clients until they leave
CMD_RETIRE = b"W"
#: terminate now
CMD_TERMINATE = b"T"
#: reopen the log files
CMD_REOPEN = b"R"

#: a worker's exit status when it failed before its first loop iteration
EXIT_BOOT_FAILED = 3
