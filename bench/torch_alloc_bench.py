#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Allocation + free of repeated sizes: nvbridge's PyTorch allocator
(libnvbridge_torch.so) against PyTorch's default caching allocator, on one
GPU, in the same run.  Not a test: a measurement for the GPU host
(make torch-alloc-bench).  Each mode runs in a fresh process, since the
whole-process allocator must be chosen before the first CUDA allocation:

  default     PyTorch's CUDACachingAllocator
  floor       a CUDAPluggableAllocator that does the least (bench/floor_alloc.c:
              a mutex and a per-size LIFO, cuMemAlloc on a miss): what PyTorch's
              pluggable interface costs by itself, for every allocator behind it
  nvbridge    nvbridge.use_torch_allocator() (every tensor from libnvbridge_torch.so)
  mempool     PyTorch's allocator, tensors made under torch.cuda.use_mem_pool(nvbridge.mempool())
  floor-pool  the same with a MemPool over the floor allocator: what the MemPool
              mechanism costs by itself
  expandable  PyTorch's allocator with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True:
              VMM memory that Gpu.register_tensor shares with no nvbridge allocator
              (test_torch_alloc_gpu.py's test_expandable_segments)

For every size: a warm-up allocation (the first one reaches the driver:
reported as "first"), then N rounds of torch.empty + del, timed with
perf_counter_ns; the median of R repetitions is reported in microseconds
per alloc+free.  Ratios: nvbridge / default (the issue's bound is 1.2),
nvbridge / floor (what nvbridge adds to the interface's own cost), mempool /
default, mempool / floor-pool and expandable / default.  --json writes every number.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIZES = [4 << 10, 1 << 20, 2 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30]

CHILD = r"""
import json, statistics, sys, time, torch
mode, sizes, n, reps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
floor_so = sys.argv[5]
pool = None
if mode == "nvbridge":
    import nvbridge
    nvbridge.use_torch_allocator()
elif mode == "mempool":
    import nvbridge
    pool = nvbridge.mempool()
elif mode in ("floor", "floor-pool"):
    fa = torch.cuda.memory.CUDAPluggableAllocator(floor_so, "floor_malloc", "floor_free")
    if mode == "floor":
        torch.cuda.memory.change_current_allocator(fa)
    else:
        pool = torch.cuda.MemPool(fa.allocator())
torch.cuda.set_device(0)
torch.cuda.synchronize()
out = {"mode": mode, "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
       "sizes": {}}
ctx = torch.cuda.use_mem_pool(pool) if pool is not None else None
if ctx is not None:
    ctx.__enter__()
for size in sizes:
    t0 = time.perf_counter_ns()
    x = torch.empty(size, dtype=torch.uint8, device="cuda")
    first = (time.perf_counter_ns() - t0) / 1e3
    del x
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            x = torch.empty(size, dtype=torch.uint8, device="cuda")
            del x
        runs.append((time.perf_counter_ns() - t0) / n / 1e3)
    out["sizes"][str(size)] = {"first_us": first, "median_us": statistics.median(runs),
                               "min_us": min(runs)}
if ctx is not None:
    ctx.__exit__(None, None, None)
torch.cuda.synchronize()
if mode in ("nvbridge", "mempool"):
    import nvbridge
    s = nvbridge.allocator_stats()
    out["stats"] = {"mallocs": s.mallocs, "hits": s.hits, "cuda_allocs": s.cuda_allocs}
print("JSON " + json.dumps(out), flush=True)
"""


MODES = ("default", "floor", "nvbridge", "mempool", "floor-pool", "expandable")


def run(mode: str, sizes: list, n: int, reps: int, floor_so: str) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    if mode == "expandable":
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    else:
        env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(os.path.dirname(here), "python")] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    p = subprocess.run([sys.executable, "-c", CHILD, mode, json.dumps(sizes), str(n), str(reps),
                        floor_so],
                       env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    for line in p.stdout.splitlines():
        if line.startswith("JSON "):
            return json.loads(line[5:])
    raise SystemExit(f"{mode}: no result (exit {p.returncode}):\n{p.stdout}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="alloc+free per repetition")
    ap.add_argument("-r", "--reps", type=int, default=7, help="repetitions (median reported)")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=SIZES)
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--floor", help="the floor allocator (default: build/bench/libnvb_floor_alloc.so "
                    "of this tree, or NVB_FLOOR_ALLOC)")
    a = ap.parse_args()
    try:
        import torch  # this process only looks: the modes run in children
        if not torch.cuda.is_available():
            raise ImportError("torch sees no CUDA device")
    except ImportError as e:
        print(f"torch_alloc_bench: nothing to measure here ({e})", file=sys.stderr)
        return 2
    floor_so = a.floor or os.environ.get("NVB_FLOOR_ALLOC") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "bench",
        "libnvb_floor_alloc.so")
    if not os.path.exists(floor_so):
        print(f"torch_alloc_bench: {floor_so} missing (make torch-alloc-bench builds it)",
              file=sys.stderr)
        return 2
    res = {m: run(m, a.sizes, a.n, a.reps, floor_so) for m in MODES}
    d = res["default"]
    print(f"{d['device']}, torch {d['torch']}, {time.strftime('%Y-%m-%d %H:%M %Z')}; "
          f"us per alloc+free, median of {a.reps} x {a.n}")
    print(f"{'size':>12} {'default':>8} {'floor':>8} {'nvbridge':>8} {'mempool':>8} "
          f"{'fl-pool':>8} {'expand':>8} {'nvb first':>9} {'nvb/def':>8} {'nvb/fl':>7} "
          f"{'pool/def':>8} {'pool/flp':>8} {'exp/def':>8}")
    worst = worst_pool = worst_floor = 0.0
    for size in a.sizes:
        k = str(size)
        v = {m: res[m]["sizes"][k]["median_us"] for m in MODES}

        def ratio(x: float, y: float) -> float:
            return x / y if y else float("inf")
        r = (ratio(v["nvbridge"], v["default"]), ratio(v["nvbridge"], v["floor"]),
             ratio(v["mempool"], v["default"]), ratio(v["mempool"], v["floor-pool"]),
             ratio(v["expandable"], v["default"]))
        worst, worst_floor, worst_pool = max(worst, r[0]), max(worst_floor, r[1]), max(worst_pool, r[2])
        print(f"{size:>12} " + " ".join(f"{v[m]:>8.2f}" for m in MODES) +
              f" {res['nvbridge']['sizes'][k]['first_us']:>9.1f} " +
              " ".join(f"{x:>{w}.2f}" for x, w in zip(r, (8, 7, 8, 8, 8))))
    print(f"worst nvbridge/default: {worst:.2f} (bound 1.20); nvbridge/floor: {worst_floor:.2f}; "
          f"mempool/default: {worst_pool:.2f}; allocator: {res['nvbridge'].get('stats')}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
