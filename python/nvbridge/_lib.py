# SPDX-License-Identifier: MIT
"""ctypes view of libnvbridge.so.1: library lookup, C structs, prototypes, errors.

The structs mirror <nvbridge.h> and <nvbridge_gpu.h>; their sizes are
checked against the header's published constants where the header has one
(NVB_EVENT_RECORD_SIZE is the wire record, not struct nvb_event, so the
check is on the layouts the Python side builds itself, in the tests).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import threading
from typing import Any, Callable, List, Optional

__all__ = ["NvbridgeError", "lib", "load", "check"]

NAME_MAX = 64

c_int = ctypes.c_int
c_u32 = ctypes.c_uint32
c_u64 = ctypes.c_uint64
c_i64 = ctypes.c_int64
c_size = ctypes.c_size_t
c_vp = ctypes.c_void_p
c_char_p = ctypes.c_char_p


class Opts(ctypes.Structure):
    _fields_ = [("sz", c_size), ("backend", c_u32), ("flags", c_u32),
                ("socket_path", c_char_p), ("device_path", c_char_p)]


class PublishOpts(ctypes.Structure):
    _fields_ = [("sz", c_size), ("access", c_u32), ("uid", c_u32),
                ("gid", c_u32), ("flags", c_u32)]


class CEntry(ctypes.Structure):
    _fields_ = [("id", c_u64), ("pid", c_u32), ("uid", c_u32), ("gid", c_u32),
                ("access", c_u32), ("flags", c_u32), ("blob_len", c_u32),
                ("name", ctypes.c_char * NAME_MAX)]


class FetchOpts(ctypes.Structure):
    _fields_ = [("sz", c_size), ("flags", c_u32), ("_pad", c_u32),
                ("timeout_ns", c_i64), ("expect_uid", c_u32), ("_pad2", c_u32)]


class CInfo(ctypes.Structure):
    _fields_ = [("sz", c_size), ("backend", c_u32), ("abi_version", c_u32),
                ("name_max", c_u32), ("max_blob_size", c_u32),
                ("max_entries_per_user", c_u32), ("max_events", c_u32),
                ("max_watches", c_u32), ("entries", c_u32),
                ("user_entries", c_u32), ("_pad", c_u32)]


class CEvent(ctypes.Structure):
    _fields_ = [("type", c_u32), ("reason", c_u32), ("seq", c_u64), ("id", c_u64),
                ("watch_id", c_u64), ("pid", c_u32), ("uid", c_u32), ("gid", c_u32),
                ("lost", c_u32), ("name", ctypes.c_char * NAME_MAX)]


class GpuOpts(ctypes.Structure):
    """struct nvb_gpu_opts (size_t sz first, as every options struct)."""
    _fields_ = [("sz", c_size), ("flags", c_u32), ("sm_ctas", c_u32), ("libcuda", c_char_p)]


GPU_OPEN_SM_YIELD = 1 << 0     # NVB_GPU_OPEN_SM_YIELD


class GpuImportOpts(ctypes.Structure):
    """struct nvb_gpu_import_opts."""
    _fields_ = [("sz", c_size), ("flags", c_u32), ("owner_uid", c_u32), ("timeout_ns", c_i64)]


GPU_IMPORT_OWNER_UID = 1 << 2
GPU_IMPORT_ANY_OWNER = 1 << 3


class GpuMeta(ctypes.Structure):
    """struct nvb_gpu_meta: the C GPU layer's metadata blob."""
    _fields_ = [("magic", c_u32), ("size", c_u32), ("alloc_size", c_u64),
                ("granularity", c_u64), ("handle_types", c_u32), ("flags", c_u32),
                ("uuid", ctypes.c_uint8 * 16), ("fabric", ctypes.c_uint8 * 64),
                ("owner_pid", c_u32), ("_reserved", c_u32)]


class GpuBlock(ctypes.Structure):
    _fields_ = [("dst", c_u64), ("src", c_u64), ("len", c_u64)]


GPU_META_MAGIC = 0x4E564247


