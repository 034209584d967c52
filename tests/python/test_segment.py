# SPDX-License-Identifier: MIT
"""nvbridge.TransferEngine (segments and transfer batches) over the real C
layer with the stand-in libcuda: an exporter child publishes a segment of
random bytes, this process opens it and moves random blocks, every byte
checked; refusals leave memory untouched; completions through eventfds."""
from __future__ import annotations

import ctypes
import errno
import os
import select
import threading
import time
import unittest

from helpers import BUILD, Child, Sync, errno_of, handle, uniq

import nvbridge
from nvbridge import segment as sg

FAKE = os.environ.get("NVB_FAKE_CUDA", os.path.join(BUILD, "gpu-fake", "libfakecuda.so"))
NO_FAKE = "" if os.path.exists(FAKE) else f"{FAKE} not built (make check-python builds it)"
SIZE = 2 << 20


def exporter(name: str, ready: Sync, go: Sync) -> None:
    """Publishes a segment of random bytes; closes it on 'c', exits on 'q'."""
    g = nvbridge.Gpu(FAKE)
    with handle() as h:
        eng = nvbridge.TransferEngine(g, h)
        t = g.empty(SIZE, "uint8")
        ctypes.memmove(t.ptr, os.urandom(SIZE), SIZE)
        seg = eng.register(name, t)
        ready.post()
        while True:
            c = go.wait(60)
            if c == b"c":
                seg.close()
                ready.post()
            else:
                break


