#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Imports the KV cache the producer published (no copy), checks every
element, writes it back negated and tells the producer it is done."""
from __future__ import annotations

import struct
import sys

import nvbridge
from kvcommon import choose, equal, expected, options, store, view


def main() -> int:
    a = options(__doc__.splitlines()[0])
    gpu, torch, which = choose(a.device)
    print(f"consumer: using {which}", flush=True)
    with nvbridge.open("auto", socket=a.socket) as h:
        t = h.import_tensor(a.name, wait=True, timeout=a.timeout, expect_uid=a.expect_uid, gpu=gpu)
        kind = "GPU" if t.is_cuda else "host"
        print(f"consumer: imported {a.name} from pid {t.entry.pid} uid {t.entry.uid}: "
              f"{kind} {t.dtype.name}{list(t.shape)}", flush=True)
        with h.fetch(a.name + ".seed", expect_uid=t.entry.uid) as f:
            (seed,) = struct.unpack("<q", f.blob)
        want = expected(t.shape, seed)
        v = view(t, torch)
        if not equal(v, want, torch):
            print("consumer: FAIL: contents differ from the producer's", file=sys.stderr)
            return 1
        print(f"consumer: all {want.size} elements match", flush=True)
        store(v, -want, torch)
        h.publish(a.name + ".done", blob=b"ok", access=nvbridge.Access.SCOPE)
        del v
        t.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
