"""Hosts in network namespaces for the fleet test (not a test module itself).

Every host is a network namespace on a private bridge that lives in a namespace of its own
(10.213.0.0/24, nothing in the root namespace), with a real `sshd` on its address and a DESTDIR
root on the shared filesystem. A *view* is how a process sees "its host": a private mount
namespace where /etc, /var/lib and /opt are overlays (nothing written to the real ones) with the
host root's etc/legion, var/lib/legion and opt/legion bound in, and a private /run. So a service
runs with exactly its unit's ExecStart paths, as the unit's user, without systemd.

A restricted host also has a read-only /home and no C compiler (each compiler is /bin/false).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.213.0"
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc")

# Runs as root inside `ip netns exec NS unshare -m --propagation private`; see the docstring.
VIEW_SCRIPT = r"""
set -e
mount -t tmpfs lmview "$VIEW"
if [ -n "$HOST_ROOT" ]; then
  for d in etc var/lib opt; do
    mkdir -p "$VIEW/up/$d" "$VIEW/wk/$d"
    mount -t overlay lmovl -o "lowerdir=/$d,upperdir=$VIEW/up/$d,workdir=$VIEW/wk/$d" "/$d"
  done
  for d in etc/legion var/lib/legion opt/legion; do
    if [ -d "$HOST_ROOT/$d" ]; then mkdir -p "/$d"; mount --bind "$HOST_ROOT/$d" "/$d"; fi
  done
fi
mount -t tmpfs lmrun /run
if [ -n "$RESTRICT" ]; then
  mount --bind /home /home && mount -o remount,bind,ro /home
  for c in $COMPILERS; do
    p=$(command -v "$c" || true)
    if [ -n "$p" ]; then mount --bind /bin/false "$(readlink -f "$p")"; fi
  done
fi
if [ -n "$MASK_DIR" ]; then
  # the unit's user must reach the venv's base Python under a 0700 directory (/root/.pyenv):
  # show only that child, through a 0711 stand-in
  mkdir -p "$VIEW/mask/$MASK_CHILD" && chmod 0711 "$VIEW/mask"
  mount --bind "$MASK_DIR/$MASK_CHILD" "$VIEW/mask/$MASK_CHILD"
  mount --rbind "$VIEW/mask" "$MASK_DIR"
fi
if [ -n "$RUN_USER" ]; then
  if [ -n "$RUNTIME_DIR" ]; then install -d -o "$RUN_USER" -m 0755 "/run/$RUNTIME_DIR"; fi
  umask "$RUN_UMASK"
  exec setpriv --reuid="$RUN_USER" --regid="$RUN_GROUP" --init-groups --inh-caps=-all -- "$@"
