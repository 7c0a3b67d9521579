"""Per-command pids cgroups: the process limit of the sandbox (RLIMIT_NPROC does not bind root).

Each command of an agent gets its own cgroup under a directory named after its runner (pid and
start time), so a starting runner can kill and remove the cgroups of runners that are gone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import time
from pathlib import Path

from ulid import ULID

logger = logging.getLogger(__name__)

_SELF = Path("/proc/self")


class CommandCgroup:
    """One command's pids cgroup: its processes can be counted, killed, and the directory removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.procs_file = str(path / "cgroup.procs")

    def limit_hits(self) -> int:
        """How many forks the limit refused so far (``max`` of ``pids.events``)."""
        try:
            lines = (self.path / "pids.events").read_text().splitlines()
        except OSError:
            return 0
        return next((int(line.split()[1]) for line in lines if line.startswith("max ")), 0)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in Path(self.procs_file).read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL every process in the cgroup now (one pass; :meth:`remove` repeats until empty)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, wait_s: float = 2.0) -> None:
        """Kill what is left and remove the directory; the kernel frees an emptied cgroup a few
        milliseconds after its last process was reaped, so this polls (blocking I/O)."""
        deadline = time.monotonic() + wait_s
        delay = 0.0005
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() >= deadline:
                    logger.warning("sandbox cgroup %s not removed (swept at the next start)", self.path)
                    return
                self.kill()
                time.sleep(delay)
                delay = min(delay * 2, 0.05)


class PidsCgroups:
    """Per-command pids cgroups under ``<runner's own pids cgroup>/bgagent-sandbox``.

    Works on a cgroup v1 ``pids`` hierarchy and on cgroup v2 where the runner's cgroup lets its
    children use ``pids`` (``cgroup.subtree_control``). :meth:`find` returns None elsewhere.

    A command's cgroup is named after the runner process that made it
    (``cmd-<pid>-<start time>-<ulid>``), so :meth:`sweep` can tell the commands of a runner that
    died (their processes are killed, the cgroup removed) from those of a live runner sharing the
    machine. That catches the one gap of ``--die-with-parent``: a runner killed in the
    milliseconds while bwrap sets up, before its pid 1 has asked to die with it.
    """

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    @classmethod
    def find(cls) -> PidsCgroups | None:
        try:
            own = _own_pids_cgroup()
            if own is None:
                return None
            parent = own / "bgagent-sandbox"
            parent.mkdir(exist_ok=True)
            if (own / "cgroup.subtree_control").exists():  # v2: let the children of parent count pids
                (parent / "cgroup.subtree_control").write_text("+pids")
            found = cls(parent)
            found.create(8).remove()  # writable, and pids.max can be set
        except OSError as exc:
            logger.debug("no pids cgroup for the sandbox: %s", exc)
            return None
        return found

    def create(self, max_procs: int) -> CommandCgroup:
        path = self.parent / f"cmd-{os.getpid()}-{start_time(os.getpid())}-{ULID()}"
        path.mkdir()
        try:
            (path / "pids.max").write_text(str(max_procs))
        except OSError:
            path.rmdir()
            raise
        return CommandCgroup(path)

    def sweep(self) -> int:
        """Kill and remove the command cgroups of runners that are gone; returns how many."""
        removed = 0
        for child in self.parent.glob("cmd-*"):
            parts = child.name.split("-")
            owner_alive = len(parts) == 4 and parts[1].isdigit() and start_time(int(parts[1])) == parts[2]
            if owner_alive:
                continue
            cgroup = CommandCgroup(child)
            if cgroup.pids():
                logger.warning("killing the processes of an orphaned sandbox (%s)", child.name)
            cgroup.remove()
            removed += not child.exists()
        return removed


def start_time(pid: int) -> str:
    """A process's start time in clock ticks (``/proc/<pid>/stat`` field 22): pid + this is unique.

    ``"gone"`` when the process does not exist (or ``/proc`` cannot be read). Also names the owner
    of a workspace (``cleanup.py``).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rindex(")") + 2 :].split()[19]


def _own_pids_cgroup(proc: Path = _SELF) -> Path | None:
    """The directory of this process's pids cgroup (v1 ``pids`` hierarchy, or v2 delegating pids)."""
    memberships = {}
    for line in (proc / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            memberships[name] = path
    for line in (proc / "mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        mount_root, mount_point, fstype, options = fields[3], fields[4], fields[sep + 1], fields[-1]
        if fstype == "cgroup" and "pids" in options.split(",") and "pids" in memberships:
            own = memberships["pids"]
        elif fstype == "cgroup2" and "" in memberships:
            own = memberships[""]
        else:
            continue
        relative = own[len(mount_root) :] if own.startswith(mount_root) else own
        directory = Path(mount_point) / relative.lstrip("/")
        if fstype == "cgroup2":
            control = directory / "cgroup.subtree_control"
            if not control.exists() or "pids" not in control.read_text().split():
                continue
        return directory
    return None


@functools.cache
def cgroups() -> PidsCgroups | None:
    found = PidsCgroups.find()
    if found is not None:
        found.sweep()
    return found
