"""The ngxws command line: nginx's flags, nginx's messages."""

import importlib.metadata
import os
import shlex
import sys

from . import NGINX_VER

#: the configuration file when -c gives none, relative to the prefix (nginx's NGX_CONF_PATH)
CONF_PATH = "conf/nginx.conf"
#: a prefix shipped inside the package: conf/nginx.conf and html/index.html, to copy
SHIPPED_PREFIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prefix")

USAGE = """Usage: ngxws [-?hvVtTq] [-s signal] [-p prefix]
             [-e filename] [-c filename] [-g directives]

Options:
  -?,-h         : this help
  -v            : show version and exit
  -V            : show version and configure options then exit
  -t            : test configuration and exit
  -T            : test configuration, dump it and exit
  -q            : suppress non-error messages during configuration testing
  -s signal     : send signal to a master process: stop, quit, reopen, reload
  -p prefix     : set prefix path (default: current directory)
  -e filename   : set error log file (default: logs/error.log)
  -c filename   : set configuration file (default: conf/nginx.conf)
  -g directives : set global directives out of configuration file
"""


class Options:
    def __init__(self):
        self.help = False
        self.version = False
        self.configure = False
        self.test = False
        self.dump = False
        self.quiet = False
        self.signal = None
        self.prefix = None
        self.error_log = None
        self.conf_file = None
        self.directives = None


class UsageError(Exception):
    pass


def parse_args(argv):
    """nginx's getopt: flags may be bundled (-tq), a value may be glued (-cFILE) or follow."""
    o = Options()
    i = 0
    takes_value = {"s": "signal", "p": "prefix", "e": "error_log", "c": "conf_file", "g": "directives"}
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            raise UsageError('invalid option: "%s"' % arg)
        j = 1
        while j < len(arg):
            ch = arg[j]
            j += 1
            if ch in "?h":
                o.help = True
            elif ch == "v":
                o.version = True
            elif ch == "V":
                o.version = o.configure = True
            elif ch == "t":
                o.test = True
            elif ch == "T":
                o.test = o.dump = True
            elif ch == "q":
                o.quiet = True
            elif ch in takes_value:
                if j < len(arg):
                    value = arg[j:]
                elif i < len(argv):
                    value = argv[i]
                    i += 1
                else:
                    raise UsageError('option "-%s" requires %s' % (
                        ch, {"s": "signal name", "p": "prefix path", "e": "file name", "c": "file name",
                             "g": "directives"}[ch]))
                if ch == "s" and value not in ("stop", "quit", "reopen", "reload"):
                    raise UsageError('invalid option: "-s %s"' % value)
                setattr(o, takes_value[ch], value)
                break
            else:
                raise UsageError('invalid option: "%s"' % arg[j - 1:] if j > 1 else arg)
    return o


def emerg(msg):
    sys.stderr.write("ngxws: [emerg] %s\n" % msg)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
    except UsageError as e:
        sys.stderr.write("ngxws: %s\n" % e)
        sys.stderr.write(USAGE)
        return 1
    if opts.version:
        sys.stderr.write("ngxws version: %s\n" % NGINX_VER)
        if opts.configure:
            sys.stderr.write(configure_text())
    if opts.help:
        sys.stderr.write(USAGE)
    if opts.version or opts.help:
        return 0

    # Imported here so that -h and -v work even where a module fails to import.
    from .core.cycle import Cycle
    from .core.directives import ConfigError
    from .modules import MODULES

    prefix = os.path.abspath(opts.prefix) if opts.prefix is not None else os.getcwd()
    conf_file = opts.conf_file or CONF_PATH
    conf_file = os.path.normpath(os.path.join(prefix, conf_file))
    # said after the [emerg] line of a failed build
    hint = missing_conf_text(prefix) if opts.conf_file is None and not os.path.exists(conf_file) else ""

    if opts.signal:
        rc = send_signal(prefix, conf_file, opts, MODULES, Cycle, ConfigError)
        if rc:
            sys.stderr.write(hint)
        return rc

    if opts.test:
        try:
            cycle = Cycle.build(prefix, conf_file, MODULES, params=opts.directives, test_only=True)
        except ConfigError as e:
            emerg(e)
            sys.stderr.write("ngxws: configuration file %s test failed\n" % conf_file)
            sys.stderr.write(hint)
            return 1
        if not opts.quiet:
            sys.stderr.write("ngxws: the configuration file %s syntax is ok\n" % conf_file)
            sys.stderr.write("ngxws: configuration file %s test is successful\n" % conf_file)
        if opts.dump:
            dump_config(cycle)
        return 0

    return run(prefix, conf_file, opts, MODULES, Cycle, ConfigError, hint)


