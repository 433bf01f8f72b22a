"""A test module for the worker-side listen API (the seed's ngx_listen.diff).

Loaded with ``load_module tests.integration.modules.probe:ProbeModule;``.  In each
worker, ``init_process`` opens a private port with ``cycle.add_listening`` and
logs it; a client that connects there reads ``worker PID\\n`` and is closed.
``probe_fail on;`` makes ``init_process`` fail, to test that the master halts.
"""

import os
from dataclasses import dataclass

from ngxws.core.directives import UNSET, Args, Ctx, Directive, merge, set_flag
from ngxws.core.module import Module


@dataclass
class ProbeConf:
    fail: object = UNSET


def probe_handler(conn):
    try:
        conn.sock.send(b"worker %d\n" % os.getpid())
    except OSError:
        pass
    conn.close()


class ProbeModule(Module):
    name = "probe"
    DIRECTIVES = (Directive("probe_fail", Ctx.MAIN, Args.FLAG, set_flag("fail")),)

    def create_main_conf(self, cf):
        return ProbeConf()

    def init_main_conf(self, cf, conf):
        merge(conf, None, fail=False)

    def init_process(self, cycle):
        if cycle.conf("probe").fail:
            raise OSError("probe: init_process failed on purpose")
        ls = cycle.add_listening("127.0.0.1", 0, probe_handler, None)
        cycle.log.notice("probe worker %d listening on %s", os.getpid(), ls.addr_text)
