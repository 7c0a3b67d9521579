"""The sandbox every agent ``bash`` command runs in: bubblewrap (``bwrap``) plus resource limits.

Each command gets new user, pid, ipc, uts, cgroup and (unless the task was granted network) network
namespaces, a fresh ``/proc`` that shows only its own processes, and a root built from nothing:
the host system read-only (``/usr``, the merged-usr links, a copy of an allow-list of ``/etc``), the
checkout read-write (its ``.git`` read-only: the platform commits), a private ``HOME`` and
``/tmp`` inside the attempt directory, and nothing else of the host (not the runner's virtualenv,
home, state or work directory, not ``/work``, ``/root`` or the host's ``/proc``). Inside, the
command runs as uid 1000 without capabilities and cannot create user namespaces. It dies with the
runner (``--die-with-parent``), and when its shell exits the pid namespace takes every process it
started with it.

Limits: file size, address space and CPU time are rlimits set by a small ``sh`` prelude before
``bwrap`` starts; the number of processes is a pids cgroup (RLIMIT_NPROC does not bind a runner
that is root, even mapped to another uid in a user namespace). :func:`bwrap_argv` and
:func:`prelude_argv` build argv from plain values (no I/O); :func:`host_system` and
``cgroups.PidsCgroups`` look at the host once, :func:`etc_snapshot` copies ``/etc``'s allow-list
once per attempt (one bind instead of forty: ~9 ms less per command); :func:`probe` runs ``true`` in the
sandbox at start.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from bgagent_eventstore import env_flag

from .cgroups import CommandCgroup, PidsCgroups, cgroups

logger = logging.getLogger(__name__)

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_UID = 1000
BASH = "/bin/bash"
SHM_BYTES = 64 * 1024 * 1024
MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_ALLOWED = (
    "alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "debian_version", "gai.conf",
    "group", "host.conf", "hosts", "inputrc", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "locale.alias",
    "localtime", "magic", "magic.mime", "mime.types", "networks", "nsswitch.conf", "os-release", "passwd",
    "perl", "pip.conf", "profile", "protocols", "python3", "python3.11", "resolv.conf", "rpc", "services",
    "shells", "ssl/certs", "ssl/openssl.cnf", "terminfo", "timezone", "npmrc", "wgetrc",
)  # fmt: skip
"""What of ``/etc`` the sandbox sees: no ``shadow``, ``ssl/private``, ssh host keys or service configs."""
PRELUDE = (
    'ulimit -f "$1" && ulimit -v "$2" && ulimit -S -t "$3" && ulimit -H -t "$4" || exit 125; '
    '[ -z "$5" ] || echo $$ > "$5" || exit 125; shift 5; exec "$@"'
)
"""``sh -c PRELUDE bgagent-sandbox <file blocks> <KiB> <cpu s> <cpu s + 1> <cgroup.procs|""> bwrap …``.

The CPU limit's hard value is one second above the soft one, so a spinning process gets SIGXCPU
(exit 152, reported as the CPU limit) rather than an anonymous SIGKILL."""
PRELUDE_FAILED = 125
EXIT_SIGXCPU = 128 + signal.SIGXCPU
EXIT_SIGXFSZ = 128 + signal.SIGXFSZ
_KILLED_BY = re.compile(r"\b\d+ (CPU time|File size) limit exceeded")
"""bash's report of a child killed by SIGXCPU/SIGXFSZ (``line 1:  3 File size limit exceeded  head …``)."""


class SandboxUnavailable(Exception):
    """The sandbox cannot run here; the message says how to fix it or how to opt out."""


