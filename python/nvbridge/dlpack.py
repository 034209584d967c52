# SPDX-License-Identifier: MIT
"""DLPack capsules built with ctypes, and the dtype table.

A capsule holds a DLManagedTensor (or, for consumers that ask with
max_version >= (1, 0), a DLManagedTensorVersioned) whose manager_ctx is a
key into ``_live``: the entry keeps the exporting object (and with it the
mapping) and the C structs alive until the consumer calls the deleter.  The
deleter removes the entry, so it frees exactly once; a capsule nobody
consumed is deleted by its destructor.
"""
from __future__ import annotations

import ctypes
import enum
import itertools
import threading
from typing import Any, Dict, Optional, Sequence, Tuple

__all__ = ["DLDeviceType", "DType", "dtype", "export_capsule", "live_exports"]


class DLDeviceType(enum.IntEnum):
    CPU = 1
    CUDA = 2
    CUDA_HOST = 3


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                             ("deleter", _Deleter)]


class _DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", _DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", _Deleter), ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


DLPACK_FLAG_READ_ONLY = 1
_CODE_INT, _CODE_UINT, _CODE_FLOAT, _CODE_BFLOAT, _CODE_COMPLEX, _CODE_BOOL = 0, 1, 2, 4, 5, 6


class DType:
    """An element type: name, DLPack (code, bits) and the array-interface typestr."""
    __slots__ = ("name", "code", "bits", "typestr")

    def __init__(self, name: str, code: int, bits: int, typestr: str) -> None:
        self.name, self.code, self.bits, self.typestr = name, code, bits, typestr

    @property
    def itemsize(self) -> int:
        return self.bits // 8

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DType) and (self.code, self.bits) == (other.code, other.bits)

    def __hash__(self) -> int:
        return hash((self.code, self.bits))

    def __repr__(self) -> str:
        return f"nvbridge.dtype({self.name!r})"


_DTYPES = [DType(n, c, b, t) for n, c, b, t in (
    ("bool", _CODE_BOOL, 8, "|b1"),
    ("int8", _CODE_INT, 8, "|i1"), ("int16", _CODE_INT, 16, "<i2"),
    ("int32", _CODE_INT, 32, "<i4"), ("int64", _CODE_INT, 64, "<i8"),
    ("uint8", _CODE_UINT, 8, "|u1"), ("uint16", _CODE_UINT, 16, "<u2"),
    ("uint32", _CODE_UINT, 32, "<u4"), ("uint64", _CODE_UINT, 64, "<u8"),
    ("float16", _CODE_FLOAT, 16, "<f2"), ("float32", _CODE_FLOAT, 32, "<f4"),
    ("float64", _CODE_FLOAT, 64, "<f8"), ("bfloat16", _CODE_BFLOAT, 16, "<V2"),
    ("complex64", _CODE_COMPLEX, 64, "<c8"), ("complex128", _CODE_COMPLEX, 128, "<c16"),
)]
_BY_NAME: Dict[str, DType] = {d.name: d for d in _DTYPES}
_BY_NAME.update({"half": _BY_NAME["float16"], "float": _BY_NAME["float32"],
                 "double": _BY_NAME["float64"], "long": _BY_NAME["int64"],
                 "int": _BY_NAME["int32"], "short": _BY_NAME["int16"]})
_BY_CODE: Dict[Tuple[int, int], DType] = {(d.code, d.bits): d for d in _DTYPES}


def dtype(x: Any) -> DType:
    """A DType from a name ("float32"), a numpy dtype or a torch dtype."""
    if isinstance(x, DType):
        return x
    name = getattr(x, "name", None) if not isinstance(x, str) else x
    if not isinstance(name, str):
        name = str(x)
    name = name.replace("torch.", "")
    try:
        return _BY_NAME[name]
    except KeyError:
        raise TypeError(f"unsupported dtype {x!r}") from None


def dtype_from_code(code: int, bits: int) -> DType:
    try:
        return _BY_CODE[(code, bits)]
    except KeyError:
        raise ValueError(f"unsupported DLPack dtype code {code} bits {bits}") from None


