# SPDX-License-Identifier: MIT
"""Shared host tensors: the DLPack capsule code, the descriptor format and
zero-copy imports across processes and uids (numpy / torch when present)."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import os
import random
import signal
import struct
import unittest

from helpers import NEED_ROOT, UID0, Child, Sync, errno_of, handle, is_root, publishing_child, run_as, uniq

import nvbridge
from nvbridge import Access, NvbridgeError, dlpack, meta
from nvbridge.meta import TensorDesc

try:
    import numpy
except ImportError:
    numpy = None
try:
    import torch
except ImportError:
    torch = None

NO_NUMPY = "python3-numpy is not installed"
NO_TORCH = "python3-torch is not installed"

_api = ctypes.pythonapi
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def host_desc(shape, dtype="float32", strides=None, offset=0) -> TensorDesc:
    dt = nvbridge.dtype(dtype)
    return TensorDesc(nvbridge.DLDeviceType.CPU, dt, tuple(shape),
                      tuple(strides) if strides else meta.contiguous_strides(shape), offset)


class Capsules(unittest.TestCase):
    """The capsule plumbing GPU imports share, without numpy or torch."""

    def setUp(self) -> None:
        gc.collect()
        self.live0 = nvbridge.live_exports()

    def test_unconsumed_capsule_frees_once(self) -> None:
        t = nvbridge.empty((3, 5), "int32")
        calls = dlpack.deleter_calls
        cap = t.__dlpack__()
        self.assertEqual(nvbridge.live_exports(), self.live0 + 1)
        self.assertTrue(_api.PyCapsule_IsValid(cap, b"dltensor"))
        t.close()  # deferred: the capsule still holds the memory
        self.assertFalse(t.closed)
        del cap
        gc.collect()
        self.assertEqual(dlpack.deleter_calls, calls + 1)
        self.assertEqual(nvbridge.live_exports(), self.live0)
        self.assertTrue(t.closed)

    def test_layout(self) -> None:
        t = nvbridge.empty((2, 3, 4), "float16")
        t2 = t.as_strided((4, 3), (1, 4), offset=2 * 12 * 2)  # a transposed slice
        for versioned in (False, True):
            with self.subTest(versioned=versioned):
                cap = t2.__dlpack__(max_version=(1, 0) if versioned else None)
                name = b"dltensor_versioned" if versioned else b"dltensor"
                self.assertTrue(_api.PyCapsule_IsValid(cap, name))
                p = _api.PyCapsule_GetPointer(cap, name)
                if versioned:
                    m = dlpack._DLManagedTensorVersioned.from_address(p)
                    self.assertEqual((m.version.major, m.flags), (1, 0))
                else:
                    m = dlpack._DLManagedTensor.from_address(p)
                d = m.dl_tensor
                self.assertEqual(d.data, t.ptr + 48)
                self.assertEqual((d.device.device_type, d.device.device_id), (1, 0))
                self.assertEqual((d.ndim, d.dtype.code, d.dtype.bits, d.dtype.lanes), (2, 2, 16, 1))
                self.assertEqual((d.shape[0], d.shape[1], d.strides[0], d.strides[1]), (4, 3, 1, 4))
                self.assertEqual(d.byte_offset, 0)
                # a consumer: takes the capsule, calls the deleter itself, once
                calls = dlpack.deleter_calls
                ctypes.pythonapi.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
                ctypes.pythonapi.PyCapsule_SetName(cap, b"used_" + name)
                m.deleter(p)
                del cap
                gc.collect()
                self.assertEqual(dlpack.deleter_calls, calls + 1)
        t2.close()
        t.close()
        self.assertEqual(nvbridge.live_exports(), self.live0)

    def test_refusals(self) -> None:
        t = nvbridge.empty(4)
        with self.assertRaises(BufferError):
            t.__dlpack__(copy=True)
        with self.assertRaises(BufferError):
            t.__dlpack__(dl_device=(2, 0))
        self.assertEqual(t.__dlpack_device__(), (1, 0))
        self.assertFalse(hasattr(t, "__cuda_array_interface__"))
        self.assertEqual(t.__array_interface__["typestr"], "<f4")
        t.close()
        with self.assertRaises(BufferError):
            t.__dlpack__()
        with self.assertRaises(ValueError):
            t.as_strided((2,), (1,))
        with self.assertRaises(NvbridgeError):
            nvbridge.empty(4).as_strided((5,), (1,), offset=4096 - 16)  # runs off the page
        with self.assertRaises(TypeError):
            nvbridge.empty(4, "float8")

    def test_memfd_is_sealed(self) -> None:
        t = nvbridge.empty((10,), "uint8")
        seals = fcntl.fcntl(t._mem.fd, fcntl.F_GET_SEALS)
        self.assertEqual(seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL),
                         fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        with self.assertRaises(OSError):
            os.ftruncate(t._mem.fd, 0)
        t.memoryview()[:3] = b"abc"
        self.assertEqual(os.pread(t._mem.fd, 3, 0), b"abc")
        t.close()


class Descriptor(unittest.TestCase):
    """The NVBT metadata format, fed hostile blobs."""

    def good(self) -> bytes:
        return host_desc((2, 3), "int16", offset=8).pack()

    def test_roundtrip(self) -> None:
        for d in (host_desc((2, 3), "int16", offset=8), host_desc(()),
                  host_desc((4, 0, 2), "bool"), host_desc((3, 3), "complex128", strides=(-3, 1), offset=96)):
            with self.subTest(d=d):
                b = d.pack()
                self.assertEqual(len(b), 32 + 16 * len(d.shape))
                self.assertEqual(meta.parse(b), d)
                self.assertEqual(meta.split_blob(b), (None, d))

    def bad(self, blob: bytes) -> None:
        with self.assertRaises(NvbridgeError) as cm:
            meta.split_blob(blob)
        self.assertEqual(cm.exception.errno, errno.EBADMSG)

    def test_hostile(self) -> None:
        g = bytearray(self.good())

        def patch(off: int, fmt: str, v: int) -> bytes:
            b = bytearray(g)
            struct.pack_into(fmt, b, off, v)
            return bytes(b)
        cases = {
            "empty": b"", "short": bytes(g[:20]), "magic": b"XXXX" + bytes(g[4:]),
            "version 2": patch(4, "<H", 2), "header length": patch(6, "<H", 40),
            "device 7": patch(8, "<B", 7), "dtype code 9": patch(9, "<B", 9),
            "bits 12": patch(10, "<B", 12), "ndim 33": patch(11, "<B", 33),
            "ndim 3 for 2": patch(11, "<B", 3), "flags": patch(12, "<I", 2),
            "extent": patch(24, "<Q", 1), "negative dim": patch(32, "<q", -1),
            "trailing byte": bytes(g) + b"\0", "truncated": bytes(g[:-1]),
            "GPU meta too small": struct.pack("<II", nvbridge._lib.GPU_META_MAGIC, 8) + bytes(200),
            "GPU meta size past the blob": struct.pack("<II", nvbridge._lib.GPU_META_MAGIC, 4096) + bytes(200),
        }
        for what, blob in cases.items():
            with self.subTest(what):
                self.bad(blob)

    def test_bounds(self) -> None:
        d = meta.parse(self.good())  # 2x3 int16 at offset 8: bytes [8, 20)
        d.fits(20)
        with self.assertRaises(NvbridgeError):
            d.fits(19)
        neg = host_desc((3,), "int32", strides=(-1,), offset=4)  # bytes [-4, 8)
        with self.assertRaises(NvbridgeError):
            neg.fits(4096)
        host_desc((3,), "int32", strides=(-1,), offset=8).fits(12)
        huge = host_desc((1 << 40, 1 << 40), "float64")
        with self.assertRaises(NvbridgeError):
            huge.fits(1 << 62)

    def test_fuzz(self) -> None:
        """Random mutations: parsed, or EBADMSG; nothing else escapes."""
        rng = random.Random(14)
        base = host_desc((2, 3, 4), "float32", strides=(12, 1, 3), offset=64).pack()
        ok = 0
        for _ in range(3000):
            b = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                if op < 0.6 and b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
                elif op < 0.8:
                    del b[rng.randrange(len(b) + 1):]
                else:
                    b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            try:
                _, d = meta.split_blob(bytes(b))
                d.fits(1 << 20)
                ok += 1
            except NvbridgeError as e:
                self.assertEqual(e.errno, errno.EBADMSG)
        self.assertLess(ok, 3000)


def _publish_raw(name: str, fd: int, blob: bytes, ready: Sync, done: Sync, uid_access=Access.SCOPE) -> None:
    with handle() as h:
        h.publish(name, fd=fd if fd >= 0 else None, blob=blob, access=uid_access)
        ready.post()
        done.wait(30)


class HostImports(unittest.TestCase):
    def serve(self, fn, *args, uid=None):  # type: ignore[no-untyped-def]
        ready, done = Sync(), Sync()
        c = Child(fn, *args, ready, done, uid=uid)
        ready.wait()
        self.addCleanup(lambda: (done.post(), c.result()))
        return c

    def test_bad_files_refused(self) -> None:
        """Entries whose file cannot back the descriptor are refused before any mapping."""
        d = host_desc((1024,), "float32").pack()  # 4096 bytes
        small = os.memfd_create("s", os.MFD_ALLOW_SEALING)
        os.ftruncate(small, 4000)
        fcntl.fcntl(small, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        gpu_fake = bytes(nvbridge._lib.GpuMeta(magic=nvbridge._lib.GPU_META_MAGIC, size=ctypes.sizeof(nvbridge._lib.GpuMeta),
                                               alloc_size=1 << 21, granularity=1 << 21))
        cases = {
            "descriptor larger than the file": (small, d, errno.EBADMSG),
            "no file": (-1, d, errno.EBADMSG),
            "garbage blob": (small, b"hello", errno.EBADMSG),
            "GPU entry, no Gpu given": (small, gpu_fake, errno.ENODEV),
        }
        with handle() as h:
            for what, (fd, blob, want) in cases.items():
                with self.subTest(what):
                    name = uniq("bad")
                    self.serve(_publish_raw, name, fd, blob)
                    self.assertEqual(errno_of(lambda: h.import_tensor(name)), want)
        os.close(small)

    def test_unsealed_memfd(self) -> None:
        """The attack: a publisher shrinks its memfd under an importer's mapping,
        and the importer dies of SIGBUS.  Unsealed files are refused unless
        the importer opts in (allow_unsealed=True, which shows the attack)."""
        name = uniq("unsealed")
        fd = os.memfd_create("u", 0)
        os.ftruncate(fd, 4096)
        self.serve(_publish_raw, name, fd, host_desc((1024,), "float32").pack())
        with handle() as h:
            self.assertEqual(errno_of(lambda: h.import_tensor(name)), errno.EPERM)

            def victim() -> None:
                import faulthandler
                faulthandler.disable()  # the crash is the expected outcome
                with handle() as h2:
                    t = h2.import_tensor(name, allow_unsealed=True)
                    os.ftruncate(fd, 0)  # the publisher's move (same file)
                    t.memoryview()[100]
            c = Child(victim)
            c.wait()
            self.assertTrue(os.WIFSIGNALED(c.status) and os.WTERMSIG(c.status) == signal.SIGBUS,
                            f"status {c.status}")
        os.close(fd)

    def test_readonly_file(self) -> None:
        t = nvbridge.empty((8,), "uint8")
        t.memoryview()[:] = b"readonly"
        ro = os.open(f"/proc/self/fd/{t._mem.fd}", os.O_RDONLY)
        name = uniq("ro")
        self.serve(_publish_raw, name, ro, t.desc.pack())
        with handle() as h:
            self.assertEqual(errno_of(lambda: h.import_tensor(name)), errno.EACCES)
            u = h.import_tensor(name, writable=False)
            self.assertTrue(u.readonly)
            self.assertEqual(bytes(u.memoryview()[:8]), b"readonly")
            with self.assertRaises(TypeError):
                u.memoryview()[0] = 1
            cap = u.__dlpack__(max_version=(1, 0))
            p = _api.PyCapsule_GetPointer(cap, b"dltensor_versioned")
            self.assertEqual(dlpack._DLManagedTensorVersioned.from_address(p).flags,
                             dlpack.DLPACK_FLAG_READ_ONLY)
            del cap
            u.close()
        os.close(ro)
        t.close()

    def test_revoked_visible(self) -> None:
        name = uniq("rev")

        def make() -> nvbridge.SharedTensor:
            t = nvbridge.empty(16, "uint8")
            t.memoryview()[:] = b"x" * 16
            return t
        c, go = publishing_child(name, make)
        with handle() as h:
            u = h.import_tensor(name)
            self.assertFalse(u.revoked)
            self.assertEqual(u.entry.pid, c.pid)
            go.post()
            c.result()
            evs = list(h.events(timeout=2))
            self.assertTrue(any(e.type == nvbridge.EventType.REVOKED for e in evs))
            self.assertTrue(u.revoked)
            self.assertEqual(bytes(u.memoryview()), b"x" * 16)  # the pages outlive the entry
            u.close()

    def test_maps_only_what_the_tensor_needs(self) -> None:
        fd = os.memfd_create("big", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 1 << 30)  # sparse; an importer must not map it all
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        name = uniq("big")
        self.serve(_publish_raw, name, fd, host_desc((3,), "int64", offset=8192).pack())
        with handle() as h:
            u = h.import_tensor(name)
            self.assertEqual(u._mem.size, 3 * 4096)
            u.close()
        os.close(fd)

    def test_watch_slots_exhausted(self) -> None:
        """With every watch slot taken, imports watch the scope instead and
        revocations still reach the tensors."""
        from helpers import Broker
        b = Broker("--max-watches", "1")
        try:
            with b.open() as p, b.open() as h:
                ts = [nvbridge.empty(4) for _ in range(3)]
                for i, t in enumerate(ts):
                    p.publish_tensor(f"w/{i}", t)
                us = [h.import_tensor("w/0")]
                p.unpublish(name="w/0")  # unseen yet: the event waits in the queue
                us += [h.import_tensor(f"w/{i}") for i in (1, 2)]
                self.assertEqual(errno_of(lambda: h.watch("other")), errno.ENOSPC)
                p.unpublish(name="w/2")
                evs = list(h.events(timeout=1))
                self.assertIn(("w/2", nvbridge.EventType.REVOKED), [(e.name, e.type) for e in evs])
                self.assertEqual([u.revoked for u in us], [True, False, True])
                for x in us + ts:
                    x.close()
        finally:
            self.assertEqual(b.stop(), 0)

    def test_revocation_lost_in_an_overflow(self) -> None:
        """The event queue overflows and drops the revocation: the OVERFLOW
        record makes the tensor look its entry up again."""
        from helpers import Broker
        b = Broker("--max-events", "2")
        try:
            with b.open() as p, b.open() as h:
                t, other = nvbridge.empty(4), nvbridge.empty(4)
                p.publish_tensor("o/t", t)
                p.publish_tensor("o/keep", other)
                u, keep = h.import_tensor("o/t"), h.import_tensor("o/keep")
                h.watch("noise/", prefix=True)
                for i in range(4):
                    p.publish(f"noise/{i}", blob=b"x")
                p.unpublish(name="o/t")  # its event is one of those dropped
                evs = list(h.events(timeout=1))
                self.assertIn(nvbridge.EventType.OVERFLOW, [e.type for e in evs])
                self.assertNotIn(("o/t", nvbridge.EventType.REVOKED), [(e.name, e.type) for e in evs])
                self.assertEqual((u.revoked, keep.revoked), (True, False))
                for x in (u, keep, t, other):
                    x.close()
        finally:
            self.assertEqual(b.stop(), 0)

    @unittest.skipUnless(is_root(), NEED_ROOT)
    def test_denied_import(self) -> None:
        t = nvbridge.empty(4)
        name = uniq("deny")
        with handle() as h:
            h.publish_tensor(name, t, access=Access.UID, uid=UID0 + 21)

            def imp() -> str:
                with handle() as h2:
                    return repr(h2.import_tensor(name))
            self.assertIn("float32[4]", run_as(imp, uid=UID0 + 21))
            with self.assertRaises(NvbridgeError) as cm:
                run_as(imp, uid=UID0 + 22)
            self.assertIn(cm.exception.errno, (errno.ENOENT, errno.EACCES))
        t.close()


def _numpy_consumer(name: str, owner: int, ready: Sync) -> list:
    """Imports, checks against the expected sum, writes back through torch
    when present (else numpy), returns what it saw."""
    with handle() as h:
        u = h.import_tensor(name, wait=True, timeout=10, expect_uid=owner)
        a = numpy.from_dlpack(u)
        seen = [a.shape, a.strides, str(a.dtype), float(a.sum()), bool(a.flags.writeable)]
        if torch is not None:
            x = torch.from_dlpack(u)
            seen.append((tuple(x.shape), x.stride(), str(x.dtype)))
            x.mul_(-1)  # write back through the other library
        else:
            numpy.asarray(u)[...] *= -1
        ready.post()
        del a
        return seen


@unittest.skipIf(numpy is None, NO_NUMPY)
class ZeroCopy(unittest.TestCase):
    def roundtrip(self, uid=None, access=Access.OWNER, strided=False):  # type: ignore[no-untyped-def]
        t = nvbridge.empty((3, 4, 5), "float32")
        a = numpy.asarray(t)
        a[...] = numpy.random.default_rng(1).standard_normal(a.shape, dtype=numpy.float32)
        view = t.as_strided((5, 4, 3), (1, 5, 20)) if strided else t  # a permuted view
        expect_strides = numpy.asarray(view).strides
        expect = numpy.asarray(view).copy()
        name = uniq("zc")
        ready = Sync()
        with handle() as h:
            h.publish_tensor(name, view, access=access, uid=uid)
            seen = Child(_numpy_consumer, name, os.geteuid(), ready, uid=uid).result(60)
            ready.wait()
        self.assertEqual(seen[0], expect.shape)
        self.assertEqual(seen[1], expect_strides)
        self.assertEqual(seen[2], "float32")
        self.assertAlmostEqual(seen[3], float(expect.sum()), places=3)
        if torch is not None:
            self.assertEqual(seen[5][0], expect.shape)
            self.assertEqual(seen[5][1], tuple(s // 4 for s in expect_strides))
        numpy.testing.assert_array_equal(numpy.asarray(view), -expect)  # no copy anywhere
        if view is not t:
            view.close()
        t.close()

    def test_same_user(self) -> None:
        self.roundtrip()

    def test_strided(self) -> None:
        self.roundtrip(strided=True)

    @unittest.skipUnless(is_root(), NEED_ROOT)
    def test_other_uid(self) -> None:
        self.roundtrip(uid=UID0 + 20, access=Access.UID)

    def test_numpy_keeps_mapping_alive(self) -> None:
        t = nvbridge.empty((4,), "int64")
        a = numpy.from_dlpack(t)
        t.close()
        self.assertFalse(t.closed)  # numpy holds it
        self.assertEqual(a.sum(), 0)
        del a
        gc.collect()
        self.assertTrue(t.closed)


@unittest.skipIf(torch is None, NO_TORCH)
class Torch(unittest.TestCase):
    def test_dtypes(self) -> None:
        names = ["float16", "bfloat16", "float32", "float64", "int8", "int32", "int64",
                 "uint8", "complex64"]
        if int(torch.__version__.split(".")[0]) >= 2:
            names.append("bool")  # torch 1.13 does not import DLPack's kDLBool
        for name in names:
            with self.subTest(name):
                t = nvbridge.empty((2, 3), name)
                x = torch.from_dlpack(t)
                self.assertEqual(x.dtype, getattr(torch, name))
                self.assertEqual(tuple(x.shape), (2, 3))
                self.assertEqual(x.data_ptr(), t.ptr)
                del x
                t.close()
                gc.collect()
                self.assertTrue(t.closed)
        self.assertEqual(nvbridge.dtype(torch.float16).name, "float16")

    def test_tensor_outlives_close(self) -> None:
        t = nvbridge.empty((5,), "float32")
        x = torch.from_dlpack(t)
        x.fill_(2.5)
        t.close()
        gc.collect()
        self.assertEqual(float(x.sum()), 12.5)
        self.assertFalse(t.closed)
        del x
        gc.collect()
        self.assertTrue(t.closed)


if __name__ == "__main__":
    unittest.main()
