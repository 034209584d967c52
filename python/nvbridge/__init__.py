# SPDX-License-Identifier: MIT
"""nvbridge: a credential-checked rendezvous for file descriptors and GPU
memory, over libnvbridge.so.1 (ctypes; no compiler, no dependency).

>>> import nvbridge
>>> with nvbridge.open() as h:                       # device or broker
...     t = nvbridge.empty((4, 8), "float32")       # sealed memfd
...     h.publish_tensor("job/kv", t, access=nvbridge.Access.SCOPE)
...     # another process: u = h.import_tensor("job/kv", wait=True)
...     #                   torch.from_dlpack(u)  (no copy)

GPU tensors: nvbridge.Gpu().empty(...) allocates exportable memory;
Gpu.register_tensor(t) shares memory the application already has (a torch
tensor, cupy, any CUDA DLPack object); nvbridge.mempool() /
use_torch_allocator() make PyTorch allocate exportable memory.

The library is found through $NVBRIDGE_LIB, else the dynamic linker's
search path.  Every failure raises NvbridgeError (an OSError) with the errno
and the library's own description of it.
"""
from __future__ import annotations

from ._lib import NvbridgeError
from .dlpack import DLDeviceType, DType, dtype, live_exports
from .meta import TensorDesc
from .rendezvous import (Access, Backend, Entry, Event, EventType, Fetched, Handle, Info,
                         RevokeReason, open)
from .tensor import SharedTensor, empty, import_tensor, publish_tensor
from .gpu import Gpu
from .segment import Batch, Segment, TransferEngine
from .torch_alloc import (AllocatorStats, allocator_path, allocator_stats, allocator_trim, mempool,
                          torch_allocator, use_torch_allocator)

__version__ = "1.2.0"


__all__ = ["NvbridgeError", "Access", "Backend", "Entry", "Event", "EventType", "Fetched",
           "Handle", "Info", "RevokeReason", "open", "SharedTensor", "TensorDesc", "empty",
           "import_tensor", "publish_tensor", "DLDeviceType", "DType", "dtype",
           "live_exports", "Gpu", "TransferEngine", "Segment", "Batch", "AllocatorStats",
           "allocator_path", "allocator_stats", "allocator_trim", "mempool", "torch_allocator",
           "use_torch_allocator", "__version__"]
