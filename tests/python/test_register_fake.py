# SPDX-License-Identifier: MIT
"""Gpu.register / Gpu.register_tensor and the PyTorch allocator's memory,
over the real C GPU layer with the stand-in libcuda (tests/fakecuda): memory
the application allocated (blocks of libnvbridge_torch.so, called as
PyTorch calls it; cuMemCreate ranges over several allocations; cudaMalloc
memory) is registered with dtype/shape/strides, published, imported by
another process with the same import_tensor() call as nvb_gpu_alloc
memory, checked element by element and written back."""
from __future__ import annotations

import ctypes
import errno
import gc
import os
import random
import time
import unittest

from helpers import BUILD, Child, Sync, errno_of, handle, run_as, uniq

FAKE = os.environ.get("NVB_FAKE_CUDA", os.path.join(BUILD, "gpu-fake", "libfakecuda.so"))
os.environ["NVB_TORCH_LIBCUDA"] = FAKE  # the allocator loads the same stand-in as Gpu(FAKE)

import nvbridge  # noqa: E402
from nvbridge import Access, registered  # noqa: E402
from nvbridge.torch_alloc import _c as alloc_lib  # noqa: E402

try:
    import torch as torch_cpu
except ImportError:
    torch_cpu = None

MiB = 1 << 20
WHY = ""
if not os.path.exists(FAKE):
    WHY = f"{FAKE} not built (make check-python builds it)"
else:
    try:
        nvbridge.allocator_path()
    except nvbridge.NvbridgeError as e:
        WHY = f"libnvbridge_torch.so not built: {e}"
    if not WHY and not hasattr(nvbridge._lib.lib(), "nvb_gpu_register"):
        WHY = "libnvbridge has no nvb_gpu_register"
STREAM = 0x5100


def rand_bytes(n: int) -> bytes:
    return random.getrandbits(8 * n).to_bytes(n, "little")


class Strided:
    """Something with only __cuda_array_interface__ (as cupy / numba)."""

    def __init__(self, ptr: int, shape: tuple, typestr: str, strides: "tuple | None") -> None:
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": shape, "typestr": typestr,
                                         "strides": strides, "version": 3}


class OnlyDLPack:
    """Something with only the DLPack protocol."""

    def __init__(self, t: nvbridge.SharedTensor) -> None:
        self.t = t

    def __dlpack__(self, stream: "int | None" = None) -> object:
        return self.t.__dlpack__(stream=stream)

    def __dlpack_device__(self) -> tuple:
        return self.t.__dlpack_device__()


class NoInterfaceDtype(OnlyDLPack):
    """As a torch bfloat16 tensor: __cuda_array_interface__ raises TypeError."""

    @property
    def __cuda_array_interface__(self) -> dict:
        raise TypeError("dtype not supported by the interface")


def consumer(name: str, owner: int, want: bytes, shape: tuple, strides: tuple, dtype: str) -> tuple:
    """In another process: import, check every byte the tensor spans, write
    the complement back."""
    g = nvbridge.Gpu(FAKE)
    with handle() as h:
        u = h.import_tensor(name, expect_uid=owner, gpu=g)
        seen = (u.is_cuda, u.shape, u.strides, u.dtype.name)
        got = ctypes.string_at(u.ptr, len(want))
        ctypes.memmove(u.ptr, bytes(b ^ 0xFF for b in want), len(want))
        u.close()
    g.close()
    return seen, got == want, (shape, strides, dtype)


