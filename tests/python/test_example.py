# SPDX-License-Identifier: MIT
"""examples/python: the KV-cache producer and consumer as two real processes
(the consumer under a test uid when run as root), through the suite's broker."""
from __future__ import annotations

import os
import subprocess
import sys
import unittest

from helpers import (NEED_ROOT, REPO, UID0, UNREADABLE, is_root, no_torch_pool, open_gpu, torch_cuda,
                     tree_readable_by_test_uids)

try:
    import numpy  # noqa: F401
except ImportError:
    numpy = None

EX = os.path.join(REPO, "examples", "python")
_gpu, NO_GPU = open_gpu()
if _gpu is not None:
    _gpu.close()
_torch, NO_TORCH_CUDA = torch_cuda()


@unittest.skipIf(numpy is None, "python3-numpy is not installed")
class KvExample(unittest.TestCase):
    def run_pair(self, consumer_uid: "int | None", device: str = "cpu", memory: str = "alloc") -> None:
        name = f"example/kv{os.getpid()}.{consumer_uid}.{device}.{memory}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "python"), EX]))
        args = ["--name", name, "--shape", "2,8,16,4,32", "--timeout", "30", "--device", device]
        prod = subprocess.Popen([sys.executable, os.path.join(EX, "kv_producer.py"), *args,
                                 "--memory", memory],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        kw = {"user": consumer_uid, "group": consumer_uid, "extra_groups": []} if consumer_uid else {}
        cons = subprocess.run([sys.executable, os.path.join(EX, "kv_consumer.py"), *args,
                               "--expect-uid", str(os.geteuid())],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                              timeout=60, **kw)
        pout, _ = prod.communicate(timeout=60)
        print(cons.stdout + pout)
        self.assertEqual(cons.returncode, 0, cons.stdout)
        self.assertEqual(prod.returncode, 0, pout)
        self.assertIn("consumer: all 32768 elements match", cons.stdout)
        self.assertIn("producer: write-back verified, all 32768 elements", pout)
        # which memory is said at run time
        self.assertIn("using host memory" if device == "cpu" else "using GPU memory", pout)
        if consumer_uid:
            self.assertIn(f"uid {consumer_uid} says done", pout)

    def test_same_user(self) -> None:
        self.run_pair(None)

    @unittest.skipIf(bool(NO_GPU), NO_GPU)
    @unittest.skipIf(bool(NO_TORCH_CUDA), NO_TORCH_CUDA)
    def test_gpu(self) -> None:
        self.run_pair(None, "gpu")

    @unittest.skipIf(bool(NO_GPU), NO_GPU)
    @unittest.skipIf(bool(NO_TORCH_CUDA), NO_TORCH_CUDA)
    @unittest.skipIf(bool(no_torch_pool(_torch)), no_torch_pool(_torch))
    def test_gpu_torch_pool(self) -> None:
        """The KV cache in nvbridge's MemPool, shared by registration."""
        self.run_pair(None, "gpu", "pool")

    @unittest.skipUnless(is_root(), NEED_ROOT)
    @unittest.skipUnless(tree_readable_by_test_uids(), UNREADABLE)
    def test_consumer_other_uid(self) -> None:
        self.run_pair(UID0 + 30)


if __name__ == "__main__":
    unittest.main()
