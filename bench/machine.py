"""What the figures were measured on, and how much CPU each process spent.

Benchmark figures mean little without the machine next to them, so every run prints it. The
per-process CPU accounting reads ``/proc`` (Linux only, like the rest of the platform's
tooling); elsewhere it quietly reports nothing rather than failing the benchmark.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# Kernel clock ticks per second, the unit of utime/stime in /proc/<pid>/stat.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    logical_cpus: int
    usable_cpus: int
    cpu_quota: str | None
    memory_gib: float | None
    python: str
    system: str
    date: str

    def rows(self) -> list[tuple[str, str]]:
        cores = f"{self.usable_cpus} usable"
        if self.usable_cpus != self.logical_cpus:
            cores += f" of {self.logical_cpus} logical"
        if self.cpu_quota:
            cores += f" (cgroup quota {self.cpu_quota})"
        memory = f"{self.memory_gib:.1f} GiB" if self.memory_gib is not None else "unknown"
        return [
            ("CPU", self.cpu_model),
            ("cores", cores),
            ("memory", memory),
            ("Python", self.python),
            ("system", self.system),
            ("date", self.date),
        ]


def describe() -> Machine:
    return Machine(
        cpu_model=_cpu_model(),
        logical_cpus=os.cpu_count() or 1,
        usable_cpus=usable_cpus(),
        cpu_quota=_cgroup_quota(),
        memory_gib=_memory_gib(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        system=platform.platform(terse=True),
        date=datetime.now().astimezone().isoformat(timespec="seconds"),
    )


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), which is what client and servers share."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1024 * 1024)
    return None


def _cgroup_quota() -> str | None:
    """A cgroup v2 CPU limit, if any: it caps the servers more tightly than the core count."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return f"{int(quota) / int(period):g} CPUs"
    return None


# -- CPU time per process and for the whole machine -----------------------------------------


@dataclass(frozen=True)
class MachineTimes:
    """Cumulative CPU time of all cores since boot, from /proc/stat, in seconds."""

    busy: float
    steal: float  # a virtual machine's CPUs held back by the hypervisor


def machine_times() -> MachineTimes | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        # cpu  user nice system idle iowait irq softirq steal ... (proc(5), in clock ticks)
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return MachineTimes(
            busy=(user + nice + system + irq + softirq) / _CLOCK_TICKS,
            steal=steal / _CLOCK_TICKS,
        )
    return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces and parens)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float | None:
    """CPU time of a whole process (all its threads), in seconds.

    From each thread's ``schedstat`` (nanoseconds) when the kernel has it: a 250-request round
    lasts well under a second, too short for the 10 ms clock ticks of ``stat``.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        total_ns, threads = 0, 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread may end while we read
                total_ns += int((task / "schedstat").read_text().split()[0])
                threads += 1
        if threads:
            return total_ns / 1e9
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After the name: state(0) ppid(1) ... utime(11) stime(12), see proc(5).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def children_of(parent: int) -> dict[int, str]:
    """Direct child processes of ``parent``: pid -> command name."""
    found: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            fields = _stat_fields(int(entry.name))
            if fields is None or int(fields[1]) != parent:
                continue
            with contextlib.suppress(OSError):
                found[int(entry.name)] = (entry / "comm").read_text().strip()
    return found


def named_cpu_seconds(command: str) -> float:
    """CPU time of every process named ``command`` (``postgres``: the server and all its
    backends; ``redis-server``), in seconds. Servers shared with anything else running count
    that too: the benchmarks run on a quiet machine and say so."""
    total = 0.0
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() != command:
                    continue
            seconds = cpu_seconds(int(entry.name))
            if seconds is not None:
                total += seconds
    return total