fi
exec "$@"
"""


@dataclass
class Host:
    """One host: its namespace, address and DESTDIR root."""

    name: str
    ns: str
    addr: str
    root: Path
    restricted: bool = False


@dataclass
class Unit:
    """What the fleet test takes from a rendered systemd unit."""

    exec_start: list[str]
    user: str
    group: str
    environment: dict[str, str]
    runtime_dir: str
    umask: str

    @classmethod
    def parse(cls, path: Path) -> Unit:
        """Read [Service] ExecStart, User, Group, Environment, RuntimeDirectory, UMask."""
        kv: dict[str, str] = {}
        env: dict[str, str] = {}
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                if k == "Environment":
                    env.update(dict(p.split("=", 1) for p in shlex.split(v)))
                kv.setdefault(k, v)
        return cls(shlex.split(kv["ExecStart"]), kv["User"], kv["Group"], env,
                   kv.get("RuntimeDirectory", ""), kv.get("UMask", "0022"))


@dataclass
class Fleet:
    """Namespaces, bridge, sshd and service processes; `close` removes all of them by pid/name."""

    base: Path
    tag: str = field(default_factory=lambda: f"lmf{os.getpid() % 100000}")
    hosts: dict[str, Host] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def bridge_ns(self) -> str:
        return f"{self.tag}-br"

    def add_host(self, name: str, octet: int, restricted: bool = False) -> Host:
        """A namespace with eth0 on the bridge at SUBNET.octet/24."""
        if not self.namespaces:
            self._ip("netns", "add", self.bridge_ns)
            self.namespaces.append(self.bridge_ns)
            self._ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            self._ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        ns = f"{self.tag}-{name}"
        self._ip("netns", "add", ns)
        self.namespaces.append(ns)
        port = f"v{octet}"
        self._ip("-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", ns)
        self._ip("-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
        self._ip("-n", ns, "addr", "add", f"{SUBNET}.{octet}/24", "dev", "eth0")
        self._ip("-n", ns, "link", "set", "eth0", "up")
        self._ip("-n", ns, "link", "set", "lo", "up")
        host = Host(name, ns, f"{SUBNET}.{octet}", self.base / "hosts" / name, restricted)
        host.root.mkdir(parents=True, exist_ok=True)
        self.hosts[name] = host
        return host

    def link(self, host: Host, up: bool) -> None:
        """Take the host's only link down (a partition) or bring it back."""
        self._ip("-n", host.ns, "link", "set", "eth0", "up" if up else "down")

    def view(self, host: Host, argv: list[str], unit: Unit | None = None,
             env: dict[str, str] | None = None, root: bool = True) -> list[str]:
        """The command line running `argv` in the host's view (as the unit's user, if given);
        without `root`, only the private /run and the restrictions (sshd: users that Ansible
        creates go to the real /etc/passwd, which the services' views then see)."""
        view = self.base / "views" / f"{host.name}-{len(self.procs)}-{time.monotonic_ns()}"
        view.mkdir(parents=True)
        e = {"VIEW": str(view), "HOST_ROOT": str(host.root) if root else "",
             "RESTRICT": "1" if host.restricted else "", "COMPILERS": " ".join(COMPILERS),
             **(env or {})}
        if unit is not None:
            mask_dir, mask_child = _closed_ancestor(Path(os.path.realpath(_base_python())))
            e.update(RUN_USER=unit.user, RUN_GROUP=unit.group, RUN_UMASK=unit.umask,
                     RUNTIME_DIR=unit.runtime_dir, MASK_DIR=mask_dir, MASK_CHILD=mask_child,
                     **unit.environment)
        return ["ip", "netns", "exec", host.ns, "env", *(f"{k}={v}" for k, v in e.items()),
                "unshare", "-m", "--propagation", "private", "sh", "-c", VIEW_SCRIPT, "view",
                *argv]

    def start(self, host: Host, argv: list[str], log: Path, unit: Unit | None = None,
              env: dict[str, str] | None = None, root: bool = True) -> subprocess.Popen:
        """Start a long-running process in the host's view; `close` stops it by pid."""
        p = subprocess.Popen(self.view(host, argv, unit, env, root), stdin=subprocess.DEVNULL,
                             stdout=log.open("ab"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def run(self, host: Host, argv: list[str], timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in the host's view, as root."""
        return subprocess.run(self.view(host, argv, env=env), capture_output=True, text=True,
                              timeout=timeout)

    def start_sshd(self, host: Host, client_public_key: str) -> subprocess.Popen:
        """A real sshd on the host's address (own host key, the test's client key only)."""
        d = self.base / "sshd" / host.name
        d.mkdir(parents=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(d / "host_key")], check=True, timeout=30)
        (d / "authorized_keys").write_text(client_public_key)
        opts = {"ListenAddress": host.addr, "Port": "22", "HostKey": str(d / "host_key"),
                "AuthorizedKeysFile": str(d / "authorized_keys"),
                "PermitRootLogin": "prohibit-password", "PasswordAuthentication": "no",
                "KbdInteractiveAuthentication": "no", "UsePAM": "no", "StrictModes": "no",
                "PidFile": "none", "Subsystem": "sftp internal-sftp", "MaxStartups": "50",
                "MaxSessions": "50", "LogLevel": "ERROR"}
        argv = ["/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null"]
        for k, v in opts.items():
            argv += ["-o", f"{k}={v}"]
        # sshd's privilege separation directory, in the view's private /run
        return self.start(host, ["sh", "-c", 'mkdir -m 0755 /run/sshd && exec "$@"', "sshd",
                                 *argv], d / "sshd.log", root=False)

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and delete the namespaces."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for ns in reversed(self.namespaces):
            # what is left in our namespaces (sshd sessions, ssh control masters) is ours too
            left = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  timeout=30).stdout.split()
            for pid in left:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.namespaces.clear()

    @staticmethod
    def _ip(*args: str) -> None:
        out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def _base_python() -> str:
    """The interpreter the hosts' virtualenvs are made from (this venv's base)."""
    return getattr(sys, "_base_executable", sys.executable)


def base_python() -> str:
    """Real path of the interpreter the hosts' virtualenvs are made from."""
    return os.path.realpath(_base_python())


def _closed_ancestor(path: Path) -> tuple[str, str]:
    """(first ancestor others cannot enter, its child on the way to `path`), or ('', '')."""
    parts = path.parts
    for i in range(1, len(parts) - 1):
        d = Path(*parts[: i + 1])
        if not os.stat(d).st_mode & 0o001:
            return str(d), parts[i + 1]
    return "", ""
