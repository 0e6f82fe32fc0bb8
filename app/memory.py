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

And one habit: **free pages go back every minute** (:class:`FreePageReturn`, ``malloc_trim``). Rows,
results and messages come and go in small blocks; a block that lives on pins the top of its arena, so
glibc cannot shrink the arena, and the freed pages below it stay resident until asked for. In an
18-minute run of a 30-FPS camera the arenas' free space grew 5 MiB while the memory in use stayed
level, and one ``malloc_trim`` gave 8 MiB back.

Measured in docs/reliability.md ("Large uploads", "Where the memory goes")."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

from app.background import BackgroundLoop

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
LARGE_BUFFER_BYTES = 512 << 10  # a 640x400 BGR frame (768 kB) and up; a 256x256 float32 model input
ARENAS = 2
RETURN_FREE_PAGES_EVERY_S = 60.0


@functools.cache
def _libc_function(name: str) -> Callable[[int], int] | Callable[[int, int], int] | None:
    """``name`` of the C library, or None where there is none (Windows) or it lacks that function."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        libc = ctypes.CDLL(library)
    except OSError:
        return None
    return getattr(libc, name, None)


def _mallopt() -> Callable[[int, int], int] | None:
    return _libc_function("mallopt")  # type: ignore[return-value]


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


def return_free_pages() -> bool:
    """Hand the allocator's free pages back to the system (glibc's ``malloc_trim(0)``: every whole free
    page in every arena, not only the arena's top); True if some went back. False, and nothing done,
    where there is no glibc."""
    trim = _libc_function("malloc_trim")
    return bool(trim(0)) if trim is not None else False


class FreePageReturn:
    """``return_free_pages`` every ``interval_s`` on a background thread of its own. A pass over a heap
    of 80 MiB, half of it free, took 5-7 ms on the 2-core machine under load; it holds each arena's lock
    only while it walks that arena."""

    def __init__(self, interval_s: float = RETURN_FREE_PAGES_EVERY_S) -> None:
        self._loop = BackgroundLoop("free-page-return", self._step, interval_s)

    def _step(self) -> bool:
        return_free_pages()
        return False

    def start(self) -> FreePageReturn:
        self._loop.start()
        return self

    def stop(self) -> None:
        self._loop.stop()
