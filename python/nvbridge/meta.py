# SPDX-License-Identifier: MIT
"""The tensor descriptor that travels in an entry's blob ("NVBT", version 1).

python/README.md ("The descriptor") documents the format; this module is
its only implementation.  For GPU memory the C GPU layer's struct
nvb_gpu_meta comes first and the descriptor follows at meta.size (a
registered range's struct nvb_gpu_meta_range and its chunk records take its
place); a blob without a descriptor after the GPU metadata is a plain byte
buffer.

parse() treats the blob as hostile: every field is checked (EBADMSG), and
the caller checks with TensorDesc.fits() that the tensor lies inside the
memory it actually received.
"""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ._lib import GPU_META_MAGIC, GpuMeta, NvbridgeError
from .dlpack import DLDeviceType, DType, dtype_from_code

MAGIC = b"NVBT"
VERSION = 1
HEADER = struct.Struct("<4sHHBBBBIQQ")
MAX_NDIM = 32
FLAG_READONLY = 1
_GPU_META_MIN = GpuMeta.owner_pid.offset  # what nvb_gpu_import_fd() requires
RANGE_MAGIC = 0x4E564252  # "NVBR": a registered range (nvbridge.registered)


def _bad(why: str) -> NvbridgeError:
    return NvbridgeError(errno.EBADMSG, "nvbridge tensor metadata", why)


def contiguous_strides(shape: Sequence[int]) -> Tuple[int, ...]:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


def span(shape: Sequence[int], strides: Sequence[int], itemsize: int) -> Tuple[int, int]:
    """(lowest, highest + 1) byte offsets the elements touch, relative to
    element 0; (0, 0) for an empty tensor."""
    if any(n == 0 for n in shape):
        return 0, 0
    lo = hi = 0
    for n, s in zip(shape, strides):
        d = (n - 1) * s * itemsize
        if d < 0:
            lo += d
        else:
            hi += d
    return lo, hi + itemsize


@dataclass(frozen=True)
class TensorDesc:
    device_type: DLDeviceType
    dtype: DType
    shape: Tuple[int, ...]
    strides: Tuple[int, ...]   #: in elements
    offset: int = 0
    readonly: bool = False

    @property
    def extent(self) -> int:
        lo, hi = span(self.shape, self.strides, self.dtype.itemsize)
        return self.offset + hi if hi else self.offset

    def fits(self, size: int) -> None:
        """Raises EBADMSG unless every element lies inside size bytes."""
        lo, hi = span(self.shape, self.strides, self.dtype.itemsize)
        if self.offset + lo < 0 or self.offset + hi > size:
            raise _bad(f"tensor bytes [{self.offset + lo}, {self.offset + hi}) lie outside "
                       f"the {size} bytes of shared memory received")

    def pack(self) -> bytes:
        nd = len(self.shape)
        if nd > MAX_NDIM or len(self.strides) != nd:
            raise ValueError(f"ndim {nd} (max {MAX_NDIM}) or strides do not match shape")
        if any(n < 0 for n in self.shape):
            raise ValueError("negative dimension")
        hdr = HEADER.pack(MAGIC, VERSION, HEADER.size, int(self.device_type), self.dtype.code,
                          self.dtype.bits, nd, FLAG_READONLY if self.readonly else 0,
                          self.offset, self.extent)
        return hdr + struct.pack(f"<{2 * nd}q", *self.shape, *self.strides)


def parse(blob: bytes) -> TensorDesc:
    """Decodes a descriptor (the whole of blob); EBADMSG on anything off."""
    if len(blob) < HEADER.size:
        raise _bad(f"{len(blob)} bytes, need at least {HEADER.size}")
    magic, ver, hlen, dev, code, bits, nd, flags, off, extent = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise _bad(f"magic {magic!r} is not {MAGIC!r}")
    if ver != VERSION:
        raise _bad(f"version {ver} (this package reads {VERSION})")
    if hlen != HEADER.size:
        raise _bad(f"header length {hlen} (version 1 has {HEADER.size})")
    if nd > MAX_NDIM:
        raise _bad(f"ndim {nd} > {MAX_NDIM}")
    if len(blob) != HEADER.size + 16 * nd:
        raise _bad(f"{len(blob)} bytes for ndim {nd} (need {HEADER.size + 16 * nd})")
    if flags & ~FLAG_READONLY:
        raise _bad(f"unknown flags {flags:#x}")
    try:
        devt = DLDeviceType(dev)
        dt = dtype_from_code(code, bits)
    except ValueError as e:
        raise _bad(str(e)) from None
    if devt not in (DLDeviceType.CPU, DLDeviceType.CUDA):
        raise _bad(f"device type {dev}")
    vals = struct.unpack_from(f"<{2 * nd}q", blob, HEADER.size)
    shape, strides = vals[:nd], vals[nd:]
    if any(n < 0 for n in shape):
        raise _bad(f"negative dimension in shape {shape}")
    d = TensorDesc(devt, dt, tuple(shape), tuple(strides), off, bool(flags & FLAG_READONLY))
    if d.extent != extent:
        raise _bad(f"extent {extent} does not match shape/strides/offset ({d.extent})")
    return d


def split_blob(blob: bytes) -> Tuple[Optional[bytes], Optional[TensorDesc]]:
    """(GPU metadata or None, descriptor or None) of an entry's blob."""
    if blob[:4] == MAGIC:
        return None, parse(blob)
    if len(blob) >= 8:
        magic, size = struct.unpack_from("<II", blob)
        if magic == RANGE_MAGIC:  # a registered range (nvb_gpu_meta_range + chunks)
            from .registered import range_meta_len
            n = range_meta_len(blob)
            rest = blob[n:]
            return blob[:n], (parse(rest) if rest else None)
        if magic == GPU_META_MAGIC:
            if size < _GPU_META_MIN or size > len(blob):
                raise _bad(f"GPU metadata size {size} (blob {len(blob)} bytes)")
            rest = blob[size:]
            return blob[:size], (parse(rest) if rest else None)
    raise _bad("blob holds neither an nvbridge tensor descriptor nor GPU metadata")
