#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Suite "python": the nvbridge package's tests against a private nvbridged.

usage: run.py [pytest args...] [test_X.py...]   (last line: "N passed, M
failed"; skips are listed with their reasons and count as neither).  Runs
under pytest when it is installed, else unittest.  Test files named on the
command line (as paths or names in tests/python) replace the whole
directory (tests/gpu/device-all.sh runs the GPU files alone).
NVBRIDGE_LIB defaults to build/lib's library.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(REPO, "python")]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [os.path.join(REPO, "python"), HERE] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else []))

from helpers import Broker  # noqa: E402  (sets NVBRIDGE_LIB)


def split_files(args: list) -> tuple:
    """(the test files named in args, resolved against HERE; the other args)."""
    files, rest = [], []
    for a in args:
        cand = a if os.path.isfile(a) else os.path.join(HERE, a)
        if a.endswith(".py") and os.path.isfile(cand):
            files.append(os.path.abspath(cand))
        else:
            rest.append(a)
    return files, rest


def run_pytest(args: list) -> tuple:
    import pytest

    class Count:
        def __init__(self) -> None:
            self.passed = self.failed = 0
            self.skipped: list = []

        def pytest_runtest_logreport(self, report):  # noqa: ANN001
            if report.when == "call" and report.passed:
                self.passed += 1
            elif report.failed:
                self.failed += 1
            elif report.skipped and report.when in ("setup", "call"):
                self.skipped.append((report.nodeid, report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)))

    c = Count()
    files, rest = split_files(args)
    rc = pytest.main(["-v", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-rs", *(files or [HERE]), *rest],
                     plugins=[c])
    if rc not in (0, 1) and c.failed == 0:
        c.failed = 1  # collection or usage error
    return c.passed, c.failed, c.skipped


def run_unittest(args: list) -> tuple:
    import unittest
    files, _ = split_files(args)
    suite = unittest.TestSuite(
        unittest.defaultTestLoader.discover(HERE, pattern=p, top_level_dir=HERE)
        for p in ([os.path.basename(f) for f in files] or ["test_*.py"]))
    r = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(r.failures) + len(r.errors) + len(r.unexpectedSuccesses)
    return max(0, r.testsRun - failed - len(r.skipped)), failed, [(str(t), why) for t, why in r.skipped]


def main() -> int:
    b = Broker()
    os.environ["NVBRIDGE_BACKEND"] = "broker"
    os.environ["NVBRIDGE_SOCKET"] = b.sock
    try:
        try:
            import pytest  # noqa: F401
            passed, failed, skipped = run_pytest(sys.argv[1:])
        except ImportError:
            print("pytest not installed: running under unittest")
            passed, failed, skipped = run_unittest(sys.argv[1:])
    finally:
        drc = b.stop()
    with open(b.log.name) as f:
        log = f.read()
    if log:
        print("# nvbridged log:\n" + "".join("#   " + l for l in log.splitlines(True)))
    if drc != 0:
        print(f"# nvbridged did not exit cleanly on SIGTERM (status {drc}): counted as a failure")
        failed += 1
    for nodeid, why in skipped:
        print(f"SKIP: {nodeid}: {why}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
