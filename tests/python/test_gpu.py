# SPDX-License-Identifier: MIT
"""The GPU path: nvb_gpu_alloc'd tensors published with their descriptor,
imported by another process as kDLCUDA tensors (DLPack and
__cuda_array_interface__), written back, revoked.  Skips without a GPU.

Children are spawned, not forked: a process that initialised CUDA cannot
use it in a forked child.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import unittest

from helpers import (NEED_ROOT, REPO, UID0, UNREADABLE, errno_of, handle, is_root, open_gpu,
                     torch_cuda, tree_readable_by_test_uids, uniq)

import nvbridge
from nvbridge import Access, EventType

GPU, NO_GPU = open_gpu()
torch, NO_TORCH_CUDA = torch_cuda()

SHAPE = (4, 8, 16, 64)  # layers x blocks x tokens x dim


def spawn(code: str, uid: "int | None" = None, timeout: float = 120) -> str:
    """Runs code in a fresh interpreter (as uid); returns its output, fails on rc != 0."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "python"),
                                                       os.path.dirname(__file__)]))
    kw = {"user": uid, "group": uid, "extra_groups": []} if uid else {}
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, **kw)
    if p.returncode:
        raise AssertionError(f"child failed ({p.returncode}):\n{p.stdout}")
    return p.stdout


def expected(seed: int) -> "torch.Tensor":
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g, dtype=torch.float32)


@unittest.skipIf(GPU is None, NO_GPU)
class Gpu(unittest.TestCase):
    def test_device(self) -> None:
        self.assertGreaterEqual(GPU.device_count(), 1)
        self.assertGreater(GPU.driver_version(), 0)
        self.assertTrue(GPU.device_name(0))
        free, total = GPU.mem_info()
        self.assertLess(0, free)
        self.assertLessEqual(free, total)

    def test_interfaces(self) -> None:
        t = GPU.empty((3, 5), "float16")
        self.assertTrue(t.is_cuda)
        self.assertEqual(t.__dlpack_device__(), (int(nvbridge.DLDeviceType.CUDA), 0))
        cai = t.__cuda_array_interface__
        self.assertEqual(cai["data"], (t.ptr, False))
        self.assertEqual((cai["shape"], cai["typestr"], cai["version"], cai["strides"]),
                         ((3, 5), "<f2", 3, None))
        self.assertFalse(hasattr(t, "__array_interface__"))
        cap = t.__dlpack__(stream=1)
        del cap
        t.close()
        self.assertTrue(t.closed)
        self.assertEqual(nvbridge.live_exports(), 0)

    def test_import_without_gpu_argument(self) -> None:
        t = GPU.empty(16, "uint8")
        name = uniq("gpu-nogpu")
        with handle() as h:
            h.publish_tensor(name, t, access=Access.SCOPE)
            self.assertEqual(errno_of(lambda: h.import_tensor(name)), 19)  # ENODEV
        t.close()


@unittest.skipIf(GPU is None, NO_GPU)
@unittest.skipIf(bool(NO_TORCH_CUDA), NO_TORCH_CUDA)
class GpuAcrossProcesses(unittest.TestCase):
    CONSUMER = """
        import torch, nvbridge, test_gpu
        g = nvbridge.Gpu()
        with nvbridge.open("broker") as h:
            u = h.import_tensor({name!r}, wait=True, timeout=30, expect_uid={owner}, gpu=g)
            assert u.is_cuda and u.shape == test_gpu.SHAPE, u
            x = torch.from_dlpack(u)
            assert x.device.type == "cuda", x.device
            assert x.data_ptr() == u.ptr
            want = test_gpu.expected({seed})
            assert torch.equal(x.cpu(), want), "contents differ"
            x.neg_()
            torch.cuda.synchronize()
            del x
            u.close()
        g.close()
        print("consumer ok")
    """

    def roundtrip(self, uid: "int | None", access: Access) -> None:
        t = GPU.empty(SHAPE, "float32")
        x = torch.from_dlpack(t)
        self.assertEqual(x.data_ptr(), t.ptr)
        want = expected(7)
        x.copy_(want)
        torch.cuda.synchronize()
        name = uniq("gpu-kv")
        with handle() as h:
            h.publish_tensor(name, t, access=access, uid=uid)
            out = spawn(self.CONSUMER.format(name=name, owner=os.geteuid(), seed=7), uid=uid)
            self.assertIn("consumer ok", out)
        torch.cuda.synchronize()
        self.assertTrue(torch.equal(x.cpu(), -want))  # the consumer's write, no copy
        del x
        t.close()

    def test_same_user(self) -> None:
        self.roundtrip(None, Access.OWNER)

    @unittest.skipUnless(is_root(), NEED_ROOT)
    @unittest.skipUnless(tree_readable_by_test_uids(), UNREADABLE)
    def test_other_uid(self) -> None:
        self.roundtrip(UID0 + 40, Access.UID)

    def test_revocation_reaches_python(self) -> None:
        name = uniq("gpu-rev")
        code = f"""
            import sys, nvbridge
            g = nvbridge.Gpu()
            h = nvbridge.open("broker")
            t = g.empty(1 << 20, "uint8")
            h.publish_tensor({name!r}, t, access=nvbridge.Access.SCOPE)
            print("published", flush=True)
            sys.stdin.readline()
        """
        env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"))
        p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            self.assertEqual(p.stdout.readline().strip(), "published")
            with handle() as h:
                u = h.import_tensor(name, gpu=GPU)
                self.assertFalse(u.revoked)
                x = torch.from_dlpack(u)
                x.fill_(3)
                torch.cuda.synchronize()
                p.stdin.close()  # the publisher exits
                p.wait(30)
                evs = GPU.poll_events(h) + list(h.events(timeout=2))
                self.assertIn(EventType.REVOKED, [e.type for e in evs])
                self.assertTrue(u.revoked)
                del x
                u.close()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()

    def test_close_waits_for_tensors(self) -> None:
        g = nvbridge.Gpu()
        t = g.empty(1 << 20, "uint8")
        x = torch.from_dlpack(t)
        t.close()
        g.close()  # deferred: x still maps the buffer
        self.assertEqual(errno_of(g.device_count), 9)  # EBADF for new calls
        x.fill_(1)
        torch.cuda.synchronize()
        self.assertEqual(int(x.sum()), 1 << 20)
        del x
        import gc
        gc.collect()
        self.assertTrue(t.closed)
        self.assertIsNone(g._g)  # the last buffer took the layer with it

    def test_copy_and_flags(self) -> None:
        n = 1 << 20
        src, dst, flag = GPU.empty(n, "uint8"), GPU.empty(n, "uint8"), GPU.empty(1, "uint32")
        s, d, f = (torch.from_dlpack(t) for t in (src, dst, flag))
        s.copy_(torch.randint(0, 256, (n,), dtype=torch.uint8))
        d.zero_()
        f.zero_()
        stream = torch.cuda.current_stream().cuda_stream
        GPU.copy(dst.ptr, src.ptr, n, streams=stream)
        GPU.signal(stream, flag.ptr, 5)
        GPU.wait(stream, flag.ptr, 5)
        GPU.copy_blocks([(dst.ptr, src.ptr + 4096, 4096)], stream=stream)
        torch.cuda.synchronize()
        self.assertEqual(int(f.item()), 5)
        self.assertTrue(torch.equal(d[4096:], s[4096:]))
        self.assertTrue(torch.equal(d[:4096], s[4096:8192]))
        del s, d, f
        for t in (src, dst, flag):
            t.close()


if __name__ == "__main__":
    unittest.main()
