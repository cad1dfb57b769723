"""dassl/utils/host_memory.py: after `keep_freed_memory`, glibc serves large tensors from its heap (which keeps
freed memory) instead of a fresh mmap per tensor. Checked in fresh processes with glibc's own count of mmapped
blocks (mallinfo2), since the setting lasts for the whole process."""
import subprocess
import sys

import pytest

from dassl.utils import host_memory, keep_freed_memory
from trainers_testutils import REPO

COUNT_MMAPPED_BLOCKS = """
import ctypes, sys, torch
from dassl.utils import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = libc.mallinfo2().hblks
tensor = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, above glibc's largest mmap threshold
print(libc.mallinfo2().hblks - before)
"""


def _mmapped_blocks_of_a_large_tensor(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", COUNT_MMAPPED_BLOCKS, mode], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is a Linux matter")
def test_large_tensors_come_from_the_heap_after_keep_freed_memory():
    assert _mmapped_blocks_of_a_large_tensor("default") == 1
    assert _mmapped_blocks_of_a_large_tensor("keep") == 0


def test_other_platforms_keep_their_allocator(monkeypatch):
    monkeypatch.setattr(host_memory.sys, "platform", "darwin")
    assert keep_freed_memory() is False
