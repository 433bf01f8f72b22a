"""The module protocol: what nginx's ``ngx_module_t`` is to a C module.

Each module is an instance of a subclass, listed in order in ``ngxws/modules.py``.
The cycle calls the hooks; a module that has nothing to do at a hook inherits
the empty default.
"""


class Module:
    #: the module's name, the key of its confs in a ConfSet
    name = ""
    #: its directives, a tuple of ``Directive``
    DIRECTIVES = ()

    def create_main_conf(self, cf):
        """The conf that MAIN/EVENTS-context directives of this module fill."""
        return None

    def init_main_conf(self, cf, conf):
        """Fill defaults after the whole config was read; raise ConfigError to refuse it."""

    def init_module(self, cycle):
        """In the master, once the cycle is built and its sockets are open."""

    def init_process(self, cycle):
        """In a worker, after fork: ``cycle.loop`` exists."""

    def reopen(self, cycle):
        """USR1, in a worker, before the log files are reopened: flush what is buffered."""

    def shutdown(self, cycle, graceful):
        """The worker starts to stop; called once per phase, the return value is ignored.

        ``graceful=True``: stop taking new work, let work in flight finish, close
        what is idle.  ``cycle.quitting`` tells a stop (QUIT: WebSocket clients get
        a 1001 close handshake now) from an old worker retiring after a reload
        (clients stay until they leave).  ``graceful=False``: close what you hold
        now (worker_shutdown_timeout passed, or TERM).
        """

    def busy(self, cycle):
        """Cheap: True while this module holds something the worker must wait for."""
        return False

    def exit_process(self, cycle):
        """In a worker, just before it exits."""
