#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Allocation + free of repeated sizes: nvbridge's PyTorch allocator
(libnvbridge_torch.so) against PyTorch's default caching allocator, on one
GPU, in the same run.  Not a test: a measurement for the GPU host
(make torch-alloc-bench).  Each mode runs in a fresh process, since the
whole-process allocator must be chosen before the first CUDA allocation:

  default   PyTorch's CUDACachingAllocator
  nvbridge  nvbridge.use_torch_allocator() (every tensor from libnvbridge_torch.so)
  mempool   PyTorch's allocator, tensors made under torch.cuda.use_mem_pool(nvbridge.mempool())

For every size: a warm-up allocation (the first one reaches the driver:
reported as "first"), then N rounds of torch.empty + del, timed with
perf_counter_ns; the median of R repetitions is reported in microseconds
per alloc+free.  The last column is nvbridge / default (the issue's bound is
1.2).  --json writes every number.
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
pool = None
if mode == "nvbridge":
    import nvbridge
    nvbridge.use_torch_allocator()
elif mode == "mempool":
    import nvbridge
    pool = nvbridge.mempool()
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
if mode != "default":
    import nvbridge
    s = nvbridge.allocator_stats()
    out["stats"] = {"mallocs": s.mallocs, "hits": s.hits, "cuda_allocs": s.cuda_allocs}
print("JSON " + json.dumps(out), flush=True)
"""


def run(mode: str, sizes: list, n: int, reps: int) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(os.path.dirname(here), "python")] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    p = subprocess.run([sys.executable, "-c", CHILD, mode, json.dumps(sizes), str(n), str(reps)],
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
    a = ap.parse_args()
    try:
        import torch  # this process only looks: the modes run in children
        if not torch.cuda.is_available():
            raise ImportError("torch sees no CUDA device")
    except ImportError as e:
        print(f"torch_alloc_bench: nothing to measure here ({e})", file=sys.stderr)
        return 2
    res = {m: run(m, a.sizes, a.n, a.reps) for m in ("default", "nvbridge", "mempool")}
    d = res["default"]
    print(f"{d['device']}, torch {d['torch']}, {time.strftime('%Y-%m-%d %H:%M %Z')}; "
          f"us per alloc+free, median of {a.reps} x {a.n}")
    print(f"{'size':>12} {'default':>9} {'nvbridge':>9} {'mempool':>9} {'nvb first':>10} {'nvb/def':>8}")
    worst = 0.0
    for size in a.sizes:
        k = str(size)
        row = [res[m]["sizes"][k]["median_us"] for m in ("default", "nvbridge", "mempool")]
        ratio = row[1] / row[0] if row[0] else float("inf")
        worst = max(worst, ratio)
        print(f"{size:>12} {row[0]:>9.2f} {row[1]:>9.2f} {row[2]:>9.2f} "
              f"{res['nvbridge']['sizes'][k]['first_us']:>10.1f} {ratio:>8.2f}")
    print(f"worst nvbridge/default: {worst:.2f} (bound 1.20); allocator: {res['nvbridge'].get('stats')}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
