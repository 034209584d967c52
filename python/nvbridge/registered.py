# SPDX-License-Identifier: MIT
"""Memory the application already has, shared through nvb_gpu_register():
a torch tensor, anything with ``__cuda_array_interface__`` (cupy, numba) or
``__dlpack__`` (CUDA device), or a raw device pointer range.  The result is
a SharedTensor like one from Gpu.empty(): publish_tensor() publishes it and
import_tensor() imports it, whatever backs it.

What travels: a whole single VMM allocation goes as today's GPU entry
(struct nvb_gpu_meta + descriptor, one entry).  Anything else (a tensor
inside an allocation, several allocations, cudaMalloc memory) is published
by the C layer's nvb_gpu_publish() (the range metadata, and for several
allocations one entry per extra allocation, "<name>:c<i>"); its tensor
descriptor goes in the entry "<name>:t", published just before, by the same
process.  The importer takes the descriptor only from an entry of the same
publisher (uid, pid) and older than the memory's entry, so a republished
name never pairs one publication's memory with another's shape.
"""
from __future__ import annotations

import ctypes
import errno
import struct
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

from . import _lib, dlpack
from ._lib import NvbridgeError
from .dlpack import DLDeviceType
from .meta import TensorDesc, contiguous_strides, parse, span
from .rendezvous import Access, Fetched, Handle

if TYPE_CHECKING:
    from .gpu import Gpu
    from .tensor import SharedTensor

__all__ = ["register", "register_tensor", "REGISTER_NO_LEGACY", "REGISTER_NO_FABRIC",
           "KIND_ALLOC", "KIND_VMM", "KIND_LEGACY_IPC", "DESC_SUFFIX"]

REGISTER_NO_LEGACY, REGISTER_NO_FABRIC = 1, 2
KIND_ALLOC, KIND_VMM, KIND_LEGACY_IPC = 1, 2, 3
RANGE_MAGIC = 0x4E564252  # "NVBR": struct nvb_gpu_meta_range
DESC_SUFFIX = ":t"
DESC_MAGIC = b"NVBTD\0\0\0"  # the companion entry's blob: this, then the descriptor
_RANGE_HEAD = struct.Struct("<IIIIQQQII")  # magic size kind flags offset len gran nchunks chunk_size


def range_meta_len(blob: bytes) -> int:
    """Bytes of a range's metadata (header + chunk records) at the start of
    blob; EBADMSG when they do not fit.  The C layer checks the rest."""
    if len(blob) < _RANGE_HEAD.size:
        raise NvbridgeError(errno.EBADMSG, "nvbridge GPU range metadata", f"{len(blob)} bytes")
    magic, size, _k, _f, _o, _l, _g, n, csize = _RANGE_HEAD.unpack_from(blob)
    total = size + n * csize
    if size < _RANGE_HEAD.size or total > len(blob):
        raise NvbridgeError(errno.EBADMSG, "nvbridge GPU range metadata",
                            f"header {size} + {n} x {csize} bytes in a {len(blob)}-byte blob")
    return int(total)


def range_chunks(meta: bytes) -> int:
    return int(_RANGE_HEAD.unpack_from(meta)[7])


def _register_buf(gpu: "Gpu", ptr: int, nbytes: int, flags: int) -> int:
    l = _lib.lib()
    if not hasattr(l, "nvb_gpu_register"):
        raise NvbridgeError(errno.ENOSYS, "nvb_gpu_register",
                            "this libnvbridge predates nvb_gpu_register (1.2)")
    b = ctypes.c_void_p()
    _lib.check(l.nvb_gpu_register(gpu._ptr, ptr, nbytes, flags, ctypes.byref(b)),
               "nvb_gpu_register", l.nvb_gpu_last_error)
    assert b.value, "nvb_gpu_register returned 0 without a buffer"
    return int(b.value)


