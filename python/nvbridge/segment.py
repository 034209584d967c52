# SPDX-License-Identifier: MIT
"""Segments and transfer batches (nvbridge_gpu.h, nvb_gpu_seg_* and
nvb_gpu_xfer_*): the transfer-engine shape (Mooncake's registerLocalMemory /
openSegment / submitTransfer / getTransferStatus).

>>> eng = nvbridge.TransferEngine(gpu, handle)
>>> mine = eng.register("kv/0", gpu.empty(1 << 30, "uint8"))   # publish
>>> peer = eng.open_segment("kv/1", timeout=10)                 # by name + owner
>>> b = eng.submit([(READ, local_ptr, peer, 0, 65536)])
>>> b.wait()                                                     # or poll eng.fileno()

Every request is checked against its segment before anything is queued: a
request outside the segment raises NvbridgeError(ERANGE), one on a revoked
segment ENOLINK, and nothing is copied.  A batch whose peer died while it
ran completes with -ENOLINK in the status of that peer's requests.
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _lib
from ._lib import NvbridgeError, c_i64, c_int, c_size, c_u32, c_u64, c_vp
from .gpu import Gpu, _GpuBuffer, _gpu_check
from .rendezvous import Access, Handle
from .tensor import SharedTensor

__all__ = ["TransferEngine", "Segment", "Batch", "READ", "WRITE", "SEG_OWNER_UID",
           "SEG_ANY_OWNER", "SEG_LOCAL_ONLY", "XFER_EVENTFD"]

READ, WRITE = 0, 1
SEG_OWNER_UID, SEG_ANY_OWNER, SEG_LOCAL_ONLY = 1, 2, 4
XFER_EVENTFD = 1


class SegPublishOpts(ctypes.Structure):
    _fields_ = [("sz", c_size), ("access", c_u32), ("uid", c_u32), ("gid", c_u32),
                ("flags", c_u32)]


class SegOpenOpts(ctypes.Structure):
    _fields_ = [("sz", c_size), ("flags", c_u32), ("owner_uid", c_u32), ("timeout_ns", c_i64)]


class SegStats(ctypes.Structure):
    _fields_ = [("sz", c_size), ("local", c_u32), ("cached", c_u32), ("round_trips", c_u32),
                ("owner_uid", c_u32), ("export_ns", c_u64), ("publish_ns", c_u64),
                ("watch_ns", c_u64), ("fetch_ns", c_u64), ("import_ns", c_u64),
                ("reserve_ns", c_u64), ("map_ns", c_u64), ("access_ns", c_u64),
                ("total_ns", c_u64)]


class XferReq(ctypes.Structure):
    _fields_ = [("opcode", c_u32), ("_pad", c_u32), ("local", c_u64), ("seg", c_vp),
                ("offset", c_u64), ("len", c_u64)]


class XferOpts(ctypes.Structure):
    _fields_ = [("sz", c_size), ("flags", c_u32), ("method", c_u32), ("stream", c_vp),
                ("flag", c_u64), ("flag_val", c_u32), ("efd", ctypes.c_int32),
                ("user_data", c_u64)]


class XferStats(ctypes.Structure):
    _fields_ = [("sz", c_size), ("batches", c_u64), ("requests", c_u64), ("bytes", c_u64),
                ("rejected", c_u64), ("completed", c_u64), ("failed", c_u64),
                ("sm_batches", c_u64), ("batch_batches", c_u64), ("loop_batches", c_u64),
                ("last_method", c_u32), ("inflight", c_u32), ("busy_ns", c_u64)]


_declared = False
_decl_lock = threading.Lock()


def _l() -> ctypes.CDLL:
    """The library with this module's prototypes declared (once)."""
    global _declared
    l = _lib.lib()
    with _decl_lock:
        if not _declared:
            P = ctypes.POINTER
            p = _lib._proto
            p(l, "nvb_gpu_seg_publish", c_int, c_vp, c_vp, ctypes.c_char_p, c_vp,
              P(SegPublishOpts), P(c_vp))
            p(l, "nvb_gpu_seg_open", c_int, c_vp, c_vp, ctypes.c_char_p, P(SegOpenOpts), P(c_vp))
            p(l, "nvb_gpu_seg_open_many", c_int, c_vp, c_vp, P(ctypes.c_char_p), ctypes.c_uint,
              P(SegOpenOpts), P(c_vp))
            p(l, "nvb_gpu_seg_prefetch", c_int, c_vp, c_vp, ctypes.c_char_p, P(SegOpenOpts))
            p(l, "nvb_gpu_seg_close", None, c_vp)
            p(l, "nvb_gpu_seg_ptr", c_u64, c_vp)
            p(l, "nvb_gpu_seg_size", c_size, c_vp)
            p(l, "nvb_gpu_seg_id", c_u64, c_vp)
            p(l, "nvb_gpu_seg_revoked", c_int, c_vp)
            p(l, "nvb_gpu_seg_stats", c_int, c_vp, P(SegStats))
            p(l, "nvb_gpu_xfer_submit", c_int, c_vp, P(XferReq), c_size, P(XferOpts), P(c_vp))
            p(l, "nvb_gpu_batch_status", c_int, c_vp, P(c_int), c_size)
            p(l, "nvb_gpu_batch_wait", c_int, c_vp, c_i64)
            p(l, "nvb_gpu_batch_method", c_u32, c_vp)
            p(l, "nvb_gpu_batch_user_data", c_u64, c_vp)
            p(l, "nvb_gpu_batch_free", None, c_vp)
            p(l, "nvb_gpu_xfer_fd", c_int, c_vp)
            p(l, "nvb_gpu_xfer_stats", c_int, c_vp, P(XferStats))
            _declared = True
    return l