@unittest.skipIf(bool(NO_FAKE), NO_FAKE)
class Segments(unittest.TestCase):
    def setUp(self) -> None:
        self.name = uniq("seg")
        self.ready, self.go = Sync(), Sync()
        self.child = Child(exporter, self.name, self.ready, self.go)
        self.ready.wait()
        self.g = nvbridge.Gpu(FAKE)
        self.h = handle()
        self.eng = nvbridge.TransferEngine(self.g, self.h)
        self.local = self.g.empty(SIZE, "uint8")
        self.seg = self.eng.open_segment(self.name, timeout=5)

    def tearDown(self) -> None:
        self.seg.close()
        self.local.close()
        self.g.close()
        self.h.close()
        self.go.post(b"q")
        self.child.result()

    def mem(self, ptr: int, n: int) -> bytes:
        return ctypes.string_at(ptr, n)

    def test_random_batches(self) -> None:
        self.assertEqual(self.seg.size, SIZE)
        self.assertFalse(self.seg.local)
        rnd = int.from_bytes(os.urandom(4), "little")
        for r in range(12):
            n = 1 + (rnd + r * 7) % 32
            slot = SIZE // n
            reqs, expect = [], []
            for i in range(n):
                ln = 1 + int.from_bytes(os.urandom(3), "little") % min(slot, 40000)
                lo = i * slot + int.from_bytes(os.urandom(3), "little") % (slot - ln + 1)
                ro = i * slot + int.from_bytes(os.urandom(3), "little") % (slot - ln + 1)
                op = sg.READ if os.urandom(1)[0] & 1 else sg.WRITE
                lp, rp = self.local.ptr + lo, self.seg.ptr + ro
                ctypes.memmove(lp if op == sg.READ else rp, os.urandom(ln), ln)  # poison
                src = self.mem(rp if op == sg.READ else lp, ln)
                expect.append((lp if op == sg.READ else rp, src))
                reqs.append((op, lp, self.seg, ro, ln))
            with self.eng.submit(reqs, user_data=r) as b:
                b.wait(5)
                self.assertEqual(b.status(), [0] * n)
                self.assertTrue(b.done)
                self.assertEqual(b.user_data, r)
                self.assertIn(b.method, (nvbridge.gpu.COPY_BATCH, nvbridge.gpu.COPY_LOOP))
            for dst, data in expect:
                self.assertEqual(self.mem(dst, len(data)), data)
        st = self.eng.stats()
        self.assertEqual((st["batches"], st["completed"], st["failed"]), (12, 12, 0))
        ss = self.seg.stats()
        self.assertEqual((ss["local"], ss["round_trips"], ss["owner_uid"]), (0, 1, os.geteuid()))  # watch + fetch: one round trip
        self.assertGreater(ss["fetch_ns"], 0)

    def test_refused_before_copy(self) -> None:
        ctypes.memmove(self.local.ptr, os.urandom(8192), 8192)
        before = self.mem(self.local.ptr, 8192)
        ok = (sg.READ, self.local.ptr, self.seg, 0, 4096)
        for bad, want in (((sg.READ, self.local.ptr + 4096, self.seg, SIZE - 10, 11), errno.ERANGE),
                          ((sg.READ, self.local.ptr + 4096, self.seg, 2**64 - 8, 16), errno.ERANGE),
                          ((sg.READ, self.local.ptr + 4096, self.seg, 0, 0), errno.EINVAL),
                          ((9, self.local.ptr + 4096, self.seg, 0, 1), errno.EINVAL),
                          ((sg.READ, self.local.ptr + 4096, None, 0, 1), errno.EINVAL)):
            self.assertEqual(errno_of(lambda: self.eng.submit([ok, bad])), want, bad)
            self.assertEqual(self.mem(self.local.ptr, 8192), before)
        self.assertEqual(self.eng.stats()["rejected"], 5)
        # revoked: the exporter closes its segment
        self.go.post(b"c")
        self.ready.wait()
        end = time.monotonic() + 5
        while not self.seg.revoked() and time.monotonic() < end:
            time.sleep(0.005)
        self.assertTrue(self.seg.revoked())
        self.assertEqual(errno_of(lambda: self.eng.submit([ok])), errno.ENOLINK)
        self.assertEqual(self.mem(self.local.ptr, 8192), before)

    def test_eventfds_and_threads(self) -> None:
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            b = self.eng.submit([(sg.WRITE, self.local.ptr, self.seg, 0, 1000)], eventfd=efd)
            self.assertTrue(select.select([efd, self.eng.fileno()], [], [], 5)[0])
            b.wait(5)
            self.assertEqual(os.eventfd_read(efd), 1)
            self.assertGreaterEqual(os.eventfd_read(self.eng.fileno()), 1)
            b.close()
        finally:
            os.close(efd)
        errs: list = []

        def worker(k: int) -> None:
            try:
                base = k * (SIZE // 4)
                for _ in range(20):
                    data = os.urandom(5000)
                    ctypes.memmove(self.local.ptr + base, data, len(data))
                    with self.eng.submit([(sg.WRITE, self.local.ptr + base, self.seg, base,
                                           len(data))]) as bt:
                        bt.wait(5)
                    if self.mem(self.seg.ptr + base, len(data)) != data:
                        errs.append(f"thread {k}: bytes differ")
            except Exception as e:  # noqa: BLE001
                errs.append(repr(e))
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errs, [])

    def test_owner_and_prefetch(self) -> None:
        self.assertEqual(errno_of(lambda: self.eng.open_segment(self.name,
                                                                 owner_uid=os.geteuid() + 77)),
                         errno.ENOENT)
        with self.assertRaises(ValueError):
            self.eng.open_segment(self.name, owner_uid=0, any_owner=True)
        with self.eng.open_segment(self.name, any_owner=True) as s2:
            st = s2.stats()
            self.assertEqual((st["cached"], st["round_trips"]), (1, 1))  # mapped and watched
        # a local segment: publish, stats, loopback transfer
        t = self.g.empty(1 << 20, "uint8")
        with self.eng.register(uniq("segl"), t) as mine:
            self.assertTrue(mine.local)
            self.assertEqual((mine.ptr, mine.size), (t.ptr, t._mem.size))
            self.assertEqual(mine.stats()["local"], 1)
            data = os.urandom(3000)
            ctypes.memmove(self.local.ptr, data, len(data))
            with self.eng.submit([(sg.WRITE, self.local.ptr, mine, 100, len(data))]) as b:
                b.wait(5)
            self.assertEqual(self.mem(t.ptr + 100, len(data)), data)
        t.close()
        # the handle outlives its segments: a close() meanwhile waits for them
        h2 = handle()
        eng2 = nvbridge.TransferEngine(self.g, h2)
        s3 = eng2.open_segment(self.name)
        h2.close()
        self.assertIsNotNone(h2._h)
        self.assertEqual(errno_of(lambda: eng2.open_segment(self.name)), errno.EBADF)
        s3.close()
        self.assertIsNone(h2._h)
        # import ahead: prefetched before it is published, opened without a request
        later = uniq("segp")
        self.eng.prefetch(later)
        self.assertEqual(errno_of(lambda: self.eng.open_segment(later)), errno.ENOENT)
        self.eng.prefetch(later)  # the failed open left it; a second call replaces it
        ready, go = Sync(), Sync()
        c = Child(exporter, later, ready, go)
        ready.wait()
        end = time.monotonic() + 5
        while True:
            with self.eng.open_segment(later) as s4:
                st = s4.stats()
                if st["round_trips"] == 0 or time.monotonic() > end:
                    break
            self.g.cache_trim()
            self.eng.prefetch(later)
            time.sleep(0.02)
        self.assertEqual((st["cached"], st["round_trips"], st["import_ns"]), (1, 0, 0))
        go.post(b"q")
        c.result()

    def test_open_segments(self) -> None:
        """open_segments(): both peers' in one call, adjacent in one
        reservation, every byte written and read back through batches;
        a missing or repeated name fails the call."""
        other = uniq("segm")
        ready, go = Sync(), Sync()
        c = Child(exporter, other, ready, go)
        ready.wait()
        self.seg.close()
        self.g.cache_trim()  # neither cached: both mapped by the call
        self.assertEqual(errno_of(lambda: self.eng.open_segments([self.name, uniq("none")])),
                         errno.ENOENT)
        self.assertEqual(errno_of(lambda: self.eng.open_segments([self.name, self.name])),
                         errno.EINVAL)
        self.assertEqual(errno_of(lambda: self.eng.open_segments([])), errno.EINVAL)
        a, b = self.eng.open_segments([self.name, other])
        self.assertEqual(sorted([a.ptr, b.ptr])[1], min(a.ptr, b.ptr) + SIZE)
        for s in (a, b):
            data = os.urandom(SIZE)
            ctypes.memmove(self.local.ptr, data, SIZE)
            with self.eng.submit([(sg.WRITE, self.local.ptr, s, 0, SIZE)]) as bt:
                bt.wait(5)
            ctypes.memmove(self.local.ptr, os.urandom(SIZE), SIZE)  # poisoned
            with self.eng.submit([(sg.READ, self.local.ptr, s, 0, SIZE)]) as bt:
                bt.wait(5)
            self.assertEqual(self.mem(self.local.ptr, SIZE), data)
        self.assertEqual(a.stats()["round_trips"], 1)
        self.assertEqual(b.stats()["round_trips"], 0)  # the shared wait is on the first
        a.close()
        b.close()
        self.seg = self.eng.open_segment(self.name)  # for tearDown
        go.post(b"q")
        c.result()
