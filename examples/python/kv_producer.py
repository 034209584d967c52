#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fills a KV-cache-shaped tensor (layers x blocks x tokens x heads x dim,
random float32) in shared memory, publishes it, waits for a consumer to
check it and write it back negated, and checks the write-back.

GPU memory when a GPU and torch with CUDA are usable, else host memory.
On a GPU, --memory pool fills a torch tensor made in nvbridge.mempool()
(--memory process: nvbridge.use_torch_allocator()) and shares it with
Gpu.register_tensor; the consumer imports it with the same call.
"""
from __future__ import annotations

import struct
import sys

import nvbridge
from kvcommon import choose, equal, expected, gpu_tensor, options, store, view


def main() -> int:
    a = options(__doc__.splitlines()[0])
    gpu, torch, which = choose(a.device)
    print(f"producer: using {which}", flush=True)
    with nvbridge.open("auto", socket=a.socket) as h:
        if gpu:
            t, keep = gpu_tensor(gpu, torch, a.shape, a.memory)
            print(f"producer: {a.memory}: {t.nbytes} bytes at {t.ptr:#x}", flush=True)
        else:
            t, keep = nvbridge.empty(a.shape, "float32"), None
        want = expected(a.shape, a.seed)
        v = view(t, torch)
        store(v, want, torch)
        h.watch(a.name + ".done")  # before publishing: the answer cannot slip past
        access = getattr(nvbridge.Access, a.access.upper())
        h.publish(a.name + ".seed", blob=struct.pack("<q", a.seed), access=access)
        eid = h.publish_tensor(a.name, t, access=access)
        print(f"producer: published {a.name} (entry {eid}, {t.nbytes} bytes, shape {t.shape})",
              flush=True)
        for ev in h.events(timeout=a.timeout):
            if ev.type == nvbridge.EventType.PUBLISHED:
                print(f"producer: consumer pid {ev.pid} uid {ev.uid} says done", flush=True)
                break
        else:
            print("producer: no consumer answered in time", file=sys.stderr)
            return 1
        if not equal(v, -want, torch):
            print("producer: FAIL: the write-back is not what the consumer wrote", file=sys.stderr)
            return 1
        print(f"producer: write-back verified, all {want.size} elements", flush=True)
        del v
        t.close()
        del keep
    return 0


if __name__ == "__main__":
    sys.exit(main())
