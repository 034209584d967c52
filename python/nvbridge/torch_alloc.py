# SPDX-License-Identifier: MIT
"""nvbridge's PyTorch allocator (libnvbridge_torch.so): exportable CUDA VMM
memory for the tensors of a whole process or of one ``torch.cuda.MemPool``,
so that Gpu.register_tensor() can share any of them.  torch is imported
only when a function here needs it.

>>> import torch, nvbridge
>>> pool = nvbridge.mempool()                    # only the KV cache in it
>>> with torch.cuda.use_mem_pool(pool):
...     kv = torch.empty((layers, 2, blocks, 16, heads, dim), device="cuda")
>>> t = nvbridge.Gpu().register_tensor(kv)       # then h.publish_tensor(...)

or, for every CUDA tensor of the process (before the first allocation):

>>> nvbridge.use_torch_allocator()
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading
from dataclasses import dataclass, fields
from typing import Any, Optional

from . import _lib
from ._lib import NvbridgeError

__all__ = ["allocator_path", "torch_allocator", "use_torch_allocator", "mempool",
           "AllocatorStats", "allocator_stats", "allocator_trim"]

LIBNAME = "libnvbridge_torch.so"
MALLOC, FREE = "nvb_torch_malloc", "nvb_torch_free"

_lock = threading.Lock()
_alloc: Any = None
_clib: Optional[ctypes.CDLL] = None


def allocator_path() -> str:
    """Where the allocator library is: $NVBRIDGE_TORCH_ALLOC, else beside
    the libnvbridge.so.1 this package loaded (make install puts it there),
    else the installed LIBDIR."""
    env = os.environ.get("NVBRIDGE_TORCH_ALLOC")
    if env:
        return env
    try:
        info = _DlInfo()
        libc = ctypes.CDLL(None)
        addr = ctypes.cast(_lib.lib().nvb_open, ctypes.c_void_p).value
        if libc.dladdr(ctypes.c_void_p(addr), ctypes.byref(info)) and info.dli_fname:
            cand = os.path.join(os.path.dirname(os.fsdecode(info.dli_fname)), LIBNAME)
            if os.path.exists(cand):
                return cand
    except (NvbridgeError, OSError, AttributeError):
        pass
    from ._paths import LIBDIR
    if LIBDIR:
        return os.path.join(LIBDIR, LIBNAME)
    raise NvbridgeError(errno.ENOENT, "nvbridge.allocator_path",
                        f"{LIBNAME} is neither beside libnvbridge.so.1 nor installed "
                        "(set NVBRIDGE_TORCH_ALLOC to its path)")


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def torch_allocator() -> Any:
    """The process's ``torch.cuda.memory.CUDAPluggableAllocator`` over
    libnvbridge_torch.so (one per process: PyTorch ties the library's
    entry points to it)."""
    global _alloc
    with _lock:
        if _alloc is None:
            import torch  # only here: nvbridge does not need torch otherwise
            # getattr: older torch (and its type stubs) lack it
            _alloc = getattr(torch.cuda.memory, "CUDAPluggableAllocator")(allocator_path(), MALLOC, FREE)
        return _alloc


def use_torch_allocator() -> Any:
    """Makes every CUDA tensor of this process come from nvbridge's
    allocator.  PyTorch allows that only before its first CUDA allocation
    (RuntimeError otherwise).  Returns the allocator."""
    import torch
    a = torch_allocator()
    getattr(torch.cuda.memory, "change_current_allocator")(a)
    return a


def mempool() -> Any:
    """A ``torch.cuda.MemPool`` whose segments come from nvbridge's
    allocator: tensors made under ``torch.cuda.use_mem_pool(pool)`` are
    exportable, the rest of the process keeps PyTorch's allocator.
    PyTorch's caching allocator runs on top (tensors are sub-ranges of the
    pool's segments, which register_tensor() handles) and reuses a freed
    tensor's memory within its segment: an importer of a registered pool
    tensor maps the whole segment, later tensors in it included, so share
    with untrusted processes only from a pool of its own (nvbridge-torch-alloc(3))."""
    import torch
    return getattr(torch.cuda, "MemPool")(torch_allocator().allocator())


@dataclass(frozen=True)
class AllocatorStats:
    """struct nvb_torch_stats (see nvbridge-torch-alloc(3))."""
    mallocs: int
    frees: int
    hits: int
    cuda_allocs: int
    cuda_frees: int
    failures: int
    bad_frees: int
    live_bytes: int
    cached_bytes: int
    cache_limit: int
    live_blocks: int
    cached_blocks: int
    exported_releases: int = 0  #: blocks released, not cached: they were shared (libnvbridge_torch 1.2)


class _CStats(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t)] + [(f.name, ctypes.c_uint64) for f in fields(AllocatorStats)]


def _c() -> ctypes.CDLL:
    """The allocator library (the same instance torch loaded: same path)."""
    global _clib
    with _lock:
        if _clib is None:
            l = ctypes.CDLL(allocator_path())
            l.nvb_torch_stats.restype = ctypes.c_int
            l.nvb_torch_stats.argtypes = [ctypes.POINTER(_CStats)]
            l.nvb_torch_trim.restype = ctypes.c_size_t
            l.nvb_torch_trim.argtypes = [ctypes.c_int, ctypes.c_size_t]
            l.nvb_torch_last_error.restype = ctypes.c_char_p
            l.nvb_torch_malloc.restype = ctypes.c_void_p
            l.nvb_torch_malloc.argtypes = [ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]
            l.nvb_torch_free.restype = None
            l.nvb_torch_free.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]
            _clib = l
        return _clib


def allocator_stats() -> AllocatorStats:
    """Counters of this process's allocator (calls, cache hits, bytes)."""
    s = _CStats(ctypes.sizeof(_CStats))
    ret = _c().nvb_torch_stats(ctypes.byref(s))
    if ret < 0:
        raise NvbridgeError(-ret, "nvb_torch_stats")
    return AllocatorStats(**{f.name: int(getattr(s, f.name)) for f in fields(AllocatorStats)})


def allocator_trim(device: int = -1, keep: int = 0) -> int:
    """Releases cached blocks (of ``device``; -1: all) until at most ``keep``
    bytes stay cached, after the device's work completed; the bytes
    released.  ``torch.cuda.empty_cache()`` does not reach this cache."""
    return int(_c().nvb_torch_trim(device, keep))


def last_error() -> str:
    """Why this thread's last allocation failed (nvb_torch_last_error)."""
    s: Optional[bytes] = _c().nvb_torch_last_error()
    return s.decode(errors="replace") if s else ""
