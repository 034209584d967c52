# SPDX-License-Identifier: MIT
"""The package as users get it: pip install from the tree, no optional
dependency, library lookup, typing marker."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from helpers import BUILD, REPO, sock

PKG = os.path.join(REPO, "python")
SMOKE = """
    import sys
    for m in ("numpy", "torch", "cupy"):
        sys.modules[m] = None   # as if not installed: importing them fails
    import nvbridge
    assert nvbridge.__file__.startswith({where!r}), nvbridge.__file__
    with nvbridge.open("broker", socket={sock!r}) as h:
        t = nvbridge.empty((2, 2), "int32")
        h.publish_tensor("py/pkg/" + str(__import__("os").getpid()), t)
        u = h.import_tensor("py/pkg/" + str(__import__("os").getpid()))
        u.memoryview()[:4] = b"\\x07\\0\\0\\0"
        assert bytes(t.memoryview()[:4]) == b"\\x07\\0\\0\\0"
    print("smoke ok")
"""


def py(code: str, **env: str) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=e, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)


def have(*modules: str) -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) for m in modules)


class Packaging(unittest.TestCase):
    def test_no_optional_dependency(self) -> None:
        r = py(SMOKE.format(where=PKG, sock=sock()), PYTHONPATH=PKG)
        self.assertIn("smoke ok", r.stdout, r.stdout)

    def test_library_not_found(self) -> None:
        r = py("""
            import errno, nvbridge
            try:
                nvbridge.open()
            except nvbridge.NvbridgeError as e:
                assert e.errno == errno.ENOENT, e
                assert "/nonexistent/libnvbridge.so.1" in str(e), e
                assert "NVBRIDGE_LIB" in str(e), e
                print("refused ok")
        """, PYTHONPATH=PKG, NVBRIDGE_LIB="/nonexistent/libnvbridge.so.1")
        self.assertIn("refused ok", r.stdout, r.stdout)

    def test_typed(self) -> None:
        self.assertTrue(os.path.exists(os.path.join(PKG, "nvbridge", "py.typed")))

    @unittest.skipUnless(have("mypy"), "mypy is not installed (Debian: mypy)")
    def test_mypy_strict(self) -> None:
        cache = os.path.join(BUILD, "mypy-cache")  # a cold one costs ~2 minutes (typeshed)
        r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", cache,
                            os.path.join(PKG, "nvbridge")], text=True, timeout=500,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(r.returncode, 0, r.stdout)

    @unittest.skipUnless(have("pip", "setuptools", "wheel"), "pip, setuptools or wheel missing (python3-pip, python3-wheel)")
    def test_pip_install(self) -> None:
        """pip install ./python (offline: the build backend of the host)."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "src")
            shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
            target = os.path.join(tmp, "site")
            r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation",
                                "--no-index", "--no-deps", "--target", target, src],
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                               env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore"))
            self.assertEqual(r.returncode, 0, r.stdout)
            got = set(os.listdir(os.path.join(target, "nvbridge"))) - {"__pycache__"}
            want = {f for f in os.listdir(os.path.join(PKG, "nvbridge"))
                    if f.endswith(".py") or f == "py.typed"}
            self.assertEqual(got, want)
            r = py(SMOKE.format(where=target, sock=sock()), PYTHONPATH=target)
            self.assertIn("smoke ok", r.stdout, r.stdout)


if __name__ == "__main__":
    unittest.main()
