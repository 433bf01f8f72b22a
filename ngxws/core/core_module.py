"""The core and events modules: main-context and ``events { }`` directives."""

import os
import resource
from dataclasses import dataclass, field

from .directives import (
    UNSET, Args, ConfigError, Ctx, Directive, Slot, merge, set_flag, set_msec, set_num, set_path,
)
from .log import LEVEL_BY_NAME, ERROR
from .module import Module


@dataclass
class CoreConf:
    daemon: object = UNSET
    master_process: object = UNSET
    worker_processes: object = UNSET
    pid: object = UNSET
    worker_rlimit_nofile: object = UNSET
    worker_shutdown_timeout: object = UNSET
    #: [(path or "stderr", level)] in the order written
    error_log: list = field(default_factory=list)
    #: where error_log lines came from, for open() errors
    error_log_where: list = field(default_factory=list)
    events_seen: bool = False
    #: a block was read: nginx wants load_module before any
    modules_loaded_too_late: bool = False


@dataclass
class EventsConf:
    worker_connections: object = UNSET
    multi_accept: object = UNSET
    accept_mutex: object = UNSET
    use: object = UNSET
    #: [(network, prefixlen)] from debug_connection
    debug_connection: list = field(default_factory=list)


def set_worker_processes(cf, node, conf):
    if conf.worker_processes is not UNSET:
        raise ConfigError('"worker_processes" directive is duplicate')
    value = node.args[0]
    if value == "auto":
        conf.worker_processes = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        return
    if not value.isdigit():
        raise ConfigError('invalid value "%s" in "worker_processes" directive' % value)
    conf.worker_processes = int(value)


def set_error_log(cf, node, conf):
    path = node.args[0]
    if len(node.args) > 2:
        raise ConfigError('invalid number of arguments in "error_log" directive')
    level = ERROR
    if len(node.args) == 2:
        level = LEVEL_BY_NAME.get(node.args[1])
        if level is None:
            raise ConfigError('invalid log level "%s"' % node.args[1])
    if path != "stderr":
        path = cf.full_path(path)
    conf.error_log.append((path, level))
    conf.error_log_where.append((node.file, node.line))


def set_events(cf, node, conf):
    main = cf.confs
    if conf.events_seen:
        raise ConfigError('"events" directive is duplicate')
    conf.events_seen = True
    conf.modules_loaded_too_late = True
    cf.handle(node.children, Ctx.EVENTS, main)


def set_use(cf, node, conf):
    if node.args[0] not in ("epoll", "poll", "select"):
        raise ConfigError('invalid event type "%s"' % node.args[0])
    conf.use = node.args[0]


def set_debug_connection(cf, node, conf):
    import ipaddress
    value = node.args[0]
    try:
        if value == "unix:":
            conf.debug_connection.append(("unix", None))
        else:
            conf.debug_connection.append(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ConfigError('invalid parameter "%s"' % value) from None


def set_load_module(cf, node, conf):
    """nginx loads a shared object; ngxws imports ``package.module:Class`` and adds an instance."""
    import importlib

    spec = node.args[0]
    path, sep, name = spec.partition(":")
    if not sep or not path or not name:
        raise ConfigError('invalid module "%s", it must be "package.module:Class"' % spec)
    if conf.modules_loaded_too_late:
        raise ConfigError('"load_module" directive is specified too late')
    try:
        cls = getattr(importlib.import_module(path), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError('load_module "%s" failed (%s)' % (spec, e)) from None
    module = cls()
    if any(m.name == module.name for m in cf.modules):
        raise ConfigError('module "%s" is already loaded' % module.name)
    cf.add_module(module)
    cf.cycle.modules = cf.modules
    cf.confs.set(module.name, Slot.MAIN, module.create_main_conf(cf))


class CoreModule(Module):
    name = "core"
    DIRECTIVES = (
        Directive("daemon", Ctx.MAIN, Args.FLAG, set_flag("daemon")),
        Directive("master_process", Ctx.MAIN, Args.FLAG, set_flag("master_process")),
        Directive("worker_processes", Ctx.MAIN, Args.TAKE1, set_worker_processes),
        Directive("pid", Ctx.MAIN, Args.TAKE1, set_path("pid")),
        Directive("worker_rlimit_nofile", Ctx.MAIN, Args.TAKE1, set_num("worker_rlimit_nofile")),
        Directive("worker_shutdown_timeout", Ctx.MAIN, Args.TAKE1, set_msec("worker_shutdown_timeout")),
        Directive("error_log", Ctx.MAIN, Args.ONEMORE, set_error_log),
        Directive("events", Ctx.MAIN, Args.BLOCK | Args.NOARGS, set_events),
        Directive("load_module", Ctx.MAIN, Args.TAKE1, set_load_module),
    )

    def create_main_conf(self, cf):
        return CoreConf()

    def init_main_conf(self, cf, conf):
        if not conf.events_seen:
            raise ConfigError('no "events" section in configuration')
        merge(conf, None, daemon=True, master_process=True, worker_processes=1,
              pid=cf.full_path("logs/nginx.pid"), worker_rlimit_nofile=None,
              worker_shutdown_timeout=None)
        if not conf.error_log:
            conf.error_log.append((cf.full_path("logs/error.log"), ERROR))
            conf.error_log_where.append((None, None))


class EventsModule(Module):
    name = "events"
    DIRECTIVES = (
        Directive("worker_connections", Ctx.EVENTS, Args.TAKE1, set_num("worker_connections")),
        Directive("multi_accept", Ctx.EVENTS, Args.FLAG, set_flag("multi_accept")),
        Directive("accept_mutex", Ctx.EVENTS, Args.FLAG, set_flag("accept_mutex")),
        Directive("use", Ctx.EVENTS, Args.TAKE1, set_use),
        Directive("debug_connection", Ctx.EVENTS, Args.TAKE1, set_debug_connection),
    )

    def create_main_conf(self, cf):
        return EventsConf()

    def init_main_conf(self, cf, conf):
        merge(conf, None, worker_connections=512, multi_accept=False, accept_mutex=False, use="epoll")
        if conf.worker_connections < 1:
            raise ConfigError('"worker_connections" directive invalid value')


def raise_nofile(log, want):
    """Raise RLIMIT_NOFILE to ``want`` (worker_rlimit_nofile), like nginx's worker init."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError) as e:
        # ValueError: Python's own refusal to raise the hard limit; the kernel's would be EPERM
        errno, text = (e.errno, e.strerror) if isinstance(e, OSError) and e.errno else \
            (1, "Operation not permitted")
        log.alert("setrlimit(RLIMIT_NOFILE, %d) failed (%d: %s)", want, errno, text)
        # Get as close as the hard limit allows.
        if soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
            except (ValueError, OSError):
                return
