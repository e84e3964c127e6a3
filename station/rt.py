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


M_ARENA_MAX = -8  # glibc <malloc.h>


def limit_malloc_arenas(n: int) -> bool:
    """At most ``n`` glibc malloc arenas for threads started from now on (``mallopt(M_ARENA_MAX)``).

    glibc gives threads their own arenas (up to 8 per core). The station allocates a frame in the
    acquisition thread and frees it in the inference or recorder thread, and loads models in yet
    another: with many arenas the freed memory is scattered and RSS creeps though nothing leaks.
    Large blocks stay on the heap (no per-frame mmap/munmap, which costs page faults and TLB
    shootdowns in the real-time threads). Returns False where it does not apply (``n`` 0, not glibc).
    """
    if n <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        ok = bool(libc and libc.mallopt(M_ARENA_MAX, n))
    except (OSError, AttributeError):  # not glibc (musl, macOS): no mallopt
        ok = False
    log.debug("malloc arenas at most %d: %s", n, "set" if ok else "not applied")
    return ok
