# SPDX-License-Identifier: MIT
"""What the KV-cache producer and consumer share: options, the memory choice
(GPU when one is usable, else host memory) and the expected contents."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Tuple

import nvbridge

try:
    import numpy
except ImportError:
    sys.exit("this example needs numpy (Debian: python3-numpy)")


def options(what: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=what)
    p.add_argument("--name", default="example/kv", help="entry name (default example/kv)")
    p.add_argument("--shape", default="4,16,16,8,64",
                   help="layers,blocks,tokens,heads,dim (default 4,16,16,8,64)")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--device", choices=("auto", "gpu", "cpu"), default="auto")
    p.add_argument("--access", choices=("owner", "group", "scope"), default="scope")
    p.add_argument("--memory", choices=("alloc", "pool", "process"), default="alloc",
                   help="producer, GPU: nvb_gpu_alloc (default), a torch tensor from "
                   "nvbridge.mempool(), or from nvbridge.use_torch_allocator(); the torch "
                   "tensors are shared with Gpu.register_tensor")
    p.add_argument("--expect-uid", type=int, default=None,
                   help="consumer: accept the cache only from this publisher euid")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--socket", default=None, help="broker socket (default: NVBRIDGE_SOCKET)")
    a = p.parse_args()
    a.shape = tuple(int(x) for x in a.shape.split(","))
    return a


def choose(device: str) -> Tuple[Optional[Any], Optional[Any], str]:
    """(nvbridge.Gpu or None, torch or None, a sentence saying which memory)."""
    if device == "cpu":
        return None, None, "host memory (a sealed memfd): --device cpu"
    try:
        g = nvbridge.Gpu()  # first: it fails fast where there is no libcuda
        import torch
        if not torch.cuda.is_available():
            g.close()
            raise RuntimeError("torch sees no CUDA device")
        return g, torch, f"GPU memory (nvb_gpu_alloc) on {g.device_name(0)}"
    except Exception as e:  # noqa: BLE001 (any reason means: no usable GPU path)
        if device == "gpu":
            sys.exit(f"--device gpu: {e}")
        return None, None, f"host memory (a sealed memfd): no GPU path here ({e})"


def expected(shape: Tuple[int, ...], seed: int) -> "numpy.ndarray":
    return numpy.random.default_rng(seed).standard_normal(shape, dtype=numpy.float32)


def view(t: nvbridge.SharedTensor, torch: Optional[Any]) -> Any:
    """A writable numpy (host) or torch (GPU) view of t, no copy."""
    return torch.from_dlpack(t) if t.is_cuda else numpy.asarray(t)


def equal(v: Any, want: "numpy.ndarray", torch: Optional[Any]) -> bool:
    if torch is not None and isinstance(v, torch.Tensor):
        torch.cuda.synchronize()
        return bool(torch.equal(v.cpu(), torch.from_numpy(want)))
    return bool(numpy.array_equal(v, want))


def store(v: Any, src: "numpy.ndarray", torch: Optional[Any]) -> None:
    if torch is not None and isinstance(v, torch.Tensor):
        v.copy_(torch.from_numpy(src))
        torch.cuda.synchronize()
    else:
        v[...] = src


def gpu_tensor(gpu: Any, torch: Any, shape: Tuple[int, ...], memory: str) -> Tuple[nvbridge.SharedTensor, Any]:
    """(the shared tensor, what must stay alive with it) for --memory."""
    if memory == "alloc":
        return gpu.empty(shape, "float32"), None
    if memory == "process":
        nvbridge.use_torch_allocator()  # before this process's first CUDA tensor
        kv, pool = torch.empty(shape, dtype=torch.float32, device="cuda"), None
    else:
        pool = nvbridge.mempool()  # only the KV cache in exportable memory
        with torch.cuda.use_mem_pool(pool):
            kv = torch.empty(shape, dtype=torch.float32, device="cuda")
    return gpu.register_tensor(kv), (kv, pool)
