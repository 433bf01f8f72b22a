"""What integration tests share: the real ``ngxws`` as a subprocess (`Server`), its config
(`make_conf`), bounded polling (`wait_for`) and process checks (`pid_alive`, `children_of`).

Every wait polls a condition with a bound; `Server.stop` and `Server.kill_all` stop what it
started by pid. The ``ngxws_server`` fixture (tests/integration/conftest.py) builds on these.
"""

import os
import re
import signal as _signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: what keeps a root master's workers root, in make_conf's first line (no line moves)
ROOT_USER_LINE = " user root;" if os.geteuid() == 0 else ""
#: the same as arguments, for configs without ``user`` of their own
ROOT_USER = ("-g", "user root;") if os.geteuid() == 0 else ()
_USER_RX = re.compile(r"(?m)(^|;)\s*user\s")


def user_args(conf_text):
    """ROOT_USER unless the config names its own user."""
    return () if _USER_RX.search(conf_text) else ROOT_USER


BASE_CONF = """\
daemon off;{user}
master_process {master};
worker_processes {workers};
pid {prefix}/ngxws.pid;
error_log {prefix}/error.log {level};
error_log {prefix}/notice.log notice;
{main}
events {{
    worker_connections {worker_connections};
}}
{http_block}
"""


def wait_for(cond, timeout=10.0, interval=0.01, what="condition"):
    """Poll ``cond()`` until it returns a true value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is not alive for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_of(pid):
    """Pids whose parent is ``pid`` (the workers of a master)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(name))
    return sorted(out)


class Server:
    def __init__(self, prefix, conf_text, conf_name="ngxws.conf", args=()):
        self.prefix = str(prefix)
        os.makedirs(os.path.join(self.prefix, "logs"), exist_ok=True)
        self.conf_path = os.path.join(self.prefix, conf_name)
        self.write_conf(conf_text)
        self.error_log = os.path.join(self.prefix, "error.log")
        self.pid_path = os.path.join(self.prefix, "ngxws.pid")
        self.args = list(args)
        self.proc = None
        self.allowed = []
        #: the interpreter, extra environment and preexec_fn the master is started with
        self.python = sys.executable
        self.env = {}
        self.preexec_fn = None
        #: None: ROOT_USER for a config without ``user``; () runs it as it is
        self.user_args = None

    def write_conf(self, text):
        with open(self.conf_path, "w") as f:
            f.write(text)

    # -- process -----------------------------------------------------------

    def command(self, *extra):
        users = self.user_args
        if users is None:
            with open(self.conf_path) as f:
                users = user_args(f.read())
        return [self.python, "-m", "ngxws", "-p", self.prefix + "/", "-c", self.conf_path, *users,
                *self.args, *extra]

    def start(self, wait=True):
        self.stdout = open(os.path.join(self.prefix, "stdout.txt"), "wb")
        self.stderr_path = os.path.join(self.prefix, "stderr.txt")
        self.stderr = open(self.stderr_path, "wb")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(self.env)
        self.proc = subprocess.Popen(self.command(), cwd=self.prefix, stdout=self.stdout, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL, env=env, preexec_fn=self.preexec_fn)
        if wait:
            wait_for(lambda: self.master_pid() or self.proc.poll() is not None, 15, what="pid file")
            if self.proc.poll() is not None:
                raise AssertionError("ngxws exited with %s: %s" % (self.proc.returncode, self.stderr_text()))
        return self

    def master_pid(self):
        try:
            with open(self.pid_path) as f:
                text = f.read().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    @property
    def pid(self):
        return self.proc.pid

    def workers(self):
        return children_of(self.proc.pid)

    def wait_workers(self, n, timeout=10):
        return wait_for(lambda: len(self.workers()) == n and self.workers(), timeout, what="%d workers" % n)

    def signal(self, signo):
        os.kill(self.proc.pid, signo)

    def stop(self, signo=_signal.SIGQUIT, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        workers = self.workers()
        try:
            os.kill(self.proc.pid, signo)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, _signal.SIGKILL)
            self.proc.wait(5)
        for pid in workers:
            if pid_alive(pid):
                os.kill(pid, _signal.SIGKILL)
        return self.proc.returncode

    def kill_all(self):
        if self.proc is None:
            return
        for pid in self.workers():
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    # -- reading what it said ------------------------------------------------

    def log_text(self):
        try:
            with open(self.error_log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stderr_text(self):
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (OSError, AttributeError):
            return ""

    def wait_log(self, pattern, timeout=10, count=1):
        rx = re.compile(pattern)
        return wait_for(lambda: len(rx.findall(self.log_text())) >= count, timeout, what="log /%s/" % pattern)

    def listening(self):
        """Addresses from the master's ``listening on`` notices, in order.

        Read from notice.log (the fixture's config always has one), so that a test may
        set its error.log to any level; error.log for a config of the test's own.
        """
        path = os.path.join(self.prefix, "notice.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            text = self.log_text()
        return re.findall(r"\[notice\] \d+#\d+: listening on (\S+)", text)

    def port(self, i=0):
        addrs = self.listening()
        return int(addrs[i].rsplit(":", 1)[1])

    def allow(self, pattern):
        """Declare an alert/crit/emerg line this test expects."""
        self.allowed.append(re.compile(pattern))

    def bad_lines(self):
        bad = []
        for line in self.log_text().splitlines():
            if re.search(r"\[(alert|crit|emerg)\]", line) and not any(p.search(line) for p in self.allowed):
                bad.append(line)
        return bad


def make_conf(prefix, http=None, main="", workers=1, level="info", worker_connections=1024, master="on",
              http_main="access_log off;", user=ROOT_USER_LINE):
    http_block = ""
    if http is not None:
        http_block = "http {\n    %s\n%s\n}\n" % (http_main, http)
    return BASE_CONF.format(prefix=prefix, main=main, workers=workers, level=level, master=master,
                            worker_connections=worker_connections, http_block=http_block, user=user)
