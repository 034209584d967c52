# SPDX-License-Identifier: MIT
"""The GPU path of the package over the real C GPU layer with a stand-in
libcuda (tests/fakecuda/fakecuda.c: "device memory" is a memfd in host
memory).  Proves the plumbing a GPU run relies on (metadata, fds, mappings,
lifetimes, revocation, C interoperability) on hosts without a GPU; what
only CUDA can prove is in test_gpu.py."""
from __future__ import annotations

import ctypes
import errno
import gc
import os
import struct
import time
import unittest

from helpers import BUILD, NEED_ROOT, UID0, Broker, errno_of, handle, is_root, publishing_child, run_as, uniq

import nvbridge
from nvbridge import Access, gpu
from nvbridge._lib import GpuMeta, lib

FAKE = os.environ.get("NVB_FAKE_CUDA", os.path.join(BUILD, "python", "libfakecuda.so"))
NO_FAKE = "" if os.path.exists(FAKE) else f"{FAKE} not built (make check-python builds it)"


def fill(t: nvbridge.SharedTensor, seed: int) -> bytes:
    data = bytes((i * 7 + seed) & 0xFF for i in range(t.nbytes))
    ctypes.memmove(t.ptr, data, len(data))
    return data


@unittest.skipIf(bool(NO_FAKE), NO_FAKE)
class FakeGpu(unittest.TestCase):
    def setUp(self) -> None:
        self.g = nvbridge.Gpu(FAKE)

    def tearDown(self) -> None:
        self.g.close()

    def test_sm_options(self) -> None:
        """sm_yield reaches nvb_gpu_open: the stand-in records the priority
        of the stream the library makes for it (its least, 0), only then."""
        prio = ctypes.c_int.in_dll(ctypes.CDLL(FAKE), "fake_last_stream_prio")
        for yield_, want in ((False, 1), (True, 0)):
            prio.value = 1
            g = nvbridge.Gpu(FAKE, sm_ctas=8, sm_yield=yield_)
            try:
                self.assertFalse(g.has_kernel())  # the stand-in cannot load it (or none is built in)
                t = g.empty((4096,), "uint8")
                # an SM copy readies the device first (the yielding stream with it), then fails
                self.assertEqual(errno_of(lambda: g.copy(t.ptr, t.ptr + 2048, 1024,
                                                         flags=gpu.COPY_SM)), errno.EOPNOTSUPP)
                self.assertEqual(prio.value, want)
                t.close()
            finally:
                g.close()
        with self.assertRaises(ValueError):
            nvbridge.Gpu(FAKE, sm_ctas=-1)

    def test_alloc_interfaces(self) -> None:
        t = self.g.empty((4, 8), "float16")
        self.assertTrue(t.is_cuda)
        self.assertEqual(t.__dlpack_device__(), (2, 0))
        self.assertEqual(t._mem.size, 2 << 20)  # rounded up to the granularity
        self.assertEqual(t._mem.handle_types, gpu.HANDLE_POSIX_FD)  # FABRIC refused, fallback ran
        cai = t.__cuda_array_interface__
        self.assertEqual((cai["data"], cai["shape"], cai["typestr"]), ((t.ptr, False), (4, 8), "<f2"))
        cap = t.__dlpack__(stream=None, max_version=(1, 0))
        t.close()
        self.assertFalse(t.closed)
        del cap
        gc.collect()
        self.assertTrue(t.closed)
        self.assertEqual(self.g._live, 0)

    def roundtrip(self, uid: "int | None") -> None:
        t = self.g.empty((64, 32), "int32")
        data = fill(t, 3)
        name = uniq("fgpu")
        owner = os.geteuid()

        def consumer() -> tuple:
            g = nvbridge.Gpu(FAKE)
            with handle() as h:
                u = h.import_tensor(name, expect_uid=owner, gpu=g)
                seen = (u.is_cuda, u.shape, u.dtype.name, u.entry.uid,
                        ctypes.string_at(u.ptr, u.nbytes) == data)
                ctypes.memmove(u.ptr, bytes(b ^ 0xFF for b in data), len(data))
                u.close()
            g.close()
            return seen
        with handle() as h:
            h.publish_tensor(name, t, access=Access.UID if uid else Access.OWNER, uid=uid)
            seen = run_as(consumer, uid=uid)
        self.assertEqual(seen, (True, (64, 32), "int32", owner, True))
        self.assertEqual(ctypes.string_at(t.ptr, t.nbytes), bytes(b ^ 0xFF for b in data))
        t.close()

    def test_across_processes(self) -> None:
        self.roundtrip(None)

    @unittest.skipUnless(is_root(), NEED_ROOT)
    def test_across_uids(self) -> None:
        self.roundtrip(UID0 + 41)

    def test_revocation_reaches_the_mapping(self) -> None:
        name = uniq("frev")

        def make() -> nvbridge.SharedTensor:
            t = nvbridge.Gpu(FAKE).empty(4096, "uint8")
            fill(t, 9)
            return t
        c, go = publishing_child(name, make)
        with handle() as h:
            u = h.import_tensor(name, gpu=self.g)
            self.assertFalse(u.revoked)
            go.post()
            c.result()
            evs = []
            for _ in range(50):
                evs += self.g.poll_events(h)
                if u.revoked:
                    break
                time.sleep(0.05)
            self.assertTrue(u.revoked)
            self.assertTrue(u._mem.revoked())  # nvb_gpu_map_revoked(): the C layer knows too
            self.assertIn(nvbridge.EventType.REVOKED, [e.type for e in evs])
            u.close()

    def test_two_registries_same_name_and_id(self) -> None:
        """One Gpu, handles on two brokers whose entries have the same name
        and the same id (ids are counted per broker): each import maps its
        own broker's memory, and a revocation read through one handle
        leaves the other broker's tensor alone."""
        gp = nvbridge.Gpu(FAKE)
        ta, tb = gp.empty(4096, "uint8"), gp.empty(4096, "uint8")
        da, db = fill(ta, 1), fill(tb, 2)
        name = uniq("2reg")
        b = Broker()
        try:
            with handle() as pa, b.open() as pb, handle() as ha, b.open() as hb:
                ida = pa.publish_tensor(name, ta)
                pad = 0
                while pad + 1 < ida:
                    pad = pb.publish(f"pad.{pad}", blob=b"x")
                self.assertEqual(pb.publish_tensor(name, tb), ida)
                ua = ha.import_tensor(name, gpu=self.g)
                ub = hb.import_tensor(name, gpu=self.g)
                self.assertEqual(ctypes.string_at(ua.ptr, 4096), da)
                self.assertEqual(ctypes.string_at(ub.ptr, 4096), db,
                                 "the import through broker B mapped broker A's entry")
                pb.unpublish(ida)
                for _ in range(100):
                    self.g.poll_events(hb)
                    if ub.revoked:
                        break
                    time.sleep(0.02)
                self.assertTrue(ub._mem.revoked())
                self.assertFalse(ua._mem.revoked(), "B's revocation revoked A's mapping")
                self.assertEqual(ctypes.string_at(ua.ptr, 4096), da)
                ua.close()
                ub.close()
        finally:
            b.stop()
            ta.close()
            tb.close()
            gp.close()

    def test_c_interop(self) -> None:
        """A Python-published tensor imports with C's nvb_gpu_import(), and a
        C-published buffer (nvb_gpu_publish: no descriptor) imports in Python
        as flat bytes."""
        l = lib()
        l.nvb_gpu_import.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                                     ctypes.c_int64, ctypes.c_uint32, ctypes.POINTER(ctypes.c_void_p)]
        l.nvb_gpu_publish.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                                      ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint64)]
        t = self.g.empty((16, 16), "float32")
        data = fill(t, 5)
        a, b = uniq("py2c"), uniq("c2py")
        with handle() as h, handle() as h2:
            h.publish_tensor(a, t)
            m = ctypes.c_void_p()
            self.assertEqual(l.nvb_gpu_import(self.g._g, h2._h, a.encode(), 0, 0, ctypes.byref(m)), 0)
            self.assertEqual(ctypes.string_at(l.nvb_gpu_map_ptr(m), len(data)), data)
            l.nvb_gpu_unmap(m)
            self.assertEqual(l.nvb_gpu_publish(self.g._g, h._h, b.encode(), t._mem._b, 2, None), 0)
            u = h2.import_tensor(b, gpu=self.g)
            self.assertEqual((u.dtype.name, u.shape), ("uint8", (2 << 20,)))
            self.assertEqual(ctypes.string_at(u.ptr, len(data)), data)
            u.close()
        t.close()

    def test_hostile_gpu_metadata(self) -> None:
        t = self.g.empty(64, "uint8")
        fd, meta = t._mem.export()
        good = GpuMeta.from_buffer_copy(meta)
        odd = GpuMeta.from_buffer_copy(meta)
        odd.alloc_size = good.alloc_size + 1  # not a multiple of the granularity
        big = nvbridge.meta.TensorDesc(nvbridge.DLDeviceType.CUDA, nvbridge.dtype("uint8"),
                                       (good.alloc_size + 1,), (1,)).pack()
        host = nvbridge.meta.TensorDesc(nvbridge.DLDeviceType.CPU, nvbridge.dtype("uint8"), (4,), (1,)).pack()
        cases = {
            "size not a granule multiple": (bytes(odd), errno.EINVAL),
            "tensor larger than the mapping": (meta + big, errno.EBADMSG),
            "GPU metadata with a host descriptor": (meta + host, errno.EBADMSG),
        }
        with handle() as h:
            for what, (blob, want) in cases.items():
                with self.subTest(what):
                    name = uniq("fbad")
                    h.publish(name, fd=fd, blob=blob)
                    self.assertEqual(errno_of(lambda: h.import_tensor(name, gpu=self.g)), want)
            gc.collect()
            self.assertEqual(self.g._live, 1)  # only t: no mapping leaked
        t.close()

    def test_republish_import_refused(self) -> None:
        t = self.g.empty(64, "uint8")
        with handle() as h:
            h.publish_tensor(uniq("orig"), t)
            name = uniq("orig2")
            h.publish_tensor(name, t)
            u = h.import_tensor(name, gpu=self.g)
            self.assertEqual(errno_of(lambda: h.publish_tensor(uniq("again"), u)), errno.EINVAL)
            self.assertEqual(errno_of(lambda: h.import_tensor(name)), errno.ENODEV)  # no gpu=
            self.assertEqual(errno_of(lambda: h.import_tensor(name, gpu=self.g, gpu_flags=0x80)),
                             errno.EINVAL)  # unknown import flags reach the C layer
            v = h.import_tensor(name, gpu=self.g, gpu_flags=gpu.IMPORT_NO_FABRIC | gpu.IMPORT_LOCAL_ONLY)
            self.assertEqual(v._mem.handle_type, gpu.HANDLE_POSIX_FD)
            v.close()
            u.close()
        t.close()

    def test_copies_and_flags(self) -> None:
        n = 1 << 16
        src, dst, flag = self.g.empty(n, "uint8"), self.g.empty(n, "uint8"), self.g.empty(1, "uint32")
        data = fill(src, 1)
        self.g.copy(dst.ptr, src.ptr, n, streams=0, flags=gpu.COPY_CE)
        self.assertEqual(ctypes.string_at(dst.ptr, n), data)
        ctypes.memset(dst.ptr, 0, n)
        self.g.copy_blocks([(dst.ptr, src.ptr + 100, 50), (dst.ptr + 1000, src.ptr, 10)],
                           flags=gpu.COPY_LOOP)
        self.assertEqual(ctypes.string_at(dst.ptr, 50), data[100:150])
        self.assertEqual(ctypes.string_at(dst.ptr + 1000, 10), data[:10])
        self.g.signal(0, flag.ptr, 42)
        self.assertEqual(struct.unpack("<I", ctypes.string_at(flag.ptr, 4))[0], 42)
        self.assertEqual(errno_of(lambda: self.g.copy(dst.ptr, src.ptr, n, flags=0xF0000000)),
                         errno.EINVAL)
        for t in (src, dst, flag):
            t.close()

    def test_close_waits_for_tensors(self) -> None:
        g = nvbridge.Gpu(FAKE)
        t = g.empty(4096, "uint8")
        cap = t.__dlpack__()
        t.close()
        g.close()
        self.assertEqual(errno_of(g.device_count), errno.EBADF)
        self.assertIsNotNone(g._g)  # still held by the capsule's mapping
        del cap
        gc.collect()
        self.assertIsNone(g._g)


if __name__ == "__main__":
    unittest.main()
