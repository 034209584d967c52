# SPDX-License-Identifier: MIT
"""examples/python: the KV-cache producer and consumer as two real processes
(the consumer under a test uid when run as root), through the suite's broker."""
from __future__ import annotations

import os
import subprocess
import sys
import unittest

from helpers import NEED_ROOT, REPO, UID0, UNREADABLE, is_root, tree_readable_by_test_uids

try:
    import numpy  # noqa: F401
except ImportError:
    numpy = None

EX = os.path.join(REPO, "examples", "python")


@unittest.skipIf(numpy is None, "python3-numpy is not installed")
class KvExample(unittest.TestCase):
    def run_pair(self, consumer_uid: "int | None") -> None:
        name = f"example/kv{os.getpid()}.{consumer_uid}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "python"), EX]))
        args = ["--name", name, "--shape", "2,8,16,4,32", "--timeout", "30"]
        prod = subprocess.Popen([sys.executable, os.path.join(EX, "kv_producer.py"), *args],
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
        self.assertIn("using host memory", pout)  # which memory is said at run time
        if consumer_uid:
            self.assertIn(f"uid {consumer_uid} says done", pout)

    def test_same_user(self) -> None:
        self.run_pair(None)

    @unittest.skipUnless(is_root(), NEED_ROOT)
    @unittest.skipUnless(tree_readable_by_test_uids(), UNREADABLE)
    def test_consumer_other_uid(self) -> None:
        self.run_pair(UID0 + 30)


if __name__ == "__main__":
    unittest.main()
