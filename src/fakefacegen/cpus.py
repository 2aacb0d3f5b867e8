"""How many CPUs this process may use: the one count that sizes training threads, prepare's worker
processes and the metrics' per-batch thread choice. No torch import, so it is cheap everywhere."""

from __future__ import annotations

import os

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def available_cores(*, cgroup_quota: bool = False) -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where there is none), at least 1.

    With ``cgroup_quota`` the count is also capped by a cgroup v2 CPU quota, if one is set (the
    metrics' thread choice asks for that; training and prepare use the mask alone).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    if cgroup_quota:
        try:
            with open(CGROUP_CPU_MAX) as f:
                quota, period = f.read().split()[:2]
            if quota != "max":
                n = min(n, max(1, int(int(quota) / int(period))))
        except (OSError, ValueError):
            pass
    return max(1, n)