class SandboxSettings(msgspec.Struct, frozen=True, kw_only=True):
    """``BGAGENT_SANDBOX*``: how agent commands are isolated and limited (0 disables a limit)."""

    mode: Literal["bwrap", "off"] = "bwrap"
    allow_network: bool = False
    """Tasks may ask for network access (``network: true``); off by default."""
    max_procs: int = 512
    """Processes and threads of one command (a pids cgroup); hitting it stops the command."""
    max_file_mb: int = 2048
    """Largest file one command may write (RLIMIT_FSIZE)."""
    memory_mb: int = 4096
    """Address space of each process (RLIMIT_AS)."""
    cpu_s: int = 900
    """CPU seconds of each process (RLIMIT_CPU)."""
    bwrap: str = "bwrap"
    """The bubblewrap binary: a name looked up on the system PATH, or an absolute path."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SandboxSettings:
        mode = (env.get("BGAGENT_SANDBOX") or "bwrap").strip().lower()
        if mode not in ("bwrap", "off"):
            raise ValueError(f"BGAGENT_SANDBOX: expected bwrap or off, got {env.get('BGAGENT_SANDBOX')!r}")
        return cls(
            mode="off" if mode == "off" else "bwrap",
            allow_network=env_flag(env, "BGAGENT_SANDBOX_ALLOW_NETWORK", False),
            max_procs=_limit(env, "BGAGENT_SANDBOX_MAX_PROCS", 512, minimum=8),
            max_file_mb=_limit(env, "BGAGENT_SANDBOX_MAX_FILE_MB", 2048, minimum=1),
            memory_mb=_limit(env, "BGAGENT_SANDBOX_MEMORY_MB", 4096, minimum=64),
            cpu_s=_limit(env, "BGAGENT_SANDBOX_CPU_S", 900, minimum=1),
            bwrap=(env.get("BGAGENT_SANDBOX_BWRAP") or "bwrap").strip(),
        )

    def bwrap_binary(self) -> str | None:
        """Where the bubblewrap binary is, or None when it is not installed."""
        return shutil.which(self.bwrap, path=SYSTEM_PATH)


def _limit(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a whole number (0 disables the limit), got {raw!r}") from None
    if value != 0 and value < minimum:
        raise ValueError(f"{name}: must be 0 (no limit) or at least {minimum}, got {value}")
    return value


def agent_path(workspace: Path | None, home: Path) -> str:
    """The agent's PATH: tools inside the workspace and its HOME, then the system toolchain only."""
    local = [f"{workspace}/.venv/bin"] if workspace is not None else []
    return ":".join([*local, f"{home}/.local/bin", SYSTEM_PATH])


@functools.cache
def host_system(root: str = "/") -> tuple[tuple[str, ...], ...]:
    """bwrap options that show the host system read-only: ``/usr`` and the merged-usr links."""
    options: list[tuple[str, ...]] = [("--ro-bind", "/usr", "/usr")]
    for name in MERGED_USR:
        path = os.path.join(root, name)
        if os.path.islink(path):
            options.append(("--symlink", os.readlink(path), f"/{name}"))
        elif os.path.isdir(path):
            options.append(("--ro-bind", f"/{name}", f"/{name}"))
    return tuple(options)


