# SPDX-License-Identifier: MIT
"""nvbridge's PyTorch allocator on a GPU: for the allocator as the whole
process's allocator, as one torch.cuda.MemPool, and for PyTorch's own
allocator with expandable segments (no nvbridge allocator), a producer fills a
KV-cache-shaped tensor with random values, registers a strided view of it
(Gpu.register_tensor) and publishes it; a consumer process imports it,
checks every element, negates it in place; the producer sees the negation.
And the reuse attack: a shared tensor freed, the next one of its size
holding a secret, the importer that kept its mapping must not see it.
Skips without a GPU (same reason as test_gpu.py) or without a torch that
has CUDAPluggableAllocator / MemPool.

Children are spawned: the allocator must be chosen before a process's first
CUDA allocation, and a process that initialised CUDA cannot fork.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import unittest

from helpers import REPO, no_torch_pool, open_gpu, torch_cuda, uniq

GPU, NO_GPU = open_gpu()
torch, NO_TORCH_CUDA = torch_cuda()
if GPU is not None:
    GPU.close()
NO_POOL = no_torch_pool(torch)

SHAPE = (4, 2, 64, 16, 8, 64)  # layers x (k, v) x blocks x tokens x heads x dim


def expected(seed: int) -> "torch.Tensor":
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g, dtype=torch.float32).to(torch.float16)


PRODUCER = """
    import sys, torch, nvbridge, test_torch_alloc_gpu as T
    mode, name, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "process":
        nvbridge.use_torch_allocator()
    torch.cuda.set_device(0)
    g = nvbridge.Gpu()
    s0 = nvbridge.allocator_stats()
    if mode == "expandable":
        # PyTorch's own allocator over its VMM segments (the test sets
        # PYTORCH_CUDA_ALLOC_CONF): no nvbridge allocator at all.  Tensors
        # are added until the view crosses from one of the segment's
        # allocations into the next, so the range path is the one proven.
        keep = []
        for _ in range(8):
            kv = torch.empty(T.SHAPE, device="cuda", dtype=torch.float16)
            t = g.register_tensor(kv[:, 1])
            chunks = nvbridge._lib.lib().nvb_gpu_buf_chunks(t._mem._b)
            if chunks >= 2:
                break
            t.close()
            keep += [kv, torch.empty(2 << 20, device="cuda", dtype=torch.uint8)]
        assert chunks >= 2, "no view across two of the expandable segment's allocations"
        t.close()
        print("expandable: the view spans", chunks, "allocations", flush=True)
        s1 = s0
    elif mode == "pool":
        pool = nvbridge.mempool()
        with torch.cuda.use_mem_pool(pool):
            kv = torch.empty(T.SHAPE, device="cuda", dtype=torch.float16)
        s1 = nvbridge.allocator_stats()
        other = torch.empty(1 << 20, device="cuda")   # outside the pool: PyTorch's allocator
        assert nvbridge.allocator_stats().mallocs == s1.mallocs, "allocation outside the pool reached nvbridge"
    else:
        kv = torch.empty(T.SHAPE, device="cuda", dtype=torch.float16)
        s1 = nvbridge.allocator_stats()
    if mode != "expandable":
        assert s1.mallocs > s0.mallocs and s1.live_bytes >= kv.numel() * 2, (s0, s1)
    want = T.expected(seed)
    kv.copy_(want)
    view = kv[:, 1]                     # the V half: strided, inside the block
    torch.cuda.synchronize()
    t = g.register_tensor(view)
    with nvbridge.open("broker") as h:
        h.publish_tensor(name, t, access=nvbridge.Access.OWNER)
        print("published", flush=True)
        assert sys.stdin.readline().strip() == "done"
        torch.cuda.synchronize()
        assert torch.equal(kv[:, 1].cpu(), -want[:, 1]), "consumer's write not seen"
        assert torch.equal(kv[:, 0].cpu(), want[:, 0]), "bytes outside the view changed"
    t.close()
    print("producer ok", nvbridge.allocator_stats(), flush=True)
"""

CONSUMER = """
    import sys, os, torch, nvbridge, test_torch_alloc_gpu as T
    name, seed = sys.argv[1], int(sys.argv[2])
    g = nvbridge.Gpu()
    with nvbridge.open("broker") as h:
        u = h.import_tensor(name, wait=True, timeout=30, expect_uid=os.geteuid(), gpu=g)
        x = torch.from_dlpack(u)
        full = T.expected(seed)
        want = full[:, 1]
        assert x.shape == want.shape and x.stride() == full.stride()[:1] + full.stride()[2:], \\
            (x.shape, x.stride())
        assert x.device.type == "cuda" and x.dtype == torch.float16
        assert torch.equal(x.cpu(), want), "contents differ"
        x.neg_()
        torch.cuda.synchronize()
        del x
        u.close()
    g.close()
    print("consumer ok", flush=True)