def register(gpu: "Gpu", ptr: int, nbytes: int, dtype: Any = "uint8",
             shape: Optional[Tuple[int, ...]] = None, strides: Optional[Tuple[int, ...]] = None,
             flags: int = 0, device: Optional[int] = None, owner: Any = None,
             offset: int = 0) -> "SharedTensor":
    """Gpu.register: see there."""
    from .gpu import _GpuBuffer
    from .tensor import SharedTensor
    if ptr <= 0 or nbytes <= 0:
        raise NvbridgeError(errno.EINVAL, "nvb_gpu_register", f"ptr {ptr:#x}, {nbytes} bytes")
    dt = dlpack.dtype(dtype)
    if shape is None:
        if nbytes % dt.itemsize:
            raise ValueError(f"{nbytes} bytes is not a whole number of {dt.name}")
        shape = (nbytes // dt.itemsize,)
    shp = tuple(int(s) for s in shape)
    strd = contiguous_strides(shp) if strides is None else tuple(int(s) for s in strides)
    desc = TensorDesc(DLDeviceType.CUDA, dt, shp, strd, offset)
    desc.fits(nbytes)  # the tensor lies inside what is registered
    dev = gpu._ptr_device(ptr) if device is None else device
    mem = _GpuBuffer(gpu, _register_buf(gpu, ptr, nbytes, flags), dev)
    mem.owner = owner  # keeps the application's memory alive while registered
    mem.kind = int(_lib.lib().nvb_gpu_buf_kind(mem._b))
    return SharedTensor(mem, desc)


def _from_cai(obj: Any) -> Tuple[int, Any, Tuple[int, ...], Optional[Tuple[int, ...]]]:
    cai = obj.__cuda_array_interface__
    ptr = int(cai["data"][0])
    dt = _typestr_dtype(cai["typestr"])
    shape = tuple(int(s) for s in cai["shape"])
    st = cai.get("strides")
    strides = None
    if st is not None:
        if any(int(s) % dt.itemsize for s in st):
            raise ValueError(f"strides {st} are not whole elements of {dt.name}")
        strides = tuple(int(s) // dt.itemsize for s in st)
    return ptr, dt, shape, strides


def _typestr_dtype(ts: str) -> dlpack.DType:
    for d in dlpack._DTYPES:
        if d.typestr == ts or (ts[1:] == d.typestr[1:] and ts[0] in "<|=" and d.typestr[0] in "<|"):
            return d
    raise TypeError(f"unsupported typestr {ts!r}")


def _from_dlpack(obj: Any) -> Tuple[int, Any, Tuple[int, ...], Optional[Tuple[int, ...]], int, Any]:
    """(data, dtype, shape, strides, device id, capsule) of obj's DLPack
    export; the capsule, kept unconsumed, keeps the producer's memory alive."""
    cap = obj.__dlpack__()
    dt_tensor = dlpack.peek_capsule(cap)
    if dt_tensor.device.device_type != DLDeviceType.CUDA:
        raise NvbridgeError(errno.EINVAL, "nvbridge.Gpu.register_tensor",
                            f"DLPack device type {dt_tensor.device.device_type}: not CUDA device memory")
    if dt_tensor.dtype.lanes != 1:
        raise TypeError("vector dtypes (lanes > 1) are not supported")
    dt = dlpack.dtype_from_code(dt_tensor.dtype.code, dt_tensor.dtype.bits)
    nd = dt_tensor.ndim
    shape = tuple(dt_tensor.shape[i] for i in range(nd))
    strides = tuple(dt_tensor.strides[i] for i in range(nd)) if dt_tensor.strides else None
    data = int(dt_tensor.data or 0) + int(dt_tensor.byte_offset)
    return data, dt, shape, strides, int(dt_tensor.device.device_id), cap


def register_tensor(gpu: "Gpu", obj: Any, flags: int = 0) -> "SharedTensor":
    """Gpu.register_tensor: see there."""
    dev: Optional[int] = None
    keep: Any = obj
    try:
        # torch raises TypeError here for dtypes the interface cannot name
        # (bfloat16) and RuntimeError for tensors that require grad: DLPack then
        ptr, dt, shape, strides = _from_cai(obj)
        d = getattr(obj, "device", None)
        dev = getattr(d, "index", None) if d is not None and not isinstance(d, int) else d
    except (AttributeError, TypeError, RuntimeError) as e:
        if not hasattr(obj, "__dlpack__"):
            if isinstance(e, AttributeError):
                raise TypeError(f"{type(obj).__name__} has neither __cuda_array_interface__ "
                                "nor __dlpack__") from None
            raise
        ptr, dt, shape, strides, dev, cap = _from_dlpack(obj)
        keep = (obj, cap)
    st = contiguous_strides(shape) if strides is None else strides
    lo, hi = span(shape, st, dt.itemsize)
    if hi == lo:
        raise NvbridgeError(errno.EINVAL, "nvbridge.Gpu.register_tensor", "an empty tensor has no memory")
    # negative strides: element 0 lies inside the range, -lo bytes from its start
    return register(gpu, ptr + lo, hi - lo, dt, shape, st, flags, dev, keep, offset=-lo)


# ---- publishing and importing ranges (nvbridge.tensor calls these) ----

def publish_range(gpu: "Gpu", buf: int, h: Handle, name: str, desc: TensorDesc,
                  access: Union[Access, int], uid: Optional[int], gid: Optional[int]) -> int:
    """Descriptor entry, then the memory through nvb_gpu_publish(); the
    memory entry's id.  Handle.unpublish(id) withdraws all of them."""
    acc = int(access)
    if acc in (Access.UID, Access.GID) or uid is not None or gid is not None:
        raise NvbridgeError(errno.EINVAL, "publish_tensor",
                            "a registered sub-range, multi-allocation or cudaMalloc range is published by "
                            "nvb_gpu_publish(), which takes OWNER, GROUP or SCOPE access only")
    did = h.publish(name + DESC_SUFFIX, blob=DESC_MAGIC + desc.pack(), access=acc)
    eid = ctypes.c_uint64()
    l = _lib.lib()
    try:
        h._call_gpu(lambda hp: l.nvb_gpu_publish(gpu._ptr, hp, name.encode(), buf, acc,
                                                 ctypes.byref(eid)), "nvb_gpu_publish")
    except BaseException:
        h.unpublish(did)
        raise
    h._gpu_pubs[eid.value] = (gpu, did, name)
    return int(eid.value)


def companion_desc(h: Handle, name: str, f: Fetched) -> Optional[TensorDesc]:
    """The descriptor published with the range f, or None when its
    publisher published none (a C program's nvb_gpu_publish())."""
    try:
        c = h.fetch(name + DESC_SUFFIX, expect_uid=f.entry.uid)
    except NvbridgeError as e:
        if e.errno in (errno.ENOENT, errno.ENAMETOOLONG, errno.EINVAL):
            return None
        raise
    with c:
        if c.entry.pid != f.entry.pid or c.entry.id > f.entry.id:
            raise NvbridgeError(errno.ESTALE, "import_tensor",
                                f"{name + DESC_SUFFIX!r} belongs to another publication of {name!r} "
                                "(republished meanwhile): import again")
        if not c.blob.startswith(DESC_MAGIC):
            raise NvbridgeError(errno.EBADMSG, "import_tensor", f"{name + DESC_SUFFIX!r} is not a descriptor")
        return parse(c.blob[len(DESC_MAGIC):])
