# SPDX-License-Identifier: MIT
"""Attacks from the review of segments (TransferEngine) in the Python
package, over the real C layer and the stand-in libcuda: a careless but
legal application closes things in the wrong order.  Each scenario runs in
a forked child, so that a crash (use-after-unmap of the stand-in's device
memory is a SIGSEGV) is a failure, not the end of the suite."""
from __future__ import annotations

import ctypes
import os
import time
import unittest

from helpers import BUILD, handle, run_as, uniq

import nvbridge
from nvbridge import segment as sg

FAKE = os.environ.get("NVB_FAKE_CUDA", os.path.join(BUILD, "gpu-fake", "libfakecuda.so"))
NO_FAKE = "" if os.path.exists(FAKE) else f"{FAKE} not built (make check-python builds it)"
SIZE = 2 << 20


def _tensor_closed_under_segment(name: str) -> tuple:
    """register() a tensor as a segment, close the tensor, then transfer
    into the segment.  Before the fix the tensor's close freed the buffer
    (nvb_gpu_free) under the published segment: the WRITE landed in
    unmapped device memory (here: SIGSEGV; on a GPU a fault, or another
    allocation's bytes once the address is reused)."""
    g = nvbridge.Gpu(FAKE)
    with handle() as h:
        eng = nvbridge.TransferEngine(g, h)
        t = g.empty(SIZE, "uint8")
        seg = eng.register(name, t)
        t.close()                       # the application is done with its tensor
        src = g.empty(SIZE, "uint8")
        data = os.urandom(4096)
        ctypes.memmove(src.ptr, data, len(data))
        b = eng.submit([(sg.WRITE, src.ptr, seg, 8192, len(data))])
        b.wait(5)
        b.close()
        seen = ctypes.string_at(seg.ptr + 8192, len(data)) == data
        kept = t._mem._b is not None
        seg.close()                     # now the buffer goes
        freed = t._mem._b is None
        src.close()
    g.close()
    return seen, kept, freed


def _prefetch_then_handle_close(name: str) -> float:
    """prefetch(), then close the handle: Handle.close() promises to take
    effect once the library no longer uses the handle.  Before the fix it
    took effect at once: the library thread went on polling the closed
    event fd (POLLNVAL: a busy loop, a CPU at 100 %) and would read events
    through the freed struct nvb once the number was reused."""
    g = nvbridge.Gpu(FAKE)
    h = handle()
    eng = nvbridge.TransferEngine(g, h)
    eng.prefetch(name)
    h.close()
    t0 = os.times()
    time.sleep(1.0)
    t1 = os.times()
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    g.close()                           # ends the prefetch: the handle goes now
    return cpu


@unittest.skipIf(bool(NO_FAKE), NO_FAKE)
class ReviewAttacks(unittest.TestCase):
    def test_tensor_closed_under_published_segment(self) -> None:
        seen, kept, freed = run_as(_tensor_closed_under_segment, uniq("atk"))
        self.assertEqual((seen, kept, freed), (True, True, True))  # freed by the segment's close

    def test_prefetch_keeps_handle_open(self) -> None:
        cpu = run_as(_prefetch_then_handle_close, uniq("atk"))
        self.assertLess(cpu, 0.3, f"{cpu:.2f} s of CPU in 1 s of sleep: the library thread spins")


if __name__ == "__main__":
    unittest.main()