def etc_snapshot(dest: Path, source: Path = Path("/etc")) -> Path:
    """Copy the allow-listed entries of ``/etc`` into ``dest`` (symlinks stay links), for the
    sandbox's ``/etc``; an entry that cannot be read is left out (blocking I/O)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ETC_ALLOWED:
        src, target = source / name, dest / name
        try:
            if not os.path.lexists(src):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                target.symlink_to(os.readlink(src))
            elif src.is_dir():
                shutil.copytree(src, target, symlinks=True)
            else:
                shutil.copy2(src, target)
        except OSError as exc:
            logger.warning("the sandbox's /etc goes without %s: %s", name, exc)
    (dest / "mtab").symlink_to("../proc/self/mounts")
    return dest


def bwrap_argv(
    command: str,
    *,
    workspace: Path,
    home: Path,
    tmp: Path,
    etc: Path,
    env: Mapping[str, str],
    network: bool,
    system: Sequence[Sequence[str]],
    bwrap: str = "bwrap",
) -> list[str]:
    """The ``bwrap`` argv that runs ``bash -c command`` in ``workspace`` (pure: no I/O).

    ``workspace``, ``home`` and ``tmp`` are host directories; the first two appear at the same path
    inside (so paths the model sees match the editor's), ``tmp`` at ``/tmp`` and ``/var/tmp``;
    ``etc`` (an :func:`etc_snapshot`) read-only at ``/etc``.
    """
    argv = [bwrap, "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--disable-userns"]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        argv.append("--unshare-net")
    argv += ["--die-with-parent", "--new-session", "--hostname", "bgagent"]
    for option in system:
        argv += option
    argv += ["--ro-bind", str(etc), "/etc"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm"]
    argv += ["--bind", str(tmp), "/tmp", "--bind", str(tmp), "/var/tmp"]
    argv += ["--bind", str(home), str(home), "--bind", str(workspace), str(workspace)]
    argv += ["--ro-bind-try", str(workspace / ".git"), str(workspace / ".git")]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", str(workspace), "--clearenv"]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    return [*argv, "--", BASH, "-c", command]


def prelude_argv(settings: SandboxSettings, procs_file: str | None) -> list[str]:
    """``sh`` that sets the rlimits, joins the command's pids cgroup, then execs what follows (pure)."""

    def value(limit: int, unit: int) -> str:
        return str(limit * unit) if limit > 0 else "unlimited"

    return [
        "/bin/sh", "-c", PRELUDE, "bgagent-sandbox",
        value(settings.max_file_mb, 2048),  # 512-byte blocks
        value(settings.memory_mb, 1024),  # KiB
        value(settings.cpu_s, 1),
        str(settings.cpu_s + 1) if settings.cpu_s > 0 else "unlimited",
        procs_file or "",
    ]  # fmt: skip


def explain_limit(code: int | None, output: str, settings: SandboxSettings) -> str | None:
    """Which limit, if any, a command ran into: from its exit status or the shell's report of a
    process killed by SIGXCPU/SIGXFSZ; for memory, from what a failed allocation prints."""
    killed = {m.group(1) for m in _KILLED_BY.finditer(output)}
    if settings.cpu_s and (code == EXIT_SIGXCPU or "CPU time" in killed):
        return f"the CPU time limit of {settings.cpu_s}s per process (BGAGENT_SANDBOX_CPU_S)"
    if settings.max_file_mb and (code == EXIT_SIGXFSZ or "File size" in killed):
        return f"the file size limit of {settings.max_file_mb} MiB per file (BGAGENT_SANDBOX_MAX_FILE_MB)"
    memory = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
    if settings.memory_mb and code != 0 and any(m in output for m in memory):
        return f"the memory limit of {settings.memory_mb} MiB per process (BGAGENT_SANDBOX_MEMORY_MB)"
    if code == PRELUDE_FAILED and "bgagent-sandbox:" in output:
        return "the sandbox's limits could not be set (see the message above)"
    return None


# --- the sandbox of a runner ----------------------------------------------------------------------


class Sandbox:
    """Wraps agent commands for one runner: its settings, the host's system mounts, the cgroups."""

    def __init__(self, settings: SandboxSettings, *, bwrap: str | None = None) -> None:
        self.settings = settings
        self.bwrap = bwrap or settings.bwrap_binary() or settings.bwrap
        self.system = host_system()

    @property
    def cgroups(self) -> PidsCgroups | None:
        return cgroups() if self.settings.max_procs else None

    def open_cgroup(self) -> CommandCgroup | None:
        """A fresh pids cgroup for one command, or None where none can be made (blocking I/O)."""
        cgroups = self.cgroups
        if cgroups is None:
            return None
        try:
            return cgroups.create(self.settings.max_procs)
        except OSError as exc:
            logger.warning("no pids cgroup for this command (process limit not enforced): %s", exc)
            return None

    def argv(
        self,
        command: str,
        *,
        workspace: Path,
        home: Path,
        tmp: Path,
        etc: Path,
        env: Mapping[str, str],
        network: bool,
        cgroup: CommandCgroup | None,
    ) -> list[str]:
        inner = bwrap_argv(
            command,
            workspace=workspace,
            home=home,
            tmp=tmp,
            etc=etc,
            env=env,
            network=network,
            system=self.system,
            bwrap=self.bwrap,
        )
        return [*prelude_argv(self.settings, cgroup.procs_file if cgroup else None), *inner]


def probe(settings: SandboxSettings) -> str:
    """Run ``true`` in the sandbox; a description of what is enforced, or SandboxUnavailable."""
    opt_out = "or set BGAGENT_SANDBOX=off to run agent commands without a sandbox (not for untrusted repos)"
    if settings.bwrap_binary() is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed: run 'apt-get install bubblewrap' (or make sandbox-tools), "
            + opt_out
        )
    sandbox = Sandbox(settings)
    with tempfile.TemporaryDirectory(prefix="bgagent-sandbox-probe-") as raw:
        root = Path(raw)
        for name in ("ws", "home", "tmp"):
            (root / name).mkdir()
        cgroup = sandbox.open_cgroup()
        argv = sandbox.argv(
            "true",
            workspace=root / "ws",
            home=root / "home",
            tmp=root / "tmp",
            etc=etc_snapshot(root / "etc"),
            env={"PATH": SYSTEM_PATH},
            network=False,
            cgroup=cgroup,
        )
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bwrap could not start a sandbox ({exc}): {opt_out}") from None
        finally:
            if cgroup is not None:
                cgroup.remove()
    detail = (done.stderr or done.stdout).strip()[-500:] or f"exit code {done.returncode}"
    if done.returncode == PRELUDE_FAILED and "bgagent-sandbox:" in detail:
        raise SandboxUnavailable(
            f"the sandbox's resource limits cannot be set ({detail}): check BGAGENT_SANDBOX_MAX_FILE_MB, "
            f"_MEMORY_MB and _CPU_S against this user's hard limits (ulimit -H -a), {opt_out}"
        )
    if done.returncode != 0:
        raise SandboxUnavailable(
            f"bwrap cannot create a sandbox here ({detail}); it needs unprivileged user namespaces "
            f"(kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0) and 'apt-get install "
            f"bubblewrap' — {opt_out}"
        )
    procs = (
        "off"
        if not settings.max_procs
        else f"{settings.max_procs} (pids cgroup)"
        if sandbox.cgroups is not None
        else "NOT ENFORCED (no writable pids cgroup)"
    )
    unlimited = "unlimited"
    return (
        f"bwrap sandbox ready: processes {procs}, file size {settings.max_file_mb or unlimited} MiB, "
        f"memory {settings.memory_mb or unlimited} MiB/process, CPU {settings.cpu_s or unlimited} s/process, "
        f"network {'on request' if settings.allow_network else 'off'}"
    )