class NvbridgeError(OSError):
    """A libnvbridge call failed.

    ``errno`` is the positive errno the C call returned (negated),
    ``strerror`` nvb_strerror()'s text, ``detail`` the library's own
    description of the failure (nvb_last_error() / nvb_gpu_last_error()),
    ``function`` the C function that failed.
    """

    def __init__(self, err: int, function: str, detail: str = "") -> None:
        text = strerror(err)
        if function.startswith("nvb_gpu_") and detail:
            # nvb_strerror() speaks of entries and backends; the GPU layer's
            # own description says what failed (a missing libcuda, a CUDA error)
            msg = f"{function}: {detail} ({os.strerror(err)})"
        else:
            msg = f"{function}: {text}" + (f" ({detail})" if detail and detail != text else "")
        super().__init__(err, msg)
        self.function = function
        self.detail = detail

    def __reduce__(self) -> Any:
        return (NvbridgeError, (self.errno, self.function, self.detail))


_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None


def _candidates() -> List[str]:
    env = os.environ.get("NVBRIDGE_LIB")
    if env:
        return [env]
    from ._paths import LIBDIR
    out = [os.path.join(LIBDIR, "libnvbridge.so.1")] if LIBDIR else []
    found = ctypes.util.find_library("nvbridge")
    if found:
        out.append(found)
    out.append("libnvbridge.so.1")
    for d in ("/usr/local/lib", "/usr/lib", "/usr/local/lib64", "/usr/lib64",
              "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"):
        out.append(os.path.join(d, "libnvbridge.so.1"))
    return out


def _proto(l: ctypes.CDLL, name: str, res: Any, *args: Any) -> None:
    f = getattr(l, name)
    f.restype = res
    f.argtypes = list(args)


