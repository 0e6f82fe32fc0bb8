"""The process memory policy (app/memory.py): frame-sized buffers freed leave the process even when
small live allocations sit between them, where glibc's own policy keeps them in its heap; and the free
pages among small blocks that live on go back when ``return_free_pages`` runs."""

from __future__ import annotations

import platform
import subprocess
import sys
import time

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


SMALL_BLOCKS_PROBE = r"""
import ctypes, ctypes.util, sys
from app import memory

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
memory.apply_memory_policy()

def rss_anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

before = rss_anon_kb()
blocks = []
for _ in range(16384):  # 64 MiB of rows and messages in 4 kB blocks
    block = libc.malloc(4096)
    libc.memset(block, 1, 4096)
    blocks.append(block)
for i, block in enumerate(blocks):  # all done with but every 64th, which lives on
    if i % 64 != 63:
        libc.free(block)
freed = rss_anon_kb() - before
if sys.argv[1] == "return":
    assert memory.return_free_pages()
print(freed, rss_anon_kb() - before)
"""


def run_probe(probe: str, mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, timeout=120,
                         check=True)
    return [int(word) for word in out.stdout.split()]


def kept_kb(mode: str) -> int:
    return run_probe(PROBE, mode)[0]


GLIBC = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the policy sets glibc's allocator; elsewhere it changes nothing")


@GLIBC
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


@GLIBC
def test_free_pages_among_live_small_blocks_go_back() -> None:
    blocks_kb = 16384 * 4  # 65,536 kB, of which 63/64 freed
    kept_freed, kept_after = run_probe(SMALL_BLOCKS_PROBE, "keep")
    assert kept_freed > blocks_kb // 2, f"free() alone kept only {kept_freed} kB: the probe shows nothing"
    assert kept_after > blocks_kb // 2  # nothing else gives them back
    _, returned_after = run_probe(SMALL_BLOCKS_PROBE, "return")
    assert returned_after < blocks_kb // 8, f"{returned_after} kB still resident after return_free_pages"


def test_free_page_return_runs_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(memory, "return_free_pages", lambda: calls.append(1.0) or True)
    returner = memory.FreePageReturn(interval_s=0.01).start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    returner.stop()
    stopped_at = len(calls)
    time.sleep(0.05)
    assert stopped_at >= 3 and len(calls) == stopped_at
