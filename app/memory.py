"""Process memory policy: large buffers (decoded frames) go back to the operating system when freed.

glibc serves an allocation above its mmap threshold from a mapping of its own, unmapped at free. But it
raises that threshold to the size of any such block freed (up to 32 MiB), and from then on frame-sized
buffers come from its per-thread arenas, which keep their pages: under concurrent large uploads the
resident size ratchets up with every worker thread. A fixed threshold keeps it flat
(docs/reliability.md, "Large uploads")."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BUFFER_BYTES = 4 << 20  # a 1280x1024 BGR frame and up


def return_large_buffers_to_the_os() -> bool:
    """Fix glibc's mmap threshold at ``LARGE_BUFFER_BYTES``; False where the C library has no such
    setting (the call then changes nothing)."""
    name = ctypes.util.find_library("c")
    if name is None:  # Windows: no C library of that name, and no such allocator
        return False
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))
    if not done:
        log.debug("the C library does not take a fixed mmap threshold")
    return done
