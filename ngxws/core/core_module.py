"""The core and events modules: main-context and ``events { }`` directives.

Theory of operation (``user``)
------------------------------
Started as root, the master keeps root only to bind ports and open and reopen log files; each
worker switches to ``user`` (nginx's default ``nobody``, with the ``nobody`` group or else
``nogroup``) after fork: supplementary groups, group, user, in that order (``switch_user``).
Everything a worker needs from root is done before: the listening sockets and log files are
inherited, the rlimits raised, the push port bound (modules' ``init_process``). On USR1 the
master reopens the log files and gives them to that user, so that the workers can reopen them
in turn (nginx's ngx_reopen_files).

A Python worker keeps importing after it switched (modules are imported lazily), so the user
must be able to read the interpreter's standard library and every module loaded so far
(ngxws, wsproto, h11). ``unreadable_python`` checks that from the permission bits, as the kernel
would for that user, at config time (``-t``, start-up, reload): a Python under root's home
(pyenv) is refused in one ``[emerg]`` line instead of workers dying on their first lazy import.
"""

import grp
import os
import pwd
import resource
import sys
import sysconfig
from dataclasses import dataclass, field

from .directives import (
    UNSET, Args, ConfigError, Ctx, Directive, Slot, merge, set_flag, set_msec, set_num, set_path,
    set_size, set_str,
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
    worker_rlimit_core: object = UNSET
    worker_shutdown_timeout: object = UNSET
    working_directory: object = UNSET
    #: User(name, uid, gid) the workers switch to, or None: they stay who the master is
    user: object = UNSET
    #: (file, line) of the ``user`` directive, None for the default
    user_where: object = None
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


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


#: nginx's default user, and its default group (configure picks "nobody" if the group exists,
#: else "nogroup")
DEFAULT_USER = "nobody"
DEFAULT_GROUPS = ("nobody", "nogroup")


def _getpwnam(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ConfigError('getpwnam("%s") failed' % name) from None


def _getgrnam(name):
    try:
        return grp.getgrnam(name)
    except KeyError:
        raise ConfigError('getgrnam("%s") failed' % name) from None


def set_user(cf, node, conf):
    """``user USER [GROUP]``: nginx's ngx_set_user (GROUP defaults to the group named USER)."""
    if conf.user is not UNSET:
        raise ConfigError('"user" directive is duplicate')
    if os.geteuid() != 0:
        cf.warn(node, 'the "user" directive makes sense only if the master process runs with '
                      'super-user privileges, ignored')
        return
    name = node.args[0]
    pw = _getpwnam(name)
    group = _getgrnam(node.args[1] if len(node.args) == 2 else name)
    conf.user = User(name, pw.pw_uid, group.gr_gid)
    conf.user_where = (node.file, node.line)


def default_user():
    """nginx's default when the master runs as root: nobody, group nobody or nogroup."""
    pw = _getpwnam(DEFAULT_USER)
    for name in DEFAULT_GROUPS:
        try:
            return User(DEFAULT_USER, pw.pw_uid, grp.getgrnam(name).gr_gid)
        except KeyError:
            continue
    raise ConfigError('getgrnam("%s") failed' % DEFAULT_GROUPS[0])


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
    if spec.endswith(".so") or ".so." in spec:
        raise ConfigError('load_module "%s": ngxws loads Python modules only, not shared objects: '
                          'write "package.module:Class"' % spec)
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
        Directive("worker_rlimit_core", Ctx.MAIN, Args.TAKE1, set_size("worker_rlimit_core")),
        Directive("worker_shutdown_timeout", Ctx.MAIN, Args.TAKE1, set_msec("worker_shutdown_timeout")),
        Directive("working_directory", Ctx.MAIN, Args.TAKE1, set_str("working_directory")),
        Directive("user", Ctx.MAIN, Args.TAKE12, set_user),
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
              worker_rlimit_core=None, worker_shutdown_timeout=None, working_directory=None)
        if conf.user is UNSET:
            conf.user = default_user() if os.geteuid() == 0 else None
        if conf.user is not None and (conf.user.uid == 0 or not conf.master_process):
            # "user root": nothing to switch to, nothing to check (nginx calls setuid(0));
            # master_process off: one process that stays who it is, as nginx's single mode
            conf.user = None
        if conf.user is not None and not getattr(cf.cycle, "signaller", False):
            # (-s starts no worker)
            problem = unreadable_python(conf.user)
            if problem is not None:
                file, line = conf.user_where or (None, None)
                raise ConfigError(problem, file, line)
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


# -- the worker's user ------------------------------------------------------------------------

def _allowed(st, uid, gids, bits):
    """The kernel's permission check for a user without capabilities (owner, group, other)."""
    if st.st_uid == uid:
        mode = st.st_mode >> 6
    elif st.st_gid in gids:
        mode = st.st_mode >> 3
    else:
        mode = st.st_mode
    return mode & bits == bits


def _python_paths():
    """What a worker may still import from: the standard library (sources and extension
    modules) and the file of every module loaded so far (ngxws, wsproto, h11...)."""
    stdlib = sysconfig.get_path("stdlib")
    platstdlib = sysconfig.get_path("platstdlib")
    dirs = [stdlib, platstdlib, os.path.join(platstdlib, "lib-dynload")]
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            files.add(os.path.abspath(path))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)], sorted(files)


