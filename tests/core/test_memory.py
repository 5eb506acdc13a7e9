"""gateway/memory.py: the heap's free pages go back to the system, which glibc alone does not do."""

from __future__ import annotations

from pathlib import Path

from gateway.memory import release_free_memory


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_free_heap_pages_are_released() -> None:
    # 64 MB in 1 KB blocks (above pymalloc's 512 bytes: glibc's heap); every 64th and the last one survive,
    # so the freed memory lies between live chunks, where free() leaves it mapped.
    blocks = [bytes(1024) for _ in range(64 * 1024)]
    survivors = blocks[::64] + blocks[-1:]
    del blocks
    before = _rss_mb()
    assert release_free_memory()
    after = _rss_mb()
    assert before - after > 30, f"RSS {before:.0f} → {after:.0f} MB"
    assert len(survivors) == 1025