def _declare(l: ctypes.CDLL) -> None:
    P = ctypes.POINTER
    _proto(l, "nvb_open", c_int, P(Opts), P(c_vp))
    _proto(l, "nvb_open_error", c_char_p)
    _proto(l, "nvb_close", None, c_vp)
    _proto(l, "nvb_backend", c_int, c_vp)
    _proto(l, "nvb_backend_name", c_char_p, c_int)
    _proto(l, "nvb_publish", c_int, c_vp, c_char_p, c_int, c_vp, c_size,
           P(PublishOpts), P(c_u64))
    _proto(l, "nvb_fetch", c_int, c_vp, c_char_p, P(FetchOpts), c_vp, c_size,
           P(CEntry), P(c_int))
    _proto(l, "nvb_unpublish", c_int, c_vp, c_u64, c_char_p)
    _proto(l, "nvb_watch", c_int, c_vp, c_char_p, c_u32, P(c_u64))
    _proto(l, "nvb_unwatch", c_int, c_vp, c_u64)
    _proto(l, "nvb_list", c_int, c_vp, P(c_u64), P(CEntry), ctypes.c_uint)
    _proto(l, "nvb_info", c_int, c_vp, P(CInfo))
    _proto(l, "nvb_event_read", c_int, c_vp, P(CEvent), ctypes.c_uint, c_i64)
    _proto(l, "nvb_event_fd", c_int, c_vp)
    _proto(l, "nvb_event_parse", c_int, c_vp, c_vp, c_int, P(CEvent), ctypes.c_uint)
    _proto(l, "nvb_strerror", c_char_p, c_int)
    _proto(l, "nvb_last_error", c_char_p, c_vp)
    # GPU layer (present in every build; fails at run time without libcuda)
    _proto(l, "nvb_gpu_open", c_int, P(GpuOpts), P(c_vp))
    _proto(l, "nvb_gpu_close", None, c_vp)
    _proto(l, "nvb_gpu_last_error", c_char_p)
    _proto(l, "nvb_gpu_device_count", c_int, c_vp)
    _proto(l, "nvb_gpu_set_device", c_int, c_vp, c_int)
    _proto(l, "nvb_gpu_driver_version", c_int, c_vp)
    _proto(l, "nvb_gpu_device_name", c_int, c_vp, c_int, c_char_p, c_size)
    _proto(l, "nvb_gpu_has_kernel", c_int, c_vp)
    _proto(l, "nvb_gpu_alloc", c_int, c_vp, c_int, c_size, c_u32, P(c_vp))
    _proto(l, "nvb_gpu_free", None, c_vp)
    _proto(l, "nvb_gpu_buf_ptr", c_u64, c_vp)
    _proto(l, "nvb_gpu_buf_size", c_size, c_vp)
    _proto(l, "nvb_gpu_buf_handle_types", c_u32, c_vp)
    _proto(l, "nvb_gpu_export", c_int, c_vp, P(c_int), P(GpuMeta))
    _proto(l, "nvb_gpu_import_fd", c_int, c_vp, c_u64, c_int, c_vp, c_size, c_u32, P(c_vp))
    _proto(l, "nvb_gpu_unmap", None, c_vp)
    _proto(l, "nvb_gpu_map_ptr", c_u64, c_vp)
    _proto(l, "nvb_gpu_map_size", c_size, c_vp)
    _proto(l, "nvb_gpu_map_id", c_u64, c_vp)
    _proto(l, "nvb_gpu_map_handle_type", c_u32, c_vp)
    _proto(l, "nvb_gpu_map_revoked", c_int, c_vp)
    _proto(l, "nvb_gpu_revoke", c_int, c_vp, c_u64)
    _proto(l, "nvb_gpu_cache_trim", c_int, c_vp)
    _proto(l, "nvb_gpu_copy", c_int, c_vp, c_u64, c_u64, c_size, P(c_vp), ctypes.c_uint, c_u32)
    _proto(l, "nvb_gpu_copy_blocks", c_int, c_vp, P(GpuBlock), c_size, c_vp, c_u32, c_u64, c_u32)
    _proto(l, "nvb_gpu_signal", c_int, c_vp, c_vp, c_u64, c_u32)
    _proto(l, "nvb_gpu_wait", c_int, c_vp, c_vp, c_u64, c_u32)
    _proto(l, "nvb_gpu_wait_abortable", c_int, c_vp, c_vp, c_u64, c_u32, c_vp)
    _proto(l, "nvb_gpu_mem_info", c_int, c_vp, P(c_size), P(c_size))
    _proto(l, "nvb_gpu_publish", c_int, c_vp, c_vp, c_char_p, c_vp, c_u32, P(c_u64))
    _proto(l, "nvb_gpu_import", c_int, c_vp, c_vp, c_char_p, c_i64, c_u32, P(c_vp))
    _proto(l, "nvb_gpu_import_with", c_int, c_vp, c_vp, c_char_p, P(GpuImportOpts), P(c_vp))
    # 1.2 (registration): absent from older libraries, whose users get ENOSYS
    if hasattr(l, "nvb_gpu_register"):
        _proto(l, "nvb_gpu_register", c_int, c_vp, c_u64, c_size, c_u32, P(c_vp))
        _proto(l, "nvb_gpu_buf_kind", c_u32, c_vp)
        _proto(l, "nvb_gpu_buf_chunks", c_u32, c_vp)
        _proto(l, "nvb_gpu_unpublish", c_int, c_vp, c_vp, c_u64)
    # 1.2 (the import cache keyed by registry): without them, ids of several
    # registries share one space (the import and revocation of older libraries)
    if hasattr(l, "nvb_gpu_import_fd_on"):
        _proto(l, "nvb_gpu_import_fd_on", c_int, c_vp, c_vp, c_u64, c_int, c_vp, c_size, c_u32, P(c_vp))
        _proto(l, "nvb_gpu_revoke_on", c_int, c_vp, c_vp, c_u64)


def load() -> ctypes.CDLL:
    """Loads libnvbridge.so.1 once: $NVBRIDGE_LIB, else the standard search."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        errors = []
        for c in _candidates():
            try:
                l = ctypes.CDLL(c, use_errno=False)
            except OSError as e:
                errors.append(str(e))
                continue
            _declare(l)
            _lib = l
            return l
        raise NvbridgeError(_errno.ENOENT, "load libnvbridge.so.1",
                            "; ".join(errors) + " (set NVBRIDGE_LIB to its path)")


def lib() -> ctypes.CDLL:
    return _lib if _lib is not None else load()


def strerror(err: int) -> str:
    """nvb_strerror()'s wording once the library is loaded, else the C library's."""
    s: Optional[bytes] = _lib.nvb_strerror(-abs(err)) if _lib is not None else None
    return s.decode(errors="replace") if s else os.strerror(abs(err))


def check(ret: int, function: str, detail: Callable[[], Optional[bytes]]) -> int:
    """Returns ret when >= 0, else raises NvbridgeError with detail()'s text."""
    if ret >= 0:
        return ret
    d = detail()
    raise NvbridgeError(-ret, function, d.decode(errors="replace") if d else "")