def _pin(h: Handle) -> int:
    """Holds h open (its close() takes effect once unpinned): the C layer uses
    the handle for as long as a segment from it is open."""
    return h._pin("nvbridge.TransferEngine")


def _unpin(h: Handle) -> None:
    h._unpin()


def _as_dict(s: ctypes.Structure) -> Dict[str, int]:
    return {f[0]: int(getattr(s, f[0])) for f in s._fields_ if not f[0].startswith("_") and f[0] != "sz"}


def _open_opts(owner_uid: Optional[int], any_owner: bool, timeout: Optional[float],
               local_only: bool) -> SegOpenOpts:
    if owner_uid is not None and any_owner:
        raise ValueError("owner_uid and any_owner exclude each other")
    flags = (SEG_OWNER_UID if owner_uid is not None else 0) | (SEG_ANY_OWNER if any_owner else 0) \
        | (SEG_LOCAL_ONLY if local_only else 0)
    tns = -1 if timeout is None else int(timeout * 1e9)
    return SegOpenOpts(ctypes.sizeof(SegOpenOpts), flags, owner_uid or 0, tns)


class Segment:
    """A published (``local``) or opened segment.  ``ptr`` is its address in
    this process, ``size`` its bytes.  Close it (or use ``with``) before the
    handle it came through; a segment in use by batches in flight is
    released when they complete."""

    def __init__(self, eng: "TransferEngine", s: int, local: bool, keep: Any = None,
                 mem: Any = None) -> None:
        l = _l()
        self._eng, self._s, self.local = eng, s, local  # type: TransferEngine, Optional[int], bool
        self._keep = keep  # the registered tensor stays alive with the segment
        # a reference on its buffer: the tensor's close() must not free the
        # memory a published segment (and batches on it) still address
        self._mem = mem
        eng.gpu._adopt()
        _pin(eng.handle)  # closed after the segment
        self.ptr = int(l.nvb_gpu_seg_ptr(s))
        self.size = int(l.nvb_gpu_seg_size(s))
        self.id = int(l.nvb_gpu_seg_id(s))

    @property
    def _ptr(self) -> int:
        if not self._s:
            raise NvbridgeError(errno.EBADF, "nvbridge.Segment", "closed")
        return self._s

    def revoked(self) -> bool:
        return bool(_l().nvb_gpu_seg_revoked(self._ptr))

    def stats(self) -> Dict[str, int]:
        """Where its setup's time went (struct nvb_gpu_seg_stats)."""
        st = SegStats()
        st.sz = ctypes.sizeof(st)
        _gpu_check(_l().nvb_gpu_seg_stats(self._ptr, ctypes.byref(st)), "nvb_gpu_seg_stats")
        return _as_dict(st)

    def close(self) -> None:
        s, self._s = self._s, None
        if s:
            _l().nvb_gpu_seg_close(s)
            mem, self._mem = self._mem, None
            if mem is not None:
                mem.release()  # the buffer goes now if its tensor was closed
            self._keep = None
            _unpin(self._eng.handle)
            self._eng.gpu._drop()

    def __enter__(self) -> "Segment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_s", None):
            self.close()