# ---- capsules ----
# Private prototypes: the function objects of ctypes.pythonapi are shared by
# the whole process, and another module setting their argtypes must not
# change what these calls do.
_CapsuleDestructor = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_PyCapsule_New = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p,
                                   _CapsuleDestructor)(("PyCapsule_New", ctypes.pythonapi))
_PyCapsule_IsValid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", ctypes.pythonapi))
_PyCapsule_GetPointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))

# The capsule keeps a pointer to its name: these bytes objects live as long as the module.
_NAME = b"dltensor"
_NAME_V = b"dltensor_versioned"

_live: Dict[int, Tuple[Any, ...]] = {}
_live_lock = threading.Lock()
_keys = itertools.count(1)
deleter_calls = 0  # how many exports were released (tests: each exactly once)


def peek_capsule(cap: Any) -> _DLTensor:
    """The DLTensor inside an unconsumed "dltensor" capsule (not copied: valid
    while the capsule lives; the capsule keeps its producer's memory)."""
    p = _PyCapsule_GetPointer(id(cap), _NAME) if _PyCapsule_IsValid(id(cap), _NAME) else None
    if not p:
        raise TypeError("not an unconsumed DLPack capsule (\"dltensor\")")
    t: _DLTensor = _DLManagedTensor.from_address(p).dl_tensor
    return t


def live_exports() -> int:
    """Capsules handed out and not yet released by their consumers."""
    return len(_live)


def _release(key: Optional[int]) -> None:
    global deleter_calls
    if not key:
        return
    with _live_lock:
        held = _live.pop(key, None)
        if held is not None:
            deleter_calls += 1
    if held is not None:
        done = held[0]
        if done is not None:
            done()


def _read_ctx(ptr: Optional[int], versioned: bool) -> Optional[int]:
    if not ptr:
        return None
    m: Any = (_DLManagedTensorVersioned if versioned else _DLManagedTensor).from_address(ptr)
    return int(m.manager_ctx) if m.manager_ctx else None


def _deleter_py(ptr: Optional[int]) -> None:
    _release(_read_ctx(ptr, False))


def _deleter_v_py(ptr: Optional[int]) -> None:
    _release(_read_ctx(ptr, True))


def _capsule_destructor_py(cap: int) -> None:
    # Consumed capsules are renamed "used_dltensor[_versioned]": their deleter is the consumer's job.
    for name, versioned in ((_NAME, False), (_NAME_V, True)):
        if _PyCapsule_IsValid(cap, name):
            _release(_read_ctx(_PyCapsule_GetPointer(cap, name), versioned))
            return


# C callables, alive as long as the module (a consumer may call a deleter at any time)
_deleter = _Deleter(_deleter_py)
_deleter_v = _Deleter(_deleter_v_py)
_capsule_destructor = _CapsuleDestructor(_capsule_destructor_py)


def export_capsule(owner: Any, data: int, device: Tuple[int, int], dt: DType,
                   shape: Sequence[int], strides: Sequence[int], versioned: bool,
                   readonly: bool, on_release: Optional[Any] = None) -> Any:
    """A DLPack capsule for memory at data (strides in elements).  owner stays
    referenced until the consumer's deleter (or the unconsumed capsule's
    destructor) runs; then on_release() is called once."""
    nd = len(shape)
    shp = (ctypes.c_int64 * max(nd, 1))(*shape)
    std = (ctypes.c_int64 * max(nd, 1))(*strides)
    key = next(_keys)
    t = _DLTensor(data, _DLDevice(device[0], device[1]), nd, _DLDataType(dt.code, dt.bits, 1),
                  ctypes.cast(shp, ctypes.POINTER(ctypes.c_int64)),
                  ctypes.cast(std, ctypes.POINTER(ctypes.c_int64)), 0)
    if versioned:
        m: Any = _DLManagedTensorVersioned(_DLPackVersion(1, 0), key, _deleter_v,
                                           DLPACK_FLAG_READ_ONLY if readonly else 0, t)
    else:
        m = _DLManagedTensor(t, key, _deleter)
    with _live_lock:
        _live[key] = (on_release, owner, m, shp, std)
    return _PyCapsule_New(ctypes.addressof(m), _NAME_V if versioned else _NAME,
                                _capsule_destructor)
