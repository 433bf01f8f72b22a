"""contrib/: the systemd unit, its config and the logrotate snippet, as an operator uses them.

There is no systemd running here (nor in CI), so the unit is checked three ways: its keys
against systemd's documented ones, ``systemd-analyze verify`` (which needs no running
systemd), and its command lines run as systemd would run them: ExecStartPre, ExecStart
with LimitNOFILE applied, each ExecReload in order with $MAINPID, KillSignal to the main
process alone (KillMode=mixed).  The paths of the layout (/opt/ngxws, /etc/ngxws,
/var/log/ngxws, /run/ngxws) are mapped into a temp dir; everything else runs as written.
logrotate runs for real on the snippet, with its own state file.
"""

import grp
import json
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import websocket  # websocket-client

from tests.helpers.server import ROOT, children_of, pid_alive, wait_for

CONTRIB = os.path.join(ROOT, "contrib")

# systemd.unit(5), systemd.service(5), systemd.exec(5), systemd.kill(5),
# systemd.resource-control(5) (systemd 252): the keys a unit like this one may use
KEYS = {
    "Unit": {"Description", "Documentation", "After", "Before", "Wants", "Requires", "BindsTo", "PartOf",
             "Conflicts", "ConditionPathExists", "AssertPathExists", "StartLimitIntervalSec",
             "StartLimitBurst"},
    "Service": {
        # systemd.service
        "Type", "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost",
        "PIDFile", "Restart", "RestartSec", "TimeoutStartSec", "TimeoutStopSec", "TimeoutSec",
        "RemainAfterExit", "GuessMainPID", "SuccessExitStatus", "RestartPreventExitStatus",
        "NotifyAccess", "WatchdogSec",
        # systemd.exec
        "User", "Group", "SupplementaryGroups", "DynamicUser", "WorkingDirectory", "RootDirectory",
        "Environment", "EnvironmentFile", "UMask", "RuntimeDirectory", "RuntimeDirectoryMode",
        "StateDirectory", "CacheDirectory", "LogsDirectory", "LogsDirectoryMode", "ConfigurationDirectory",
        "StandardInput", "StandardOutput", "StandardError", "SyslogIdentifier",
        "LimitNOFILE", "LimitCORE", "LimitNPROC", "LimitMEMLOCK",
        "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectSystem", "ProtectHome",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "ReadWritePaths",
        "ReadOnlyPaths", "CapabilityBoundingSet", "AmbientCapabilities", "RestrictAddressFamilies",
        "LockPersonality", "MemoryDenyWriteExecute", "RestrictRealtime", "SystemCallFilter",
        # systemd.kill
        "KillMode", "KillSignal", "RestartKillSignal", "SendSIGKILL", "SendSIGHUP", "FinalKillSignal",
        # systemd.resource-control
        "MemoryMax", "MemoryHigh", "TasksMax", "CPUQuota",
    },
    "Install": {"WantedBy", "RequiredBy", "Alias", "Also"},
}

# the unit's layout -> this test's temp dir
LAYOUT = ("/opt/ngxws/bin/ngxws", "/etc/ngxws/", "/var/log/ngxws", "/run/ngxws")


def parse_unit(text):
    """[(section, key, value)] of a unit file, in order (keys may repeat)."""
    out = []
    section = None
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, eq, value = line.partition("=")
        assert eq and section, "not a unit line: %r" % line
        out.append((section, key.strip(), value.strip()))
    return out


def unit_values(entries, key):
    return [v for s, k, v in entries if k == key]


def read(name):
    with open(os.path.join(CONTRIB, name)) as f:
        return f.read()


