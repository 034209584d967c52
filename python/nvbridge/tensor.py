# SPDX-License-Identifier: MIT
"""Shared tensors: memory another process can map, described by dtype, shape
and strides, exported without a copy through DLPack (``__dlpack__``),
``__cuda_array_interface__`` (GPU) and ``__array_interface__`` (host).

Host memory is a sealed memfd (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
mapped MAP_SHARED: what one process writes, every importer reads.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import threading
import weakref
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from . import dlpack
from ._lib import NvbridgeError
from .dlpack import DLDeviceType, DType
from .meta import TensorDesc, contiguous_strides
from .rendezvous import Access, Entry, Event, EventType, Fetched, Handle, RevokeReason

__all__ = ["SharedTensor", "empty", "publish_tensor", "import_tensor"]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_PROT_READ, _PROT_WRITE, _MAP_SHARED = 1, 2, 1
_MAP_FAILED = ctypes.c_void_p(-1).value
_PAGE = os.sysconf("SC_PAGE_SIZE")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class _Memory:
    """Mapped memory shared by the SharedTensors that view it (as_strided):
    freed (_free) when the last one releases it."""

    ptr = 0
    size = 0
    device = (int(DLDeviceType.CPU), 0)

    def __init__(self) -> None:
        self._refs = 1
        self._rlock = threading.Lock()

    def acquire(self) -> None:
        with self._rlock:
            if self._refs <= 0:
                raise ValueError("memory already released")
            self._refs += 1

    def release(self) -> None:
        with self._rlock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            self._free()

    def _free(self) -> None:
        raise NotImplementedError

    def export(self) -> Tuple[int, bytes]:
        """(fd to publish, what precedes the descriptor in the blob)."""
        raise NvbridgeError(errno.EINVAL, "publish_tensor",
                            "an imported GPU tensor cannot be published again (publish the original)")


class _HostMemory(_Memory):
    """A MAP_SHARED mapping of a memfd (or other regular file) and its fd."""

    device = (int(DLDeviceType.CPU), 0)

    def __init__(self, fd: int, size: int, writable: bool) -> None:
        super().__init__()
        prot = _PROT_READ | (_PROT_WRITE if writable else 0)
        p = _libc.mmap(None, max(size, 1), prot, _MAP_SHARED, fd, 0)
        if p in (None, _MAP_FAILED):
            e = ctypes.get_errno()
            os.close(fd)
            raise NvbridgeError(e, "mmap", f"{size} bytes of the shared file")
        self.fd, self.ptr, self.size, self.writable = fd, int(p), size, writable

    def export(self) -> Tuple[int, bytes]:
        return self.fd, b""

    def _free(self) -> None:
        if self.ptr:
            _libc.munmap(self.ptr, max(self.size, 1))
            self.ptr = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SharedTensor:
    """A tensor over shared memory, exportable without a copy.

    ``torch.from_dlpack(t)``, ``numpy.from_dlpack(t)`` and ``numpy.asarray(t)``
    (host) or cupy / numba (``__cuda_array_interface__``, GPU) see the same
    bytes as every other process that imported it.  The memory stays mapped
    while this object or any DLPack consumer of it (a torch tensor, a numpy
    array) is alive; ``close()`` gives it back once they are all gone.
    """

    def __init__(self, memory: "_Memory", desc: TensorDesc, entry: Optional[Entry] = None) -> None:
        desc.fits(memory.size)
        self._mem = memory
        self._desc = desc
        self.entry = entry  #: the publisher's entry, for an imported tensor
        self._lock = threading.Lock()
        self._exports = 0
        self._closing = False
        self._released = False
        self._revoked = False
        self._handle: Optional["weakref.ReferenceType[Handle]"] = None  # the importing handle

    # ---- description ----
    @property
    def desc(self) -> TensorDesc:
        return self._desc

    @property
    def dtype(self) -> DType:
        return self._desc.dtype

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._desc.shape

    @property
    def strides(self) -> Tuple[int, ...]:
        """Strides in elements (DLPack's convention)."""
        return self._desc.strides

    @property
    def ndim(self) -> int:
        return len(self._desc.shape)

    @property
    def device(self) -> Tuple[int, int]:
        """(DLPack device type, device id)."""
        return self._mem.device

    @property
    def is_cuda(self) -> bool:
        return self._mem.device[0] == DLDeviceType.CUDA

    @property
    def ptr(self) -> int:
        """Address of element 0."""
        if self._released:
            raise ValueError("tensor is closed")
        return self._mem.ptr + self._desc.offset

    @property
    def nbytes(self) -> int:
        n = self._desc.dtype.itemsize
        for s in self._desc.shape:
            n *= s
        return n

    @property
    def readonly(self) -> bool:
        return self._desc.readonly or not getattr(self._mem, "writable", True)

    @property
    def revoked(self) -> bool:
        """True once the publisher withdrew the entry, as far as the events
        read through the importing handle tell (read_events, events, aevents,
        Gpu.poll_events)."""
        if self._revoked:
            return True
        rev = getattr(self._mem, "revoked", None)
        return bool(rev()) if rev else False

    def _on_event(self, ev: Event, h: Any = None) -> None:
        # registered on its importing handle only: ev.id is of its registry
        if ev.type == EventType.REVOKED and self.entry is not None and ev.id == self.entry.id:
            self._revoked = True
        elif ev.type == EventType.OVERFLOW and not self._revoked:
            h = self._handle() if self._handle is not None else None
            if h is not None and not h.closed:
                _recheck(h, self)  # the lost events may have held our revocation

    def __repr__(self) -> str:
        kind = "cuda" if self.is_cuda else "cpu"
        return (f"<nvbridge.SharedTensor {kind} {self.dtype.name}{list(self.shape)}"
                f"{' closed' if self._released else ''}>")

    # ---- lifetime ----
    def close(self) -> None:
        """Unmaps now, or when the last DLPack consumer lets go."""
        with self._lock:
            self._closing = True
            free = self._exports == 0 and not self._released
            self._released |= free
        if free:
            self._mem.release()

    @property
    def closed(self) -> bool:
        return self._released

    def _export_done(self) -> None:
        with self._lock:
            self._exports -= 1
            free = self._closing and self._exports == 0 and not self._released
            self._released |= free
        if free:
            self._mem.release()

    def as_strided(self, shape: Sequence[int], strides: Sequence[int], offset: int = 0,
                   dtype: Any = None) -> "SharedTensor":
        """Another view of the same memory (strides in elements, offset in
        bytes from the start of the memory); it may be published as well."""
        d = TensorDesc(self._desc.device_type, dlpack.dtype(dtype) if dtype else self.dtype,
                       tuple(int(s) for s in shape), tuple(int(s) for s in strides), int(offset))
        d.fits(self._mem.size)
        self._mem.acquire()
        return SharedTensor(self._mem, d, self.entry)

    def __enter__(self) -> "SharedTensor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # no live export can hold a reference here (they keep self alive)
        if getattr(self, "_mem", None) is not None and not self._released:
            self._released = True
            self._mem.release()

    # ---- zero-copy protocols ----
    def __dlpack_device__(self) -> Tuple[int, int]:
        return self._mem.device

    def __dlpack__(self, *, stream: Optional[int] = None,
                   max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Optional[Tuple[int, int]] = None,
                   copy: Optional[bool] = None) -> Any:
        """A DLPack capsule (versioned when max_version >= (1, 0)).  No copy is
        ever made: copy=True and a foreign dl_device raise BufferError.  The
        stream is not waited on: ordering against the producer's writes is
        the application's (completion flags, events)."""
        if copy:
            raise BufferError("nvbridge shares memory; it does not copy (copy=True)")
        if dl_device is not None and tuple(dl_device) != tuple(self._mem.device):
            raise BufferError(f"tensor lives on {self._mem.device}, not {tuple(dl_device)}")
        with self._lock:
            if self._closing or self._released:
                raise BufferError("tensor is closed")
            self._exports += 1
        versioned = max_version is not None and tuple(max_version)[0] >= 1
        d = self._desc
        return dlpack.export_capsule(self, self.ptr, self._mem.device, d.dtype, d.shape,
                                     d.strides, versioned, self.readonly, self._export_done)

    def _iface(self) -> Dict[str, Any]:
        isz = self.dtype.itemsize
        c = contiguous_strides(self.shape) == self.strides
        return {"shape": self.shape, "typestr": self.dtype.typestr,
                "data": (self.ptr, self.readonly),
                "strides": None if c else tuple(s * isz for s in self.strides), "version": 3}

    @property
    def __array_interface__(self) -> Dict[str, Any]:
        if self.is_cuda:
            raise AttributeError("__array_interface__: GPU memory (use __cuda_array_interface__)")
        # the dict does not keep the mapping alive; numpy keeps a reference to self
        return self._iface()

    @property
    def __cuda_array_interface__(self) -> Dict[str, Any]:
        if not self.is_cuda:
            raise AttributeError("__cuda_array_interface__: host memory")
        i = self._iface()
        i["stream"] = None
        return i

    def memoryview(self) -> memoryview:
        """The host bytes [ptr, ptr + extent - offset) as a flat memoryview
        (keeps nothing alive: do not use it after close())."""
        if self.is_cuda:
            raise TypeError("memoryview: GPU memory")
        n = self._desc.extent - self._desc.offset
        mv = memoryview((ctypes.c_char * n).from_address(self.ptr)).cast("B")
        return mv.toreadonly() if self.readonly else mv

    def numpy(self) -> Any:
        """numpy view (no copy; host memory only)."""
        import numpy
        return numpy.asarray(self)

    def torch(self) -> Any:
        """torch view through DLPack (no copy)."""
        import torch
        return torch.utils.dlpack.from_dlpack(self)


def _shape_tuple(shape: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


def empty(shape: Union[int, Sequence[int]], dtype: Any = "float32", name: str = "nvbridge") -> SharedTensor:
    """A new host tensor in a sealed memfd (zero-filled), ready to publish."""
    dt = dlpack.dtype(dtype)
    shp = _shape_tuple(shape)
    desc = TensorDesc(DLDeviceType.CPU, dt, shp, contiguous_strides(shp))
    size = max(desc.extent, 1)
    size = (size + _PAGE - 1) // _PAGE * _PAGE
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError:
        os.close(fd)
        raise
    return SharedTensor(_HostMemory(fd, size, True), desc)


def publish_tensor(h: Handle, name: str, t: SharedTensor, access: Union[Access, int] = Access.OWNER,
                   uid: Optional[int] = None, gid: Optional[int] = None) -> int:
    """Publishes t's memory and its descriptor under name; returns the entry id."""
    if t.closed:
        raise ValueError("tensor is closed")
    pub = getattr(t._mem, "publish", None)
    if pub is not None:  # GPU buffers: registered ranges publish differently
        return int(pub(h, name, t.desc, access, uid, gid))
    fd, head = t._mem.export()
    return h.publish(name, fd=fd, blob=head + t.desc.pack(), access=access, uid=uid, gid=gid)


def _host_from_fetched(f: Fetched, desc: TensorDesc, writable: bool,
                       allow_unsealed: bool) -> _HostMemory:
    if f.fd < 0:
        raise NvbridgeError(errno.EBADMSG, "import_tensor", "host tensor entry carries no file")
    st = os.fstat(f.fd)
    if not stat.S_ISREG(st.st_mode):
        raise NvbridgeError(errno.EBADMSG, "import_tensor", "host tensor entry's file is not a regular file/memfd")
    try:
        seals = fcntl.fcntl(f.fd, fcntl.F_GET_SEALS)
    except OSError:
        seals = 0
    if not allow_unsealed and not seals & fcntl.F_SEAL_SHRINK:
        raise NvbridgeError(errno.EPERM, "import_tensor",
                            "the file is not sealed against shrinking (F_SEAL_SHRINK): its "
                            "publisher could truncate it under the mapping (SIGBUS); "
                            "allow_unsealed=True accepts that")
    if writable and (fcntl.fcntl(f.fd, fcntl.F_GETFL) & os.O_ACCMODE) == os.O_RDONLY:
        raise NvbridgeError(errno.EACCES, "import_tensor", "the file is read-only: pass writable=False")
    desc.fits(st.st_size)
    # map what the tensor needs, not whatever size the publisher's file has
    size = min(st.st_size, (desc.extent + _PAGE - 1) // _PAGE * _PAGE)
    return _HostMemory(f.detach(), size, writable)


class _Watches:
    """The watches import_tensor holds on one handle."""

    def __init__(self) -> None:
        self.names: Dict[str, int] = {}
        self.all = False


def _watch(h: Handle, name: str) -> None:
    """Watches name before the fetch, so that no revocation slips between.
    With every watch slot taken, one of ours makes way for a single
    scope-wide watch (as the C GPU layer does)."""
    st = h.__dict__.setdefault("_tensor_watches", _Watches())
    if st.all:
        return
    for n, prefix in ((name, False), ("", True)):
        try:
            wid = h.watch(n, prefix=prefix)
        except NvbridgeError as e:
            if e.errno == errno.EEXIST:
                st.all |= prefix
                return
            if e.errno != errno.ENOSPC or (prefix and not st.names):
                raise
            continue
        if prefix:
            st.all = True
        else:
            st.names[name] = wid
        return
    old, wid = st.names.popitem()
    h.unwatch(wid)
    try:
        h.watch("", prefix=True)
    except NvbridgeError:
        st.names[old] = h.watch(old)
        raise
    st.all = True
    # a revocation of old between the unwatch and the watch went unseen: look again
    for obj in list(h._hooks):
        if isinstance(obj, SharedTensor) and obj.entry is not None and obj.entry.name == old:
            _recheck(h, obj)


def _recheck(h: Handle, t: SharedTensor) -> None:
    """Fetches t's name again; if its entry is gone (or replaced), every hook
    of h gets the REVOKED event it missed."""
    ent = t.entry
    assert ent is not None
    try:
        with h.fetch(ent.name, expect_uid=ent.uid) as f:
            if f.id == ent.id:
                return
    except NvbridgeError as e:
        if e.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTUNIQ):
            raise
    h._deliver(Event(EventType.REVOKED, RevokeReason.NONE, 0, ent.id, 0, 0, ent.uid, 0, 0, ent.name))


def import_tensor(h: Handle, name: str, wait: bool = False, timeout: Optional[float] = None,
                  expect_uid: Optional[int] = None, gpu: Any = None, writable: bool = True,
                  allow_unsealed: bool = False, watch: bool = True,
                  gpu_flags: int = 0) -> SharedTensor:
    """Fetches name and maps its memory as a SharedTensor (no copy).

    Host entries map the memfd (writable unless ``writable=False``); GPU
    entries need ``gpu`` (an nvbridge.Gpu) and come back as kDLCUDA tensors
    (``gpu_flags``: nvbridge.gpu.IMPORT_NO_FABRIC, IMPORT_LOCAL_ONLY).
    With ``watch`` the name is watched first, so that ``t.revoked`` turns
    True when a revocation is read through h.
    """
    from .meta import split_blob
    if watch:
        _watch(h, name)
    with h.fetch(name, wait=wait, timeout=timeout, expect_uid=expect_uid) as f:
        gpu_meta, desc = split_blob(f.blob)
        if gpu_meta is None:
            assert desc is not None
            if desc.device_type != DLDeviceType.CPU:
                raise NvbridgeError(errno.EBADMSG, "import_tensor",
                                    "descriptor says CUDA but the blob has no GPU metadata")
            mem: Any = _host_from_fetched(f, desc, writable, allow_unsealed)
        else:
            if gpu is None:
                raise NvbridgeError(errno.ENODEV, "import_tensor",
                                    f"{name!r} is GPU memory: pass gpu=nvbridge.Gpu()")
            if desc is not None and desc.device_type != DLDeviceType.CUDA:
                raise NvbridgeError(errno.EBADMSG, "import_tensor",
                                    "GPU metadata with a host descriptor")
            if desc is None and gpu_meta[:4] == b"RBVN":  # a range: its descriptor has an entry of its own
                from .registered import companion_desc
                desc = companion_desc(h, name, f)
            mem = gpu._import(h, f, gpu_meta, gpu_flags, name)
            if desc is None:
                desc = TensorDesc(DLDeviceType.CUDA, dlpack.dtype("uint8"), (mem.size,), (1,))
        try:
            t = SharedTensor(mem, desc, f.entry)
        except BaseException:
            mem.release()
            raise
    if watch:
        t._handle = weakref.ref(h)
        h._add_hook(t)
    return t