"""


REUSE_PRODUCER = """
    import sys, torch, nvbridge
    name, n = sys.argv[1], int(sys.argv[2])
    nvbridge.use_torch_allocator()
    torch.cuda.set_device(0)
    g = nvbridge.Gpu()
    gen = torch.Generator().manual_seed(5)
    old = torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8)
    secret = torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8)
    kv = torch.empty(n, device="cuda", dtype=torch.uint8)
    kv.copy_(old)
    torch.cuda.synchronize()
    t = g.register_tensor(kv)
    with nvbridge.open("broker") as h:
        eid = h.publish_tensor(name, t, access=nvbridge.Access.OWNER)
        print("published", flush=True)
        assert sys.stdin.readline().strip() == "unpublish"
        h.unpublish(eid)
    t.close()
    s0 = nvbridge.allocator_stats()
    del kv                              # the tensor goes; a shared block must not be reused
    torch.cuda.synchronize()
    new = torch.empty(n, device="cuda", dtype=torch.uint8)
    new.copy_(secret)
    torch.cuda.synchronize()
    s1 = nvbridge.allocator_stats()
    assert s1.exported_releases == s0.exported_releases + 1, (s0, s1)
    assert s1.hits == s0.hits, (s0, s1)
    print("secret written", flush=True)
    assert sys.stdin.readline().strip() == "done"
    print("producer ok", s1, flush=True)
"""

REUSE_CONSUMER = """
    import sys, os, torch, nvbridge
    name, n = sys.argv[1], int(sys.argv[2])
    gen = torch.Generator().manual_seed(5)
    old = torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8)
    secret = torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8)
    g = nvbridge.Gpu()
    with nvbridge.open("broker") as h:
        u = h.import_tensor(name, wait=True, timeout=30, expect_uid=os.geteuid(), gpu=g)
        x = torch.from_dlpack(u)
        assert torch.equal(x.cpu(), old), "contents differ"
        print("mapped", flush=True)
        assert sys.stdin.readline().strip() == "look"
        later = x.cpu()                 # a hostile importer ignores the revocation
        assert not torch.equal(later, secret), "LEAK: the importer reads the exporter's new tensor"
        assert torch.equal(later, old), "the importer's mapping changed"
        del x
        u.close()
    g.close()
    print("consumer ok", flush=True)
"""


def env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "python"),
                                                       os.path.dirname(__file__)]))


@unittest.skipIf(GPU is None, NO_GPU)
@unittest.skipIf(bool(NO_TORCH_CUDA), NO_TORCH_CUDA)
@unittest.skipIf(bool(NO_POOL), NO_POOL)
class TorchAllocatorAcrossProcesses(unittest.TestCase):
    def roundtrip(self, mode: str) -> None:
        name, seed = uniq("kv-" + mode), 11
        penv = env()
        if mode == "expandable":
            penv["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
        prod = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PRODUCER), mode, name, str(seed)],
                                env=penv, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            line = prod.stdout.readline()
            if line.startswith("expandable: "):
                line = prod.stdout.readline()
            if line.strip() != "published":
                self.fail("producer: " + line + prod.stdout.read())
            cons = subprocess.run([sys.executable, "-c", textwrap.dedent(CONSUMER), name, str(seed)],
                                  env=env(), text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=120)
            self.assertEqual(cons.returncode, 0, cons.stdout)
            self.assertIn("consumer ok", cons.stdout)
            out, _ = prod.communicate("done\n", timeout=120)
        finally:
            if prod.poll() is None:
                prod.kill()
                prod.wait()
        self.assertEqual(prod.returncode, 0, out)
        self.assertIn("producer ok", out)

    def test_whole_process(self) -> None:
        self.roundtrip("process")

    def test_shared_block_not_reused(self) -> None:
        """The whole-process allocator: a registered, published tensor is
        freed and a tensor of the same size takes a secret; the importer,
        which kept its mapping, must still see the old bytes."""
        name, n = uniq("reuse"), 4 << 20
        prod = subprocess.Popen([sys.executable, "-c", textwrap.dedent(REUSE_PRODUCER), name, str(n)],
                                env=env(), text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        procs = [prod]
        try:
            if prod.stdout.readline().strip() != "published":
                self.fail("producer: " + prod.stdout.read())
            cons = subprocess.Popen([sys.executable, "-c", textwrap.dedent(REUSE_CONSUMER), name, str(n)],
                                    env=env(), text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            procs.append(cons)
            if cons.stdout.readline().strip() != "mapped":
                self.fail("consumer: " + cons.stdout.read())
            prod.stdin.write("unpublish\n")
            prod.stdin.flush()
            if prod.stdout.readline().strip() != "secret written":
                self.fail("producer: " + prod.stdout.read())
            cout, _ = cons.communicate("look\n", timeout=120)
            out, _ = prod.communicate("done\n", timeout=120)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        self.assertEqual(cons.returncode, 0, cout)
        self.assertIn("consumer ok", cout)
        self.assertEqual(prod.returncode, 0, out)
        self.assertIn("producer ok", out)

    def test_mempool(self) -> None:
        self.roundtrip("pool")

    def test_expandable_segments(self) -> None:
        """No nvbridge allocator: a view of a tensor from PyTorch's own
        allocator with expandable segments (VMM allocations mapped back to
        back), across two of them, registered and shared."""
        self.roundtrip("expandable")


if __name__ == "__main__":
    unittest.main()
