# SPDX-License-Identifier: MIT
"""Test helpers: a private nvbridged, and code run in forked children under
other uids (the broker judges a client by the credentials it connected with,
so a child changes uid before it opens its handle)."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import tempfile
import time
import traceback
from typing import Any, Callable, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD", os.path.join(REPO, "build"))
DAEMON = os.environ.get("NVB_TEST_DAEMON", os.path.join(BUILD, "lib", "nvbridged"))
os.environ.setdefault("NVBRIDGE_LIB", os.path.join(BUILD, "lib", "libnvbridge.so.1"))

import nvbridge  # noqa: E402  (after NVBRIDGE_LIB is set)

UID0 = 2300  # the test uids: 2300-2399
NEED_ROOT = "needs root: the denial cases setuid to the test uids 2300-2399"


def is_root() -> bool:
    return os.geteuid() == 0


def others_can_read(path: str) -> bool:
    """Whether another uid can reach path (every directory above it o+x)
    and read it (o+r): test-uid subprocesses import the package from here."""
    import stat
    p = os.path.abspath(path)
    if not os.stat(p).st_mode & stat.S_IROTH:
        return False
    while p != "/":
        p = os.path.dirname(p)
        if not os.stat(p).st_mode & stat.S_IXOTH:
            return False
    return True


class Broker:
    """A private nvbridged on a socket in a fresh 0755 directory."""

    def __init__(self, *args: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="nvb-py.")
        os.chmod(self.dir, 0o755)  # other uids must reach the socket
        self.sock = os.path.join(self.dir, "nvbridged.sock")
        self.log = open(os.path.join(self.dir, "daemon.log"), "w")
        self.proc = subprocess.Popen([DAEMON, "--socket", self.sock, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(400):  # the socket file exists from bind(), connections from listen()
            if os.path.exists(self.sock) and self._accepts():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.025)
        raise RuntimeError(f"nvbridged did not start (see {self.log.name})")

    def _accepts(self) -> bool:
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def open(self) -> "nvbridge.Handle":
        return nvbridge.open("broker", socket=self.sock)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        self.log.close()
        return rc


def sock() -> str:
    return os.environ["NVBRIDGE_SOCKET"]


def handle() -> "nvbridge.Handle":
    return nvbridge.open("broker", socket=sock())


def become(uid: Optional[int], gid: Optional[int] = None, groups: Sequence[int] = ()) -> None:
    if uid is None:
        return
    os.setgroups(list(groups))
    os.setgid(uid if gid is None else gid)
    os.setuid(uid)


class Child:
    """fn(*args) in a forked child (optionally as uid/gid/groups); result()
    returns what it returned or re-raises what it raised."""

    def __init__(self, fn: Callable[..., Any], *args: Any, uid: Optional[int] = None,
                 gid: Optional[int] = None, groups: Sequence[int] = ()) -> None:
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # child
            os.close(r)
            try:
                become(uid, gid, groups)
                out: Any = ("ok", fn(*args))
            except BaseException as e:  # noqa: BLE001 (sent to the parent)
                out = ("err", e, traceback.format_exc())
            try:
                data = pickle.dumps(out)
            except Exception as e:  # noqa: BLE001
                data = pickle.dumps(("err", RuntimeError(f"unpicklable result: {e}"), ""))
            with os.fdopen(w, "wb") as f:
                f.write(data)
            os._exit(0)
        os.close(w)
        self._r = r
        self.status: Optional[int] = None

    def result(self, timeout: float = 20) -> Any:
        import select
        chunks = []
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                os.kill(self.pid, signal.SIGKILL)
                self.wait()
                raise TimeoutError("child did not answer")
            b = os.read(self._r, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(self._r)
        self.wait()
        if not chunks:
            raise RuntimeError(f"child died without an answer (status {self.status})")
        out = pickle.loads(b"".join(chunks))
        if out[0] == "err":
            e = out[1]
            e.child_traceback = out[2]
            raise e
        return out[1]

    def wait(self) -> int:
        if self.status is None:
            _, st = os.waitpid(self.pid, 0)
            self.status = st
        return self.status


def run_as(fn: Callable[..., Any], *args: Any, uid: Optional[int] = None,
           gid: Optional[int] = None, groups: Sequence[int] = (), timeout: float = 20) -> Any:
    return Child(fn, *args, uid=uid, gid=gid, groups=groups).result(timeout)


def errno_of(fn: Callable[[], Any]) -> int:
    """The errno fn() fails with (0 when it succeeds)."""
    try:
        fn()
    except nvbridge.NvbridgeError as e:
        return e.errno
    return 0


class Sync:
    """A pipe pair for lock-step between a parent and one child."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def post(self, b: bytes = b"x") -> None:
        os.write(self.w, b)

    def wait(self, timeout: float = 10) -> bytes:
        import select
        if not select.select([self.r], [], [], timeout)[0]:
            raise TimeoutError("no signal from the peer")
        return os.read(self.r, 64)


def open_gpu() -> "tuple[Optional[nvbridge.Gpu], str]":
    """(the GPU layer, "") or (None, why not): one reason for every GPU variant."""
    try:
        return nvbridge.Gpu(), ""
    except nvbridge.NvbridgeError as e:
        return None, f"no usable GPU: {e}"


def torch_cuda() -> "tuple[Any, str]":
    """(torch, "") when torch sees a CUDA device, else (torch or None, why not)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    return torch, "" if torch.cuda.is_available() else "torch sees no CUDA device"


def no_torch_pool(torch: Any) -> str:
    """Why nvbridge's PyTorch allocator cannot be used with this torch ("" if it can)."""
    if torch is None or not hasattr(torch.cuda, "MemPool") or \
            not hasattr(torch.cuda.memory, "CUDAPluggableAllocator"):
        return "this torch has no torch.cuda.MemPool / CUDAPluggableAllocator (PyTorch >= 2.8)"
    return ""


def tree_readable_by_test_uids() -> bool:
    return all(others_can_read(p) for p in (
        os.path.join(REPO, "python", "nvbridge", "__init__.py"),
        os.path.join(REPO, "examples", "python", "kv_consumer.py"),
        os.path.realpath(os.environ["NVBRIDGE_LIB"])))


UNREADABLE = "the source tree or the library is not readable by the test uids"


def publishing_child(name: str, make: Callable[[], Any]) -> "tuple[Child, Sync]":
    """A child that publishes the tensor make() returns under name (SCOPE)
    and holds it until the returned Sync is posted."""
    ready, go = Sync(), Sync()

    def pub() -> None:
        with handle() as h:
            h.publish_tensor(name, make(), access=nvbridge.Access.SCOPE)
            ready.post()
            go.wait()
    c = Child(pub)
    ready.wait()
    return c, go


def uniq(prefix: str) -> str:
    uniq.n = getattr(uniq, "n", 0) + 1  # type: ignore[attr-defined]
    return f"py/{prefix}/{os.getpid()}.{uniq.n}"  # type: ignore[attr-defined]