def dist_version(name):
    """The installed version of a distribution, from its metadata."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def configure_text():
    """What -V prints after the version line, as nginx -V does."""
    return ("built with Python %s (%s)\n"
            "frames by wsproto %s, HTTP by h11 %s\n"
            "configure arguments: --prefix=<current directory> --conf-path=%s\n"
            "shipped prefix: %s\n" % (
                sys.version.split()[0], sys.executable, dist_version("wsproto"), dist_version("h11"),
                CONF_PATH, SHIPPED_PREFIX))


def missing_conf_text(prefix):
    """Where ngxws looked for its configuration, and how to start from the shipped one."""
    prefix = os.path.join(prefix, "")
    q = shlex.quote
    return ('ngxws: without -c FILE the configuration file is %s in the prefix "%s"'
            " (-p PREFIX, else the current directory)\n"
            'ngxws: the default configuration and demo page are in "%s"; to start from them: '
            "cp -R %s %s && mkdir -p %s\n" % (
                CONF_PATH, prefix, SHIPPED_PREFIX, q(os.path.join(SHIPPED_PREFIX, ".")), q(prefix),
                q(os.path.join(prefix, "logs"))))


def dump_config(cycle):
    out = sys.stdout
    for path in getattr(cycle.parser, "files_read", None) or [cycle.conf_file]:
        out.write("# configuration file %s:\n" % path)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        out.write(text)
        if not text.endswith("\n"):
            out.write("\n")
        out.write("\n")
    out.flush()


def read_pid(path):
    with open(path) as f:
        text = f.read().strip()
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def send_signal(prefix, conf_file, opts, modules, Cycle, ConfigError):
    try:
        cycle = Cycle.build(prefix, conf_file, modules, params=opts.directives, test_only=True,
                            signaller=True)
    except ConfigError as e:
        emerg(e)
        return 1
    pid_path = cycle.conf("core").pid
    try:
        pid = read_pid(pid_path)
    except OSError as e:
        sys.stderr.write('ngxws: [error] open() "%s" failed (%d: %s)\n' % (pid_path, e.errno, e.strerror))
        return 1
    except ValueError as e:
        sys.stderr.write('ngxws: [error] invalid PID number "%s" in "%s"\n' % (e, pid_path))
        return 1
    from .core.signals import COMMANDS
    signo = COMMANDS[opts.signal]
    try:
        os.kill(pid, signo)
    except OSError as e:
        sys.stderr.write("ngxws: [alert] kill(%d, %d) failed (%d: %s)\n" % (pid, signo, e.errno, e.strerror))
        return 1
    return 0


def daemonize(keep_stderr):
    """nginx's ngx_daemon: fork, the parent exits, the child leads a new session.

    stderr stays open only when the error log writes to it.
    """
    pid = os.fork()
    if pid:
        os._exit(0)
    os.setsid()
    os.umask(0o022)
    fd = os.open(os.devnull, os.O_RDWR)
    os.dup2(fd, 0)
    os.dup2(fd, 1)
    if not keep_stderr:
        os.dup2(fd, 2)
    if fd > 2:
        os.close(fd)


def run(prefix, conf_file, opts, modules, Cycle, ConfigError, hint=""):
    from .core.log import NOTICE, ErrorLog, LogFile, StderrFile
    from .core.master import Master
    from .core.worker import worker_process_cycle

    # The start-up log: -e FILE, else stderr, until the config names its own.
    startup_log = ErrorLog([(StderrFile(), NOTICE)], startup=True)
    if opts.error_log and opts.error_log != "stderr":
        f = LogFile(os.path.join(prefix, opts.error_log))
        try:
            f.open()
        except OSError as e:
            emerg('open() "%s" failed (%d: %s)' % (f.path, e.errno, e.strerror))
            return 1
        startup_log = ErrorLog([(f, NOTICE)])

    def build(old=None):
        return Cycle.build(prefix, conf_file, modules, params=opts.directives, old=old,
                           log=startup_log if old is None else None)

    try:
        cycle = build()
    except ConfigError as e:
        startup_log.emerg("%s", e)
        sys.stderr.write(hint)
        return 1

    core = cycle.conf("core")
    log = cycle.log
    log.notice('using the "epoll" event method')
    log.notice("%s", NGINX_VER)
    log.notice("built with Python %s", sys.version.split()[0])

    if core.daemon:
        daemonize(keep_stderr=any(path == "stderr" for path, _ in core.error_log))
        log.set_pid()

    pid_path = core.pid

    def write_pid():
        try:
            with open(pid_path, "w") as f:
                f.write("%d\n" % os.getpid())
        except OSError as e:
            log.emerg('open() "%s" failed (%d: %s)', pid_path, e.errno, e.strerror)

    def remove_pid():
        try:
            os.unlink(pid_path)
        except OSError as e:
            log.alert('unlink() "%s" failed (%d: %s)', pid_path, e.errno, e.strerror)

    if not core.master_process:
        from .core.single import single_process_cycle
        return single_process_cycle(cycle, write_pid, remove_pid)

    master = Master(cycle, build, write_pid, remove_pid, worker_process_cycle)
    return master.run()


if __name__ == "__main__":
    sys.exit(main())