class Batch:
    """A submitted batch.  ``status()`` reads memory only (no CUDA call)."""

    def __init__(self, eng: "TransferEngine", b: int, n: int) -> None:
        self._eng, self._b, self.n = eng, b, n  # type: TransferEngine, Optional[int], int
        eng.gpu._adopt()
        l = _l()
        self.method = int(l.nvb_gpu_batch_method(b))
        self.user_data = int(l.nvb_gpu_batch_user_data(b))

    @property
    def _ptr(self) -> int:
        if not self._b:
            raise NvbridgeError(errno.EBADF, "nvbridge.Batch", "freed")
        return self._b

    def status(self) -> List[int]:
        """Per request: 0, -EINPROGRESS, -ENOLINK (its segment was revoked
        before the batch completed) or -EIO."""
        arr = (c_int * self.n)()
        _l().nvb_gpu_batch_status(self._ptr, arr, self.n)
        return list(arr)

    @property
    def done(self) -> bool:
        return bool(_l().nvb_gpu_batch_status(self._ptr, None, 0) != -errno.EINPROGRESS)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Until the batch completes; raises NvbridgeError with the first
        request's error (status() has each) or ETIMEDOUT."""
        tns = -1 if timeout is None else int(timeout * 1e9)
        _gpu_check(_l().nvb_gpu_batch_wait(self._ptr, tns), "nvb_gpu_batch_wait")

    def close(self) -> None:
        """Frees the handle (a batch still running is freed when it completes)."""
        b, self._b = self._b, None
        if b:
            _l().nvb_gpu_batch_free(b)
            self._eng.gpu._drop()

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_b", None):
            self.close()


Request = Tuple[int, int, Segment, int, int]


