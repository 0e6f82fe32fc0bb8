"""The process memory policy (app/memory.py): frame-sized buffers freed leave the process even when
small live allocations sit between them, where glibc's own policy keeps them in its heap."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from app import memory

PROBE = r"""
import ctypes, ctypes.util, sys
from app import memory

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
if sys.argv[1] == "policy":
    assert all(memory.apply_memory_policy().values())

def rss_anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

FRAME = 640 * 480 * 3
first = libc.malloc(FRAME)  # one frame freed: glibc raises its mmap threshold to its size
libc.memset(first, 1, FRAME)
libc.free(first)
before = rss_anon_kb()
frames, pins = [], []
for _ in range(64):  # a queue of frames in flight, with the small allocations made meanwhile
    frame = libc.malloc(FRAME)
    libc.memset(frame, 1, FRAME)
    frames.append(frame)
    pins.append(libc.malloc(2048))
for frame in frames:  # the frames are done with; the small allocations live on
    libc.free(frame)
print(rss_anon_kb() - before)
"""


def kept_kb(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                         check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the policy sets glibc's allocator; elsewhere it changes nothing")
def test_freed_frames_leave_the_process_under_the_policy() -> None:
    frames_kb = 64 * 640 * 480 * 3 // 1024  # 57,600 kB
    without = kept_kb("default")
    assert without > frames_kb // 2, f"glibc's own policy kept only {without} kB: the probe shows nothing"
    assert kept_kb("policy") < frames_kb // 10


def test_reports_what_the_c_library_took() -> None:
    done = memory.apply_memory_policy()
    assert set(done) == {"mmap_threshold", "arena_max"}
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert all(done.values())
