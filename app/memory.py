"""Process memory policy: the resident size follows what the service holds, not what it once held.

Two settings of glibc's allocator, made at service start (``mallopt``; elsewhere they change nothing):

- **Frame-sized buffers get mappings of their own.** glibc serves an allocation above its mmap
  threshold from a mapping that is unmapped at free, but it raises that threshold to the size of any
  such block freed (up to 32 MiB); from then on decoded frames, model inputs and uploads come from its
  arenas, which keep their pages. The arenas then grow to the most frames ever in flight at once (a
  queue that filled during a load spike) and stay there, so the resident size climbs in steps over
  hours. A fixed threshold of ``LARGE_BUFFER_BYTES`` keeps every such buffer out of the arenas.
- **Two arenas.** glibc creates up to 8 arenas per core, one per thread that meets contention; the
  service runs a dozen threads whose small allocations would each keep an arena's free pages.

Measured in docs/reliability.md ("Large uploads", "Where the memory goes")."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
LARGE_BUFFER_BYTES = 512 << 10  # a 640x400 BGR frame (768 kB) and up; a 256x256 float32 model input
ARENAS = 2


def _mallopt() -> Callable[[int, int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:  # Windows: no C library of that name, and no such allocator
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return getattr(libc, "mallopt", None)


def apply_memory_policy() -> dict[str, bool]:
    """Set both; which of them the C library took (all False where there is no glibc ``mallopt``)."""
    mallopt = _mallopt()
    if mallopt is None:
        return {"mmap_threshold": False, "arena_max": False}
    done = {"mmap_threshold": bool(mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)),
            "arena_max": bool(mallopt(M_ARENA_MAX, ARENAS))}
    if not all(done.values()):
        log.debug("the C library did not take every memory setting: %s", done)
    return done