def test_unit_keys_are_systemd_s():
    entries = parse_unit(read("ngxws.service"))
    for section, key, _ in entries:
        assert section in KEYS, "unknown section [%s]" % section
        assert key in KEYS[section], "%s= is not a [%s] key of systemd's documentation" % (key, section)
    one = {k: unit_values(entries, k) for k in ("Type", "KillSignal", "KillMode", "LimitNOFILE", "ExecStart",
                                                 "ExecStartPre", "TimeoutStopSec")}
    for key, values in one.items():
        assert len(values) == 1, (key, values)
    # Type=exec with "daemon off" on the command line: the master is the main process
    assert one["Type"] == ["exec"] and not unit_values(entries, "PIDFile")
    assert "-g 'daemon off;'" in one["ExecStart"][0]
    assert one["KillSignal"] == ["SIGQUIT"] and one["KillMode"] == ["mixed"]
    assert one["LimitNOFILE"][0].isdigit()
    assert shlex.split(one["ExecStartPre"][0])[-2:] == ["-t", "-q"]
    reload = unit_values(entries, "ExecReload")
    assert shlex.split(reload[0])[-2:] == ["-t", "-q"] and reload[1] == "/bin/kill -s HUP $MAINPID"
    # the config the unit names tests clean with the unit's own -t (the test below runs it)
    assert one["ExecStart"][0].split() [:5] == ["/opt/ngxws/bin/ngxws", "-p", "/etc/ngxws/", "-c", "nginx.conf"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    """systemd's own parser: the unit with its ngxws path pointing at an executable."""
    ngxws = wrapper(tmp_path)
    unit = tmp_path / "ngxws.service"
    unit.write_text(read("ngxws.service").replace("/opt/ngxws/bin/ngxws", ngxws))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    # verify exits 0 on unknown keys and only warns: any output at all is a failure
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    # and it does see a bad line
    unit.write_text(read("ngxws.service").replace("/opt/ngxws/bin/ngxws", ngxws).replace(
        "KillMode=mixed", "KillMode=mixed\nKillSignall=SIGQUIT"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert "Unknown key" in r.stderr and "KillSignall" in r.stderr


# -- running the unit's command lines ---------------------------------------------------

def wrapper(tmp_path):
    """An executable ngxws of this tree, standing for the venv's /opt/ngxws/bin/ngxws."""
    path = tmp_path / "bin" / "ngxws"
    path.parent.mkdir(exist_ok=True)
    path.write_text('#!/bin/sh\nPYTHONPATH=%s exec %s -m ngxws "$@"\n' % (shlex.quote(ROOT),
                                                                         shlex.quote(sys.executable)))
    path.chmod(0o755)
    return str(path)


class Layout:
    """The unit's directories in a temp dir, as systemd (RuntimeDirectory=, LogsDirectory=) makes them."""

    def __init__(self, tmp_path):
        self.root = tmp_path
        self.ngxws = wrapper(tmp_path)
        self.etc = tmp_path / "etc"
        self.log = tmp_path / "log"
        self.run = tmp_path / "run"
        for d in (self.etc, self.log, self.run):
            d.mkdir()
        self.map = dict(zip(LAYOUT, (self.ngxws, str(self.etc) + "/", str(self.log), str(self.run))))
        self.conf = self.etc / "nginx.conf"
        self.conf.write_text(self.subst(read("nginx.conf"), {
            "listen 8080;": "listen 127.0.0.1:0;",
            "websocket_push_listen 127.0.0.1:9000-9099;": "websocket_push_listen 127.0.0.1:0;"}))
        if os.geteuid() == 0:
            # systemd starts the master as User=ngxws; run as root here, the workers would switch
            # to nobody, who cannot read a Python under /root (test_user.py covers that)
            self.conf.write_text("user root;\n" + self.conf.read_text())
        self.unit = parse_unit(self.subst(read("ngxws.service")))
        self.pid_path = self.run / "nginx.pid"
        self.proc = None

    def subst(self, text, extra=None):
        for old, new in self.map.items():
            text = text.replace(old, new)
        for old, new in (extra or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        # nothing of the layout is left unmapped
        assert not any(p in text for p in LAYOUT), text
        return text

    def argv(self, line, mainpid=None):
        # systemd's prefixes ("-" ignore failure, "@", "+", "!") are not used by the unit
        assert line[0] not in "-@+!:"
        if mainpid is not None:
            line = line.replace("$MAINPID", str(mainpid))
        assert "$" not in line
        return shlex.split(line)

    def run_line(self, key, index=0, mainpid=None):
        line = unit_values(self.unit, key)[index]
        return subprocess.run(self.argv(line, mainpid), capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def start(self):
        pre = self.run_line("ExecStartPre")
        assert pre.returncode == 0 and pre.stderr == "", pre.stderr       # -q: silent when fine
        limit = int(unit_values(self.unit, "LimitNOFILE")[0])
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # LimitNOFILE= sets both limits; this test may only lower the hard one
        self.nofile = min(limit, hard)

        def limits():
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

        self.stderr = open(self.root / "stderr.txt", "wb")
        self.proc = subprocess.Popen(self.argv(unit_values(self.unit, "ExecStart")[0]), stdin=subprocess.DEVNULL,
                                     stdout=self.stderr, stderr=self.stderr, preexec_fn=limits)
        wait_for(lambda: self.master_pid() or self.proc.poll() is not None, 20, what="pid file")
        assert self.proc.poll() is None, (self.root / "stderr.txt").read_text()
        # Type=exec: the process systemd started is the master that wrote the pid file
        assert self.master_pid() == self.proc.pid
        return self.proc.pid

    def master_pid(self):
        try:
            text = self.pid_path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def error_log(self):
        try:
            return (self.log / "error.log").read_text()
        except FileNotFoundError:
            return ""

    def port(self):
        m = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", self.error_log()), 10,
                     what="listening notice")
        return int(m.group(1))

    def stop(self):
        """KillSignal= to the main process alone (KillMode=mixed); the exit code."""
        sig = getattr(signal, unit_values(self.unit, "KillSignal")[0])
        os.kill(self.proc.pid, sig)
        timeout = int(unit_values(self.unit, "TimeoutStopSec")[0].rstrip("s"))
        return self.proc.wait(timeout)

    def kill_all(self):
        if self.proc is not None:
            self.stderr.close()
        if self.proc is not None and self.proc.poll() is None:
            for pid in children_of(self.proc.pid):
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def layout(tmp_path):
    lay = Layout(tmp_path)
    yield lay
    lay.kill_all()


def connect(port):
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws" % port, timeout=10)
    url = ws.recv()
    m = re.fullmatch(r"http://([A-Za-z0-9_-]{22,})@127\.0\.0\.1:(\d+)/ws", url)
    assert m, url
    return ws, "http://127.0.0.1:%s/ws?id=%s" % (m.group(2), m.group(1))


def push(url, body):
    with urllib.request.urlopen(urllib.request.Request(url, data=body.encode(), method="POST"), timeout=5) as r:
        return r.status


def close_code(ws):
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big")


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_unit_command_lines_start_reload_and_stop(layout):
    mainpid = layout.start()
    port = layout.port()
    first = set(wait_for(lambda: children_of(mainpid), 10, what="workers"))
    # worker_rlimit_nofile 65536 in contrib/nginx.conf; LimitNOFILE=65536 lets a worker have it.
    # Where the hard limit is lower (20,000 here, outside systemd), the worker says so and
    # keeps the hard limit: the case docs/deploy.md sizes for.
    for pid in first:
        with open("/proc/%d/limits" % pid) as f:
            got = int(re.search(r"Max open files\s+(\d+)", f.read()).group(1))
        assert got == min(65536, layout.nofile)
    alerts = re.findall(r"\[alert\] .*", layout.error_log())
    if layout.nofile < 65536:
        assert alerts and all("setrlimit(RLIMIT_NOFILE, 65536) failed (1: Operation not permitted)" in a
                              for a in alerts), alerts
    else:
        assert not alerts, alerts

    a, a_url = connect(port)
    try:
        assert push(a_url, "one") == 204 and a.recv() == "one"

        # systemctl reload with a broken config: the first ExecReload fails, no HUP is sent
        good = layout.conf.read_text()
        layout.conf.write_text(good.replace("websocket;", "websocket;\n lisen 1;"))
        bad = layout.run_line("ExecReload", 0, mainpid)
        assert bad.returncode == 1 and 'unknown directive "lisen"' in bad.stderr
        layout.conf.write_text(good)
        assert set(children_of(mainpid)) == first

        # systemctl reload: test, then HUP to $MAINPID
        for i in range(len(unit_values(layout.unit, "ExecReload"))):
            r = layout.run_line("ExecReload", i, mainpid)
            assert r.returncode == 0, r.stderr
        wait_for(lambda: len(set(children_of(mainpid)) - first) == len(first), 15, what="new workers")
        # the old workers have stopped accepting (one that took a connection just before its
        # turn would close it unanswered, as nginx's does): from here on new clients go to new ones
        wait_for(lambda: all("%d#%d: gracefully shutting down" % (p, p) in layout.error_log() for p in first), 15,
                 what="old workers retiring")
        # the old worker keeps its client: pushes still reach it; new clients go to new workers
        assert push(a_url, "two") == 204 and a.recv() == "two"
        b, b_url = connect(port)
        try:
            assert push(b_url, "three") == 204 and b.recv() == "three"
            # systemctl stop: QUIT to the master; clients get 1001, the master exits 0
            assert layout.stop() == 0
            assert close_code(b) == 1001
        finally:
            b.close()
    finally:
        a.close()
    assert not layout.pid_path.exists()
    assert "signal 3 (SIGQUIT) received" in layout.error_log()


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed")
def test_logrotate_snippet_rotates_and_ngxws_reopens(layout):
    layout.start()
    port = layout.port()
    wait_for(lambda: len(children_of(layout.proc.pid)) >= 1, 10, what="workers")
    assert get(port, "/before") == 404
    access = layout.log / "access.log"
    wait_for(lambda: access.exists() and b"/before" in access.read_bytes(), 10, what="first line")

    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    conf = layout.root / "logrotate.conf"
    conf.write_text(layout.subst(read("logrotate"), {"create 0640 ngxws ngxws": "create 0640 %s %s" % (me, group)}))
    state = layout.root / "logrotate.state"

    # --debug: a dry run that reads the snippet as logrotate will
    r = subprocess.run(["logrotate", "--debug", "--force", "--state", str(state), str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not re.search(r"^error", r.stderr, re.MULTILINE), r.stderr
    assert "rotating pattern: %s/*.log" % layout.log in r.stderr
    assert "running postrotate script" in r.stderr
    assert sorted(os.listdir(layout.log)) == ["access.log", "error.log"]

    r = subprocess.run(["logrotate", "--force", "--state", str(state), str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {"access.log", "access.log.1", "error.log", "error.log.1"} <= set(os.listdir(layout.log))
    assert b"/before" in (layout.log / "access.log.1").read_bytes()
    assert oct(access.stat().st_mode & 0o777) == "0o640"

    # the postrotate's ngxws -s reopen reached the master, which reopened its files, then
    # the workers theirs: poll with requests until one lands in the new file
    layout_error = layout.log / "error.log"
    wait_for(lambda: "reopening logs" in layout_error.read_text(), 10, what="the master's reopen notice")
    n = [0]

    def landed():
        n[0] += 1
        assert get(port, "/after-%d" % n[0]) == 404
        return b"/after-%d " % n[0] in access.read_bytes()
    wait_for(landed, 10, interval=0.05, what="a line in the new access log")
    assert get(port, "/final") == 404
    wait_for(lambda: b"/final " in access.read_bytes(), 10, what="the last line")
    old = (layout.log / "access.log.1").read_bytes()
    assert b"/final" not in old
    # the new file holds whole JSON lines of contrib/nginx.conf's format
    for line in access.read_bytes().splitlines():
        assert json.loads(line)["status"] == 404
    assert layout.stop() == 0
