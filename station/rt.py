"""Real-time scheduling for the threads that time the reject, and the process's heap settings.

Python threads share one GIL. Under CPU load the OS may preempt whichever
thread holds it, and a real-time reject thread then waits for a thread that
is not running (priority inversion). Giving the reject thread SCHED_FIFO, and
optionally the station's own Python threads a lower SCHED_FIFO priority,
keeps edges within a millisecond; see bench/bench_reject_timing.py.
Needs CAP_SYS_NICE (root, or ``AmbientCapabilities=CAP_SYS_NICE`` in the
systemd unit); without it threads run normally and a log line says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading

log = logging.getLogger(__name__)


def set_realtime(priority: int, what: str, native_id: int | None = None) -> bool:
    """SCHED_FIFO ``priority`` for a thread (the calling one by default); False if refused or off."""
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return False
    tid = native_id if native_id is not None else threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as exc:
        log.info("%s at normal priority (SCHED_FIFO refused: %s)", what, exc)
        return False
    log.info("%s runs with SCHED_FIFO priority %d", what, priority)
    return True


def freeze_heap() -> None:
    """Collect, then move every live object out of the collector's view (``gc.freeze``).

    A full collection of a large heap holds the GIL for tens of ms (50-250 ms in a process that
    loaded torch), in whichever thread happens to allocate, and no reject edge can wait that long.
    Done before the first part, later collections only scan objects made since.
    """
    gc.collect()
    gc.freeze()


M_MMAP_THRESHOLD = -3  # glibc <malloc.h>


def fix_mmap_threshold(kb: int) -> bool:
    """Serve allocations of ``kb`` KiB and more from their own memory maps, at a fixed threshold.

    glibc starts at 128 KiB and raises the threshold to the size of each large block freed (up to
    32 MiB), so after the first frame is freed every later frame comes from the heap and a long-running
    process that loads models and frees frames in many threads fragments it: RSS creeps though
    nothing leaks. Setting it once turns the dynamic adjustment off (``mallopt(3)``). Returns False
    where it does not apply (``kb`` 0, or not glibc).
    """
    if kb <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        ok = bool(libc and libc.mallopt(M_MMAP_THRESHOLD, kb * 1024))
    except (OSError, AttributeError):  # not glibc (musl, macOS): no mallopt
        ok = False
    log.debug("malloc mmap threshold %d KiB: %s", kb, "fixed" if ok else "not applied")
    return ok