@unittest.skipIf(bool(WHY), WHY)
class RegisterFake(unittest.TestCase):
    def setUp(self) -> None:
        self.g = nvbridge.Gpu(FAKE)
        self.a = alloc_lib()

    def tearDown(self) -> None:
        gc.collect()
        self.assertEqual(self.g._live, 0, "a buffer or mapping leaked")
        self.g.close()

    def malloc(self, n: int) -> int:
        p = self.a.nvb_torch_malloc(n, 0, STREAM)
        self.assertTrue(p, nvbridge.torch_alloc.last_error())
        return int(p)

    def share(self, t: nvbridge.SharedTensor, span: int, access: Access = Access.OWNER,
              squatter: bool = False) -> None:
        """Random contents, publish, a child imports and writes back, check.
        squatter: another uid publishes the same name first (SCOPE) and
        holds it throughout; the importer names the owner it expects."""
        want = rand_bytes(span)
        ctypes.memmove(t.ptr, want, span)
        name = uniq("reg")
        sq = go = None
        if squatter:
            ready, go = Sync(), Sync()

            def squat() -> None:
                with handle() as hs:
                    hs.publish(name, blob=b"squatted", access=Access.SCOPE)
                    ready.post()
                    go.wait(30)
            sq = Child(squat, uid=2311, gid=2311)
            ready.wait()
        with handle() as h:
            eid = h.publish_tensor(name, t, access=access)
            seen, same, (shape, strides, dt) = run_as(consumer, name, os.geteuid(), want,
                                                      t.shape, t.strides, t.dtype.name)
            self.assertEqual(seen, (True, t.shape, t.strides, t.dtype.name))
            self.assertTrue(same, "importer saw other bytes")
            self.assertEqual(ctypes.string_at(t.ptr, span), bytes(b ^ 0xFF for b in want))
            h.unpublish(eid)
            left = [e.name for e in h.list() if e.name.startswith(name) and e.uid == os.geteuid()]
            self.assertEqual(left, [], "unpublish left entries behind")
        if sq is not None and go is not None:
            go.post()
            sq.wait()

    def test_allocator_block_subrange_strided(self) -> None:
        p = self.malloc(5 * MiB)
        # a (64, 100) float32 view with row stride 128 at 4096 bytes into the block
        t = self.g.register(p + 4096, 64 * 128 * 4, "float32", (64, 100), (128, 1))
        self.assertEqual(t._mem.kind, registered.KIND_VMM)
        self.assertEqual((t.shape, t.strides, t.ptr), ((64, 100), (128, 1), p + 4096))
        self.share(t, 63 * 128 * 4 + 100 * 4)
        t.close()
        self.a.nvb_torch_free(p, 5 * MiB, 0, STREAM)

    def test_cuda_array_interface_object(self) -> None:
        p = self.malloc(3 * MiB)
        obj = Strided(p + 512, (10, 20, 3), "<i2", (120 * 2, 6 * 2, 2))  # every other column
        t = self.g.register_tensor(obj)
        self.assertIs(t._mem.owner, obj)
        self.assertEqual((t.shape, t.strides, t.dtype.name), ((10, 20, 3), (120, 6, 1), "int16"))
        self.share(t, (9 * 120 + 19 * 6 + 3) * 2)
        t.close()
        self.a.nvb_torch_free(p, 3 * MiB, 0, STREAM)

    def test_dlpack_only_object_whole_allocation(self) -> None:
        # nvb_gpu_alloc memory through DLPack alone: a whole allocation, one entry
        src = self.g.empty((512, 1024), "float32")
        t = self.g.register_tensor(OnlyDLPack(src))
        self.assertEqual((t.shape, t.dtype.name, t.ptr), ((512, 1024), "float32", src.ptr))
        self.assertEqual(nvbridge.live_exports(), 1)  # the capsule keeps src alive, unconsumed
        self.share(t, 2 * MiB, access=Access.SCOPE)
        with handle() as h:  # one entry, with uid/gid access policies like any buffer
            name = uniq("whole")
            h.publish_tensor(name, t, access=Access.UID, uid=os.geteuid() + 1)
            self.assertEqual([e.name for e in h.list() if e.name.startswith(name)], [name])
        t.close()
        gc.collect()
        self.assertEqual(nvbridge.live_exports(), 0)
        src.close()

    def test_dlpack_when_the_array_interface_refuses(self) -> None:
        src = self.g.empty((64, 8), "bfloat16")
        t = self.g.register_tensor(NoInterfaceDtype(src))
        self.assertEqual((t.shape, t.dtype.name), ((64, 8), "bfloat16"))
        t.close()
        src.close()
        gc.collect()

    @unittest.skipIf(torch_cpu is None, "torch is not installed")
    def test_torch_cpu_tensor_refused(self) -> None:
        self.assertEqual(errno_of(lambda: self.g.register_tensor(torch_cpu.arange(16))), errno.EINVAL)

    def test_negative_strides(self) -> None:
        p = self.malloc(MiB)
        # a reversed view: element 0 at the end of the range
        obj = Strided(p + 396, (100,), "<f4", (-4,))
        t = self.g.register_tensor(obj)
        self.assertEqual((t.ptr, t._mem.ptr, t.strides), (p + 396, p, (-1,)))
        t.close()
        self.a.nvb_torch_free(p, MiB, 0, STREAM)

    def test_multi_allocation_range(self) -> None:
        cu = ctypes.CDLL(FAKE)

        class Prop(ctypes.Structure):
            _fields_ = [("type", ctypes.c_int), ("types", ctypes.c_int), ("loc_type", ctypes.c_int),
                        ("loc_id", ctypes.c_int), ("win32", ctypes.c_void_p), ("flags", ctypes.c_uint64)]
        prop = Prop(1, 1, 1, 0, None, 0)
        va, hs = ctypes.c_uint64(), []
        u64 = ctypes.c_uint64
        cu.cuMemAddressReserve.argtypes = [ctypes.POINTER(u64), ctypes.c_size_t, ctypes.c_size_t, u64, u64]
        cu.cuMemCreate.argtypes = [ctypes.POINTER(u64), ctypes.c_size_t, ctypes.POINTER(Prop), u64]
        cu.cuMemMap.argtypes = [u64, ctypes.c_size_t, ctypes.c_size_t, u64, u64]
        cu.cuMemUnmap.argtypes = [u64, ctypes.c_size_t]
        cu.cuMemRelease.argtypes = [u64]
        cu.cuMemAddressFree.argtypes = [u64, ctypes.c_size_t]
        self.assertEqual(cu.cuMemAddressReserve(ctypes.byref(va), 6 * MiB, 2 * MiB, 0, 0), 0)
        for i in range(3):
            h = u64()
            self.assertEqual(cu.cuMemCreate(ctypes.byref(h), 2 * MiB, ctypes.byref(prop), 0), 0)
            self.assertEqual(cu.cuMemMap(va.value + i * 2 * MiB, 2 * MiB, 0, h.value, 0), 0)
            hs.append(h.value)
        # expandable-segments style: a tensor across the three allocations
        t = self.g.register(va.value + MiB, 4 * MiB + 8, "uint64", (MiB // 2 + 1,))
        self.assertEqual(nvbridge._lib.lib().nvb_gpu_buf_chunks(t._mem._b), 3)
        self.share(t, 4 * MiB + 8)
        # another user holding the same name: the chunks still come from the owner
        self.share(t, 4 * MiB + 8, squatter=True)
        t.close()
        for i, h in enumerate(hs):
            cu.cuMemUnmap(va.value + i * 2 * MiB, 2 * MiB)
            cu.cuMemRelease(h)
        cu.cuMemAddressFree(va.value, 6 * MiB)

    def test_cudamalloc_memory(self) -> None:
        cu = ctypes.CDLL(FAKE)
        p = ctypes.c_uint64()
        cu.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        cu.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        self.assertEqual(cu.cuMemAlloc_v2(ctypes.byref(p), 1 << 16), 0)
        t = self.g.register(p.value + 64, 4096, "int32")
        self.assertEqual(t._mem.kind, registered.KIND_LEGACY_IPC)
        self.share(t, 4096)
        t.close()
        self.assertEqual(errno_of(lambda: self.g.register(p.value, 4096,
                                                          flags=registered.REGISTER_NO_LEGACY)),
                         errno.EOPNOTSUPP)
        cu.cuMemFree_v2(p.value)

    def test_range_revocation_reaches_the_importer(self) -> None:
        p = self.malloc(MiB)
        t = self.g.register(p + 64, 8192, "int64")
        name = uniq("rrev")
        with handle() as h, handle() as h2:
            eid = h.publish_tensor(name, t)
            u = h2.import_tensor(name, gpu=self.g)
            self.assertEqual((u.shape, u.dtype.name, u.entry.id), ((1024,), "int64", eid))
            self.assertFalse(u.revoked)
            h.unpublish(name=name)  # by name: the memory's entry and its descriptor's
            for _ in range(50):
                self.g.poll_events(h2)
                if u.revoked:
                    break
                time.sleep(0.02)
            self.assertTrue(u.revoked and u._mem.revoked())
            self.assertEqual([e.name for e in h.list() if e.name.startswith(name)], [])
            u.close()
        t.close()
        self.a.nvb_torch_free(p, MiB, 0, STREAM)

    def test_range_takes_no_uid_policy(self) -> None:
        p = self.malloc(MiB)
        t = self.g.register(p + 8, 1024)
        name = uniq("ruid")
        with handle() as h:
            self.assertEqual(errno_of(lambda: h.publish_tensor(name, t, access=Access.UID, uid=1)),
                             errno.EINVAL)
            self.assertEqual([e.name for e in h.list() if e.name.startswith(name)], [])
        t.close()
        self.a.nvb_torch_free(p, MiB, 0, STREAM)

    def test_stale_descriptor_refused(self) -> None:
        p = self.malloc(MiB)
        t = self.g.register(p, 4096, "float32")
        name = uniq("stale")
        with handle() as h:
            eid = h.publish_tensor(name, t)
            did = h._gpu_pubs[eid][1]
            # another publication's descriptor: newer than the memory's entry
            h.unpublish(did)
            h.publish(name + registered.DESC_SUFFIX, blob=registered.DESC_MAGIC + t.desc.pack())
            self.assertEqual(errno_of(lambda: h.import_tensor(name, gpu=self.g)), errno.ESTALE)
            h.unpublish(name=name + registered.DESC_SUFFIX)
            h.publish(name + registered.DESC_SUFFIX, blob=b"garbage")
            self.assertEqual(errno_of(lambda: h.import_tensor(name, gpu=self.g)), errno.ESTALE)
            h.unpublish(eid)
        t.close()
        self.a.nvb_torch_free(p, MiB, 0, STREAM)

    def test_c_published_range_imports_as_bytes(self) -> None:
        p = self.malloc(MiB)
        t = self.g.register(p + 100, 3000)
        want = rand_bytes(3000)
        ctypes.memmove(t.ptr, want, 3000)
        name = uniq("craw")
        l = nvbridge._lib.lib()
        with handle() as h, handle() as h2:
            eid = ctypes.c_uint64()
            self.assertEqual(l.nvb_gpu_publish(self.g._g, h._h, name.encode(), t._mem._b, 0,
                                               ctypes.byref(eid)), 0)
            u = h2.import_tensor(name, gpu=self.g)
            self.assertEqual((u.dtype.name, u.shape), ("uint8", (3000,)))
            self.assertEqual(ctypes.string_at(u.ptr, 3000), want)
            u.close()
        t.close()
        self.a.nvb_torch_free(p, MiB, 0, STREAM)

    def test_register_errors(self) -> None:
        host = ctypes.create_string_buffer(1 << 16)
        p = self.malloc(MiB)
        cases = {
            "host memory": (lambda: self.g.register(ctypes.addressof(host), 4096), errno.EFAULT),
            "ptr 0": (lambda: self.g.register(0, 4096), errno.EINVAL),
            "0 bytes": (lambda: self.g.register(p, 0), errno.EINVAL),
            "past the block": (lambda: self.g.register(p + 2 * MiB - 100, 4096), errno.EFAULT),
            "shape beyond the range": (lambda: self.g.register(p, 16, "float32", (5,)), errno.EBADMSG),
            "empty tensor": (lambda: self.g.register_tensor(Strided(p, (0, 4), "<f4", None)), errno.EINVAL),
            "host DLPack tensor": (lambda: self.g.register_tensor(OnlyDLPack(nvbridge.empty(4, "int32"))),
                                   errno.EINVAL),
        }
        for what, (fn, want) in cases.items():
            with self.subTest(what):
                self.assertEqual(errno_of(fn), want)
        with self.assertRaises(TypeError):
            self.g.register_tensor(object())
        with self.assertRaises(ValueError):
            self.g.register(p, 6, "float32")  # not whole elements
        gc.collect()
        self.assertEqual(self.g._live, 0)
        self.a.nvb_torch_free(p, MiB, 0, STREAM)

    def test_shared_block_is_not_reused(self) -> None:
        """The cross-tenant leak through the allocator's cache: a tensor is
        shared (Gpu.register + publish_tensor), the importer keeps its
        mapping past the revocation, the exporter frees the tensor and
        allocates the same size again for a secret.  The importer must not
        read the secret: a shared block is released, never reused."""
        n = 4 * MiB
        p = self.malloc(n)
        want = os.urandom(n)
        ctypes.memmove(p, want, n)
        t = self.g.register(p, n)
        name = uniq("reuse")
        mapped, go = Sync(), Sync()

        def importer() -> tuple:
            g = nvbridge.Gpu(FAKE)
            with handle() as hi:
                u = hi.import_tensor(name, gpu=g)
                first = ctypes.string_at(u.ptr, 4096)
                mapped.post()
                go.wait(30)
                later = ctypes.string_at(u.ptr, 4096)  # a hostile importer ignores the revocation
                u.close()
            g.close()
            return first, later

        with handle() as h:
            eid = h.publish_tensor(name, t)
            c = Child(importer)
            mapped.wait(30)
            h.unpublish(eid)
        t.close()
        s0 = nvbridge.allocator_stats()
        self.a.nvb_torch_free(p, n, 0, STREAM)
        q = self.malloc(n)
        secret = os.urandom(n)
        ctypes.memmove(q, secret, n)
        s = nvbridge.allocator_stats()
        go.post()
        first, later = c.result(30)
        self.assertEqual(first, want[:4096])
        self.assertNotEqual(later, secret[:4096], "LEAK: the importer reads the new tensor")
        self.assertEqual(later, want[:4096])
        self.assertEqual((s.hits, s.cuda_allocs, s.cuda_frees, s.exported_releases),
                         (s0.hits, s0.cuda_allocs + 1, s0.cuda_frees + 1, s0.exported_releases + 1))
        self.a.nvb_torch_free(q, n, 0, STREAM)

    def test_allocator_stats_and_trim_from_python(self) -> None:
        s0 = nvbridge.allocator_stats()
        p = self.malloc(7 * MiB)
        self.a.nvb_torch_free(p, 7 * MiB, 0, STREAM)
        q = self.malloc(7 * MiB)
        self.assertEqual(q, p)
        s = nvbridge.allocator_stats()
        self.assertEqual((s.mallocs - s0.mallocs, s.hits - s0.hits), (2, 1))
        self.a.nvb_torch_free(q, 7 * MiB, 0, STREAM)
        self.assertGreaterEqual(nvbridge.allocator_trim(), 8 * MiB)
        self.assertEqual(nvbridge.allocator_stats().cached_bytes, 0)
        self.assertFalse(self.a.nvb_torch_malloc(-5, 0, STREAM))
        self.assertIn("size", nvbridge.torch_alloc.last_error())


if __name__ == "__main__":
    unittest.main()