class TransferEngine:
    """Segments and batches of one Gpu, rendezvous through one Handle.  The
    library reads that handle's events while segments opened through it
    are open (revocations): keep another Handle for events of your own.
    The handle stays open while a segment from it is (its close() takes
    effect after the last segment's), and while a prefetch() on it lasts:
    until the name is opened or the Gpu is closed.  A registered tensor's
    buffer stays allocated until its segment is closed, even if the tensor
    is closed first.  Thread-safe, as the C layer is."""

    def __init__(self, gpu: Gpu, handle: Handle) -> None:
        self.gpu, self.handle = gpu, handle
        # names prefetched and not opened yet: each pins the handle, which
        # the C layer reads until the name is opened or the Gpu is closed
        self._prefetched: Dict[str, bool] = {}
        self._pf_lock = threading.Lock()
        self._pf_hooked = False

    def _prefetch_done(self, name: Optional[str]) -> None:
        """Unpins the handle for name (None: every name, the Gpu closed)."""
        with self._pf_lock:
            names = list(self._prefetched) if name is None else \
                [name] if self._prefetched.pop(name, None) else []
            if name is None:
                self._prefetched.clear()
                self._pf_hooked = False
        for _ in names:
            _unpin(self.handle)

    def _call(self, fn: str, *args: Any) -> None:
        """fn(gpu, handle, *args) with the handle pinned meanwhile."""
        h = _pin(self.handle)
        try:
            _gpu_check(getattr(_l(), fn)(self.gpu._ptr, h, *args), fn)
        finally:
            _unpin(self.handle)

    def register(self, name: str, tensor: SharedTensor, access: Union[Access, int] = Access.OWNER,
                 uid: Optional[int] = None, gid: Optional[int] = None) -> Segment:
        """Publishes a Gpu.empty() tensor's buffer under name (exported once)."""
        mem = getattr(tensor, "_mem", None)
        if not isinstance(mem, _GpuBuffer) or not mem._b:
            raise ValueError("register needs an open tensor from Gpu.empty()")
        try:
            mem.acquire()  # held by the segment (released by its close)
        except ValueError:
            raise ValueError("register needs an open tensor from Gpu.empty()") from None
        acc = int(access)
        if acc == Access.UID and uid is None:
            raise ValueError("Access.UID needs uid=")
        if acc == Access.GID and gid is None:
            raise ValueError("Access.GID needs gid=")
        o = SegPublishOpts(ctypes.sizeof(SegPublishOpts), acc, uid or 0, gid or 0, 0)
        s = c_vp()
        try:
            self._call("nvb_gpu_seg_publish", os.fsencode(name), mem._b, ctypes.byref(o),
                       ctypes.byref(s))
        except BaseException:
            mem.release()
            raise
        return Segment(self, s.value or 0, True, keep=tensor, mem=mem)

    def open_segment(self, name: str, owner_uid: Optional[int] = None, any_owner: bool = False,
                     timeout: Optional[float] = 0.0, local_only: bool = False) -> Segment:
        """Opens a peer's segment.  The publisher must be owner_uid, or this
        process's euid when neither owner_uid nor any_owner is given.
        timeout: seconds to wait for it to be published (None: forever)."""
        o = _open_opts(owner_uid, any_owner, timeout, local_only)
        s = c_vp()
        self._call("nvb_gpu_seg_open", os.fsencode(name), ctypes.byref(o), ctypes.byref(s))
        seg = Segment(self, s.value or 0, False)  # pins the handle itself
        self._prefetch_done(name)  # the open ended the C prefetch of name
        return seg

    def open_segments(self, names: Sequence[str], owner_uid: Optional[int] = None,
                      any_owner: bool = False, timeout: Optional[float] = 0.0,
                      local_only: bool = False) -> List[Segment]:
        """open_segment() of every name in one call (nvb_gpu_seg_open_many):
        the fetches in one round trip, the uncached ones mapped in one
        reservation.  All or nothing; a name twice raises EINVAL."""
        o = _open_opts(owner_uid, any_owner, timeout, local_only)
        n = len(names)
        arr = (ctypes.c_char_p * max(n, 1))(*[os.fsencode(x) for x in names])
        out = (c_vp * max(n, 1))()
        self._call("nvb_gpu_seg_open_many", arr, n, ctypes.byref(o), out)
        segs = [Segment(self, out[i] or 0, False) for i in range(n)]  # each pins the handle
        for x in names:
            self._prefetch_done(x)  # the open ended the C prefetch of x
        return segs

    def prefetch(self, name: str, owner_uid: Optional[int] = None, any_owner: bool = False,
                 local_only: bool = False) -> None:
        """Imports name in the background as soon as it is published, so that
        open_segment() with the same owner arguments costs no request and no
        CUDA call."""
        o = _open_opts(owner_uid, any_owner, 0.0, local_only)
        with self._pf_lock:
            new = name not in self._prefetched
            if new:
                _pin(self.handle)  # until open_segment(name) or the Gpu's close
                self._prefetched[name] = True
            if not self._pf_hooked:
                self.gpu._after_close.append(lambda: self._prefetch_done(None))
                self._pf_hooked = True
        try:
            self._call("nvb_gpu_seg_prefetch", os.fsencode(name), ctypes.byref(o))
        except BaseException:
            if new:
                self._prefetch_done(name)
            raise

    def submit(self, requests: Sequence[Request], stream: Optional[int] = None, method: int = 0,
               flag: int = 0, flag_val: int = 0, eventfd: Optional[int] = None,
               user_data: int = 0) -> Batch:
        """requests: (READ or WRITE, local address, segment, offset, length)
        tuples.  stream: yours (one being captured into a CUDA graph raises
        EBUSY), None: the library's own; flag: a device word set to flag_val
        after the copies; eventfd: yours, +1 on completion."""
        n = len(requests)
        arr = (XferReq * max(n, 1))()
        for i, (op, local, seg, off, ln) in enumerate(requests):
            arr[i] = XferReq(op, 0, local, seg._ptr if seg is not None else None, off, ln)
        o = XferOpts(ctypes.sizeof(XferOpts), XFER_EVENTFD if eventfd is not None else 0, method,
                     stream or None, flag, flag_val, -1 if eventfd is None else eventfd, user_data)
        b = c_vp()
        _gpu_check(_l().nvb_gpu_xfer_submit(self.gpu._ptr, arr, n, ctypes.byref(o),
                                            ctypes.byref(b)), "nvb_gpu_xfer_submit")
        return Batch(self, b.value or 0, n)

    def fileno(self) -> int:
        """The eventfd that counts completed batches (owned by the Gpu)."""
        return _gpu_check(_l().nvb_gpu_xfer_fd(self.gpu._ptr), "nvb_gpu_xfer_fd")

    def stats(self) -> Dict[str, int]:
        st = XferStats()
        st.sz = ctypes.sizeof(st)
        _gpu_check(_l().nvb_gpu_xfer_stats(self.gpu._ptr, ctypes.byref(st)), "nvb_gpu_xfer_stats")
        return _as_dict(st)
