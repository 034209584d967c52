# SPDX-License-Identifier: MIT
"""The GPU layer (nvbridge_gpu.h): exportable CUDA VMM buffers, imports as
kDLCUDA SharedTensors, copies and completion flags on the caller's streams.

Streams are CUstream / cudaStream_t values as ints, e.g.
``torch.cuda.current_stream().cuda_stream``; 0 is the legacy default stream.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading
from typing import Any, List, Optional, Sequence, Tuple, Union

from . import _lib, dlpack
from ._lib import NvbridgeError
from .dlpack import DLDeviceType
from .meta import TensorDesc, contiguous_strides
from .rendezvous import Event, EventType, Fetched, Handle
from .tensor import SharedTensor, _Memory


def _overflow_uid() -> int:
    """The uid a publisher that this user namespace does not map reads as."""
    try:
        with open("/proc/sys/kernel/overflowuid") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65534


_OVERFLOW_UID = _overflow_uid()


__all__ = ["Gpu", "COPY_AUTO", "COPY_CE", "COPY_SM", "COPY_BATCH", "COPY_LOOP",
           "IMPORT_NO_FABRIC", "IMPORT_LOCAL_ONLY", "HANDLE_POSIX_FD", "HANDLE_FABRIC",
           "FLAG_ABORTED"]

COPY_AUTO, COPY_CE, COPY_SM, COPY_BATCH, COPY_LOOP = 0, 1, 2, 4, 8
IMPORT_NO_FABRIC, IMPORT_LOCAL_ONLY = 1, 2
ALLOC_NO_FABRIC = 1
HANDLE_POSIX_FD, HANDLE_FABRIC = 1, 8
FLAG_ABORTED = 0x7FFFFFFF


def _gpu_check(ret: int, fn: str) -> int:
    return _lib.check(ret, fn, _lib.lib().nvb_gpu_last_error)


class _GpuBuffer(_Memory):
    """An nvb_gpu_alloc() buffer, mapped in this process."""

    def __init__(self, gpu: "Gpu", buf: int, dev: int) -> None:
        super().__init__()
        l = _lib.lib()
        self.gpu, self._b = gpu, buf  # type: Gpu, Optional[int]
        gpu._adopt()
        self.ptr = int(l.nvb_gpu_buf_ptr(buf))
        self.size = int(l.nvb_gpu_buf_size(buf))
        self.handle_types = int(l.nvb_gpu_buf_handle_types(buf))
        self.device = (int(DLDeviceType.CUDA), dev)

    owner: Any = None   #: registered memory: what keeps the application's memory alive
    kind = 1            #: NVB_GPU_KIND_ALLOC, _VMM (registered), _LEGACY_IPC (registered)

    def export(self) -> Tuple[int, bytes]:
        """(fd owned by the buffer, struct nvb_gpu_meta bytes)."""
        fd = ctypes.c_int(-1)
        m = _lib.GpuMeta()
        _gpu_check(_lib.lib().nvb_gpu_export(self._b, ctypes.byref(fd), ctypes.byref(m)),
                   "nvb_gpu_export")
        return fd.value, ctypes.string_at(ctypes.addressof(m), ctypes.sizeof(m))

    def publish(self, h: Handle, name: str, desc: TensorDesc, access: int,
                uid: Optional[int], gid: Optional[int]) -> int:
        """One entry (struct nvb_gpu_meta + descriptor) when the buffer is a
        whole allocation; else a registered range (nvbridge.registered)."""
        try:
            fd, head = self.export()
        except NvbridgeError as e:
            if e.errno != errno.EOPNOTSUPP or self.kind == 1:
                raise
            from .registered import publish_range
            assert self._b is not None  # export() succeeds or fails otherwise
            return publish_range(self.gpu, self._b, h, name, desc, access, uid, gid)
        return h.publish(name, fd=fd, blob=head + desc.pack(), access=access, uid=uid, gid=gid)

    def _free(self) -> None:
        b, self._b = self._b, None
        if b:
            _lib.lib().nvb_gpu_free(b)
            self.ptr = 0
            self.owner = None  # unregistered: the application's object may go
            self.gpu._drop()


class _GpuMapping(_Memory):
    """An imported allocation (struct nvb_gpu_map); one reference."""

    def __init__(self, gpu: "Gpu", m: int, dev: int) -> None:
        super().__init__()
        l = _lib.lib()
        self.gpu, self._m = gpu, m  # type: Gpu, Optional[int]
        gpu._adopt()
        self.ptr = int(l.nvb_gpu_map_ptr(m))
        self.size = int(l.nvb_gpu_map_size(m))
        self.id = int(l.nvb_gpu_map_id(m))
        self.handle_type = int(l.nvb_gpu_map_handle_type(m))
        self.device = (int(DLDeviceType.CUDA), dev)
        self.writable = True

    def revoked(self) -> bool:
        return bool(self._m) and bool(_lib.lib().nvb_gpu_map_revoked(self._m))

    def _free(self) -> None:
        m, self._m = self._m, None
        if m:
            _lib.lib().nvb_gpu_unmap(m)
            self.ptr = 0
            self.gpu._drop()


def _streams(streams: Union[int, Sequence[int], None]) -> Tuple[Any, int]:
    if streams is None:
        streams = [0]
    elif isinstance(streams, int):
        streams = [streams]
    arr = (ctypes.c_void_p * max(len(streams), 1))(*[s or None for s in streams])
    return arr, len(streams)


class Gpu:
    """An open GPU layer (struct nvb_gpu).  Raises NvbridgeError with ENOENT
    (no libcuda) or ENODEV (no usable GPU) on hosts without one.

    Work on streams (copies, flags) runs in the calling thread's current CUDA
    context, which the C layer never changes behind the caller's back.  So
    that a script without PyTorch works, the constructor makes ``device``'s
    primary context current in the calling thread, as
    ``torch.cuda.set_device(device)`` does (the same context PyTorch uses);
    pass ``device=None`` to leave the thread's context alone, and
    ``set_device()`` to switch later.

    ``sm_ctas`` caps the CTAs of the library's SM kernels per launch (0: the
    library's default, 4); ``sm_yield=True`` runs them at the lowest stream
    priority, one CTA a piece, so that they use only the SMs the
    application's kernels leave idle (NVB_GPU_OPEN_SM_YIELD, experimental:
    see nvb_gpu_open(3))."""

    def __init__(self, libcuda: Optional[str] = None, device: Optional[int] = 0, *,
                 sm_ctas: int = 0, sm_yield: bool = False) -> None:
        l = _lib.lib()
        if not 0 <= sm_ctas < 1 << 32:
            raise ValueError(f"sm_ctas {sm_ctas}: 0 (the default) to 2**32 - 1")
        self._libcuda = os.fsencode(libcuda) if libcuda else None
        o = _lib.GpuOpts(ctypes.sizeof(_lib.GpuOpts), _lib.GPU_OPEN_SM_YIELD if sm_yield else 0,
                         sm_ctas, self._libcuda)
        g = ctypes.c_void_p()
        _gpu_check(l.nvb_gpu_open(ctypes.byref(o), ctypes.byref(g)), "nvb_gpu_open")
        self._g: Optional[int] = g.value
        self._l = l
        self._uuids: Optional[List[bytes]] = None
        self._lock = threading.Lock()
        self._live = 0          # buffers and mappings not yet freed
        self._closing = False
        self._after_close: List[Any] = []  # callables run once nvb_gpu_close() returned
        if device is not None:
            try:
                self.set_device(device)
            except BaseException:
                l.nvb_gpu_close(g.value)
                self._g = None
                raise

    @property
    def _ptr(self) -> int:
        if self._closing or self._g is None:
            raise NvbridgeError(errno.EBADF, "nvbridge.Gpu", "closed")
        return self._g

    def _adopt(self) -> None:
        with self._lock:
            self._live += 1

    def _close_now(self, g: int) -> None:
        self._l.nvb_gpu_close(g)
        # what the C layer used until now may go (a prefetch's handle)
        with self._lock:
            hooks, self._after_close = self._after_close, []
        for fn in hooks:
            fn()

    def _drop(self) -> None:
        with self._lock:
            self._live -= 1
            g = self._g if self._closing and self._live == 0 else None
            if g:
                self._g = None
        if g:
            self._close_now(g)

    def close(self) -> None:
        """Closes the layer, at once or, while tensors from it are still
        mapped (by this object or by DLPack consumers), when the last goes."""
        with self._lock:
            self._closing = True
            g = self._g if self._live == 0 else None
            if g:
                self._g = None
        if g:
            self._close_now(g)

    def __del__(self) -> None:
        if getattr(self, "_g", None):
            self.close()

    def __enter__(self) -> "Gpu":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- devices ----
    def device_count(self) -> int:
        return _gpu_check(self._l.nvb_gpu_device_count(self._ptr), "nvb_gpu_device_count")

    def set_device(self, dev: int) -> None:
        _gpu_check(self._l.nvb_gpu_set_device(self._ptr, dev), "nvb_gpu_set_device")

    def driver_version(self) -> int:
        return _gpu_check(self._l.nvb_gpu_driver_version(self._ptr), "nvb_gpu_driver_version")

    def device_name(self, dev: int = 0) -> str:
        buf = ctypes.create_string_buffer(256)
        _gpu_check(self._l.nvb_gpu_device_name(self._ptr, dev, buf, 256), "nvb_gpu_device_name")
        return buf.value.decode(errors="replace")

    def has_kernel(self) -> bool:
        return bool(self._l.nvb_gpu_has_kernel(self._ptr) == 1)

    def mem_info(self) -> Tuple[int, int]:
        """(free, total) bytes of the current device."""
        f, t = ctypes.c_size_t(), ctypes.c_size_t()
        _gpu_check(self._l.nvb_gpu_mem_info(self._ptr, ctypes.byref(f), ctypes.byref(t)),
                   "nvb_gpu_mem_info")
        return f.value, t.value

    def _device_of(self, uuid: bytes) -> int:
        """This process's ordinal of the device with that UUID (as torch
        numbers devices: CUDA_VISIBLE_DEVICES applies to both), else the
        current one (0)."""
        if self._uuids is None:
            self._uuids = []
            try:
                cu = ctypes.CDLL(self._libcuda.decode() if self._libcuda else "libcuda.so.1")
                n = ctypes.c_int()
                if cu.cuDeviceGetCount(ctypes.byref(n)) == 0:
                    for i in range(n.value):
                        d, u = ctypes.c_int(), (ctypes.c_char * 16)()
                        # the _v2 UUID, as the C layer records it (MIG instances differ)
                        get_uuid = getattr(cu, "cuDeviceGetUuid_v2", None) or cu.cuDeviceGetUuid
                        if cu.cuDeviceGet(ctypes.byref(d), i) == 0 and get_uuid(u, d) == 0:
                            self._uuids.append(u.raw)
            except OSError:
                pass
        return self._uuids.index(uuid) if uuid in self._uuids else 0

    # ---- buffers ----
    def empty(self, shape: Union[int, Sequence[int]], dtype: Any = "float32", device: int = 0,
              no_fabric: bool = False) -> SharedTensor:
        """A new exportable device tensor (nvb_gpu_alloc; contents undefined)."""
        dt = dlpack.dtype(dtype)
        shp = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        desc = TensorDesc(DLDeviceType.CUDA, dt, shp, contiguous_strides(shp))
        b = ctypes.c_void_p()
        _gpu_check(self._l.nvb_gpu_alloc(self._ptr, device, max(desc.extent, 1),
                                         ALLOC_NO_FABRIC if no_fabric else 0, ctypes.byref(b)),
                   "nvb_gpu_alloc")
        assert b.value, "nvb_gpu_alloc returned 0 without a buffer"
        return SharedTensor(_GpuBuffer(self, b.value, device), desc)

    def _import(self, h: Handle, f: Fetched, gpu_meta: bytes, flags: int = 0,
                name: str = "") -> _GpuMapping:
        m = ctypes.c_void_p()
        from .registered import RANGE_MAGIC, range_chunks
        if struct.unpack_from("<I", gpu_meta)[0] == RANGE_MAGIC:
            uuid = gpu_meta[48:64]  # struct nvb_gpu_meta_range.uuid
            if range_chunks(gpu_meta) > 1:
                # the other allocations travel as entries of their own: the C
                # import fetches them (and checks their ids against f's blob),
                # from f's publisher, so that another user's entry of the same
                # name can neither stand in for it nor make it fail (ENOTUNIQ);
                # a publisher this user namespace does not map (the overflow
                # uid) cannot be named: the id check below binds it to f
                o = _lib.GpuImportOpts(ctypes.sizeof(_lib.GpuImportOpts),
                                       flags | (_lib.GPU_IMPORT_ANY_OWNER if f.uid == _OVERFLOW_UID
                                                else _lib.GPU_IMPORT_OWNER_UID),
                                       0 if f.uid == _OVERFLOW_UID else f.uid, 0)
                h._call_gpu(lambda hp: self._l.nvb_gpu_import_with(self._ptr, hp, name.encode(),
                                                                   ctypes.byref(o), ctypes.byref(m)),
                            "nvb_gpu_import_with")
                if int(self._l.nvb_gpu_map_id(m.value)) != f.id:
                    self._l.nvb_gpu_unmap(m.value)
                    raise NvbridgeError(errno.ESTALE, "import_tensor",
                                        f"{name!r} was republished during the import: import again")
        else:
            uuid = bytes(_lib.GpuMeta.from_buffer_copy(
                gpu_meta.ljust(ctypes.sizeof(_lib.GpuMeta), b"\0")).uuid)
        if not m.value and hasattr(self._l, "nvb_gpu_import_fd_on"):
            # f.id is an id of h's registry: cached with it, never served an
            # entry of the same id that another handle's registry holds
            h._call_gpu(lambda hp: self._l.nvb_gpu_import_fd_on(self._ptr, hp, f.id, f.fd, gpu_meta,
                                                                len(gpu_meta), flags, ctypes.byref(m)),
                        "nvb_gpu_import_fd_on")
        elif not m.value:
            _gpu_check(self._l.nvb_gpu_import_fd(self._ptr, f.id, f.fd, gpu_meta, len(gpu_meta),
                                                 flags, ctypes.byref(m)), "nvb_gpu_import_fd")
        assert m.value, "nvb_gpu_import_fd returned 0 without a mapping"
        h._add_hook(self)
        return _GpuMapping(self, m.value, self._device_of(uuid))

    def _ptr_device(self, ptr: int) -> int:
        """The device ordinal of the memory at ptr (cuPointerGetAttribute),
        else 0."""
        try:
            cu = ctypes.CDLL(self._libcuda.decode() if self._libcuda else "libcuda.so.1")
            d = ctypes.c_int(-1)
            cu.cuPointerGetAttribute.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
            if cu.cuPointerGetAttribute(ctypes.byref(d), 9, ptr) == 0 and d.value >= 0:  # DEVICE_ORDINAL
                return int(d.value)
        except (OSError, AttributeError):
            pass
        return 0

    # ---- memory the application already has (nvbridge.registered) ----
    def register(self, ptr: int, nbytes: int, dtype: Any = "uint8",
                 shape: Optional[Sequence[int]] = None, strides: Optional[Sequence[int]] = None,
                 flags: int = 0, device: Optional[int] = None, owner: Any = None) -> SharedTensor:
        """[ptr, ptr + nbytes) of this process's device memory (nvb_gpu_register:
        cuMemCreate memory, also inside an allocation or across several
        mapped back to back, or cudaMalloc memory through a legacy IPC
        handle), as a SharedTensor of dtype / shape / strides (in elements;
        default: nbytes as a flat array) that publish_tensor() shares
        without a copy.  The memory stays the application's: close() only
        unregisters; keep it allocated (``owner`` is held for that) until
        the tensor is closed and importers are done.  flags:
        nvbridge.registered.REGISTER_NO_LEGACY / REGISTER_NO_FABRIC.
        EFAULT / EOPNOTSUPP for memory that cannot be shared (the
        exception's detail says why); ENOSYS with a libnvbridge older than
        1.2."""
        from .registered import register
        return register(self, int(ptr), int(nbytes), dtype,
                        None if shape is None else tuple(shape),
                        None if strides is None else tuple(strides), flags, device, owner)

    def register_tensor(self, obj: Any, flags: int = 0) -> SharedTensor:
        """Registers the memory of a CUDA tensor: a torch tensor, or anything
        with ``__cuda_array_interface__`` (cupy, numba) or a CUDA
        ``__dlpack__``; dtype, shape and strides come from it and travel
        with the entry.  The object is kept alive while registered.  With
        nvbridge's PyTorch allocator (nvbridge.torch_allocator / mempool)
        every tensor is registrable."""
        from .registered import register_tensor
        return register_tensor(self, obj, flags)

    def _on_event(self, ev: Event, h: Optional[Handle] = None) -> None:
        if ev.type != EventType.REVOKED or not self._g:
            return
        if h is not None and hasattr(self._l, "nvb_gpu_revoke_on"):
            # the id is one of h's registry: another registry's entry of
            # that id (imported through another handle) stays
            h._call_gpu(lambda hp: self._l.nvb_gpu_revoke_on(self._g, hp, ev.id), "nvb_gpu_revoke_on")
        else:
            self._l.nvb_gpu_revoke(self._g, ev.id)

    def poll_events(self, h: Handle) -> List[Event]:
        """Reads h's pending events without blocking; revocations reach this
        layer's mappings (SharedTensor.revoked, aborted waits)."""
        out: List[Event] = []
        while True:
            evs = h.read_events(64, 0)
            if not evs:
                return out
            out.extend(evs)

    def cache_trim(self) -> int:
        return _gpu_check(self._l.nvb_gpu_cache_trim(self._ptr), "nvb_gpu_cache_trim")

    # ---- copies and flags (asynchronous, on the caller's streams) ----
    def copy(self, dst: int, src: int, nbytes: int, streams: Union[int, Sequence[int], None] = None,
             flags: int = COPY_AUTO) -> None:
        """nbytes from src to dst (device or peer-mapped addresses)."""
        arr, n = _streams(streams)
        _gpu_check(self._l.nvb_gpu_copy(self._ptr, dst, src, nbytes, arr, n, flags), "nvb_gpu_copy")

    def copy_blocks(self, blocks: Sequence[Tuple[int, int, int]], stream: int = 0,
                    flags: int = COPY_AUTO, flag: int = 0, flag_val: int = 0) -> None:
        """Many (dst, src, nbytes) blocks; optionally sets the 32-bit word at
        flag to flag_val once every byte is visible."""
        arr = (_lib.GpuBlock * max(len(blocks), 1))(*[_lib.GpuBlock(*b) for b in blocks])
        _gpu_check(self._l.nvb_gpu_copy_blocks(self._ptr, arr, len(blocks), stream or None, flags,
                                               flag, flag_val), "nvb_gpu_copy_blocks")

    def signal(self, stream: int, flag: int, val: int) -> None:
        """After the stream's prior work: *flag = val, visible to peers."""
        _gpu_check(self._l.nvb_gpu_signal(self._ptr, stream or None, flag, val), "nvb_gpu_signal")

    def wait(self, stream: int, flag: int, val: int, peer: Optional[SharedTensor] = None) -> None:
        """The stream waits until (int32)(*flag - val) >= 0.  With peer (the
        imported tensor whose publisher writes the flag) the wait ends with
        FLAG_ABORTED in the flag when that entry is revoked."""
        if peer is None:
            _gpu_check(self._l.nvb_gpu_wait(self._ptr, stream or None, flag, val), "nvb_gpu_wait")
            return
        mem = peer._mem
        if not isinstance(mem, _GpuMapping) or not mem._m:
            raise ValueError("peer must be an open, imported GPU tensor")
        _gpu_check(self._l.nvb_gpu_wait_abortable(self._ptr, stream or None, flag, val, mem._m),
                   "nvb_gpu_wait_abortable")
