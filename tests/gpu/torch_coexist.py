#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""
With nvbridge GPU objects alive in a PyTorch process (a handle, a buffer, a
proxy that served puts and holds a wait nobody satisfies), the application's
torch.cuda.synchronize() and torch.cuda.empty_cache() must return: each
within a bound while a bf16 GEMM loop runs.  --persistent uses
NVB_GPU_PROXY_PERSISTENT instead; that must NOT return (the parent runs it
with a deadline and expects the kill: the check can fail).

Usage: torch_coexist.py LIBNVBRIDGE_SO [--persistent]
Prints "ok NAME" / "FAIL NAME: why" lines; exit 0 when all passed.
"""
import ctypes
import os
import subprocess
import sys
import time

BOUND_S = 1.0


class Put(ctypes.Structure):
    _fields_ = [("dst", ctypes.c_uint64), ("src", ctypes.c_uint64), ("len", ctypes.c_uint64),
                ("flag", ctypes.c_uint64), ("flag_val", ctypes.c_uint32),
                ("wait_val", ctypes.c_uint32), ("wait_flag", ctypes.c_uint64),
                ("wait_peer", ctypes.c_void_p)]


def child(lib_path, persistent):
    import torch
    lib = ctypes.CDLL(lib_path)
    lib.nvb_gpu_last_error.restype = ctypes.c_char_p
    lib.nvb_gpu_buf_ptr.restype = ctypes.c_uint64
    lib.nvb_gpu_buf_ptr.argtypes = [ctypes.c_void_p]
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    g, b, p = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()

    def ck(rc, what):
        if rc != 0:
            raise SystemExit(f"FAIL setup: {what}: {rc} {lib.nvb_gpu_last_error().decode()}")
    ck(lib.nvb_gpu_open(None, ctypes.byref(g)), "nvb_gpu_open")
    ck(lib.nvb_gpu_set_device(g, 0), "nvb_gpu_set_device")
    ck(lib.nvb_gpu_alloc(g, 0, ctypes.c_size_t(64 << 20), 0, ctypes.byref(b)), "nvb_gpu_alloc")
    base = lib.nvb_gpu_buf_ptr(b)
    flags = (1 << 16) if persistent else 0
    ck(lib.nvb_gpu_proxy_start(g, 0, 0, ctypes.c_uint32(flags), ctypes.byref(p)), "proxy_start")
    torch.cuda.synchronize()
    for i in range(64):
        ck(lib.nvb_gpu_proxy_put(p, ctypes.c_uint64(base + (32 << 20) + i * 65536),
                                 ctypes.c_uint64(base + (1 << 20)), ctypes.c_size_t(65536),
                                 ctypes.c_uint64(base + 64), ctypes.c_uint32(i + 1)), "proxy_put")
    ck(lib.nvb_gpu_proxy_sync(p, ctypes.c_uint64(0), ctypes.c_int64(10_000_000_000)), "proxy_sync")
    op = Put(dst=base + (16 << 20), src=base + (1 << 20), len=4096, wait_flag=base + 128,
             wait_val=1)
    ck(lib.nvb_gpu_proxy_post(p, ctypes.byref(op), None), "proxy_post (a wait never satisfied)")
    print("P posted", flush=True)   # the parent's deadline check counts only from here
    for _ in range(20):
        z = x @ y
    t0 = time.monotonic()
    torch.cuda.synchronize()
    t_sync = time.monotonic() - t0
    del z
    t0 = time.monotonic()
    torch.cuda.empty_cache()
    t_empty = time.monotonic() - t0
    print(f"R {t_sync * 1e3:.3f} {t_empty * 1e3:.3f}", flush=True)
    lib.nvb_gpu_proxy_stop(p, ctypes.c_int64(5_000_000_000))
    lib.nvb_gpu_free(b)
    lib.nvb_gpu_close(g)


def text(b):
    return (b or b"").decode() if isinstance(b, bytes) else (b or "")


def run(lib_path, persistent, deadline):
    """(the R line's two times or None, the child's output, whether the
    child was killed at the deadline after it had posted the wait)."""
    args = [sys.executable, __file__, lib_path, "--child"] + (["--persistent"] if persistent else [])
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=deadline)
        out = p.stdout + p.stderr   # a child that failed says why on stderr
    except subprocess.TimeoutExpired as e:
        out = text(e.stdout) + text(e.stderr)
        return None, out, "P posted" in out
    for line in out.splitlines():
        if line.startswith("R "):
            return tuple(float(v) for v in line.split()[1:3]), out, False
    return None, out, False


def why(out):
    """The child's last lines (a traceback's last line says what failed)."""
    return " | ".join(out.strip().splitlines()[-2:])[-300:]


def main():
    lib_path = sys.argv[1]
    if "--child" in sys.argv:
        child(lib_path, "--persistent" in sys.argv)
        return 0
    fails = 0
    r, out, _ = run(lib_path, False, 60)
    ok = r is not None and r[0] < BOUND_S * 1e3 and r[1] < BOUND_S * 1e3
    print(("ok   " if ok else "FAIL ") + "torch_synchronize_and_empty_cache_return"
          + (f" (synchronize {r[0]:.3f} ms, empty_cache {r[1]:.3f} ms)" if r else f": {why(out)}"))
    fails += not ok
    # passes only when the child got as far as the posted wait and then
    # hung there until killed: a child that failed earlier proves nothing
    r, out, killed = run(lib_path, True, 20)
    ok = killed
    print(("ok   " if ok else "FAIL ") + "torch_deadline_catches_persistent_proxy"
          + ("" if ok else f": returned {r}" if r else f": not killed at the wait: {why(out)}"))
    fails += not ok
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