def unreadable_python(user, paths=None):
    """None when `user` can read what a worker imports, else the ``[emerg]`` text saying
    which path stops it and what to do.

    Judged from the permission bits as the kernel would for that user (POSIX ACLs aside):
    search on every directory on the way, read (and search, for a directory) on the path.
    `paths`: (directories, files), for tests; by default those of this interpreter.
    """
    dirs, files = paths if paths is not None else _python_paths()
    gids = set(os.getgrouplist(user.name, user.gid))
    seen = {}

    def allowed(path, bits):
        key = (path, bits)
        ok = seen.get(key)
        if ok is None:
            try:
                st = os.stat(path)
            except OSError:
                ok = True       # not there (a frozen module's origin): nothing to read
            else:
                ok = _allowed(st, user.uid, gids, bits)
            seen[key] = ok
        return ok

    def blocker(path, last_bits):
        parts = path.split("/")
        for i in range(1, len(parts)):
            ancestor = "/".join(parts[:i]) or "/"
            if not allowed(ancestor, 1):
                return ancestor, "search"
        if not allowed(path, last_bits):
            return path, "read"
        return None

    checks = [(d, 5) for d in dirs]
    for f in files:
        checks.append((os.path.dirname(f), 5))
        checks.append((f, 4))
    for path, bits in checks:
        found = blocker(path, bits)
        if found is None:
            real = os.path.realpath(path)
            if real != path:
                found = blocker(real, bits)
        if found is not None:
            where, what = found
            return ('user "%s" cannot %s "%s"%s, and worker processes import Python modules after '
                    'switching to it: install Python and ngxws where "%s" can read them, or use '
                    '"user root;" (worker processes then keep root\'s privileges)'
                    % (user.name, what, where, "" if where == path else ' (on the way to "%s")' % path,
                       user.name))
    return None


def set_core_limit(log, size):
    """worker_rlimit_core, as nginx sets it: soft and hard limit alike."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (size, size))
    except (ValueError, OSError) as e:
        errno, text = (e.errno, e.strerror) if isinstance(e, OSError) and e.errno else \
            (1, "Operation not permitted")
        log.alert("setrlimit(RLIMIT_CORE, %d) failed (%d: %s)", size, errno, text)


def switch_user(log, user) -> bool:
    """Supplementary groups, group, user, with nginx's messages; False when the worker must
    not go on (a group or user it could not become)."""
    try:
        os.initgroups(user.name, user.gid)
    except OSError as e:
        log.emerg("initgroups(%s, %d) failed (%d: %s)", user.name, user.gid, e.errno, e.strerror)
        # nginx goes on with the master's supplementary groups (root's); the group alone here
        try:
            os.setgroups([user.gid])
        except OSError as e:
            log.emerg("setgroups(%d) failed (%d: %s)", user.gid, e.errno, e.strerror)
            return False
    try:
        os.setgid(user.gid)
    except OSError as e:
        log.emerg("setgid(%d) failed (%d: %s)", user.gid, e.errno, e.strerror)
        return False
    try:
        os.setuid(user.uid)
    except OSError as e:
        log.emerg("setuid(%d) failed (%d: %s)", user.uid, e.errno, e.strerror)
        return False
    if os.getresuid() != (user.uid,) * 3 or os.getresgid() != (user.gid,) * 3:
        log.emerg("user %s kept other ids: uid %s, gid %s", user.name, os.getresuid(), os.getresgid())
        return False
    return True


def set_dumpable(log):
    """prctl(PR_SET_DUMPABLE, 1): the kernel clears it when a process changes its user; cores
    (worker_rlimit_core) and a working_directory for them need it back."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 1, 0, 0, 0) == -1:      # PR_SET_DUMPABLE
        errno = ctypes.get_errno()
        log.alert("prctl(PR_SET_DUMPABLE) failed (%d: %s)", errno, os.strerror(errno))
