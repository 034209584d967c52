#!/bin/sh
# SPDX-License-Identifier: MIT
#
# nvbridge-bench --kv (bench/phase_kv.c) against the stand-in libcuda, run
# by tests/gpu-fake/run with it first on LD_LIBRARY_PATH: the phase runs end
# to end in two processes on one "GPU", its table and JSON say what ran and
# what was checked, and its data check fails when one byte is spoiled
# (NVB_BENCH_KV_CORRUPT).  It proves the plumbing and the check, not CUDA
# behaviour or any timing.  Prints ok/FAIL lines and "N passed, M failed".
lib=$(dirname "${NVB_TEST_DAEMON:?run me through tests/gpu-fake/run}")
b=${NVB_BENCH_BIN:-$lib/../bench/nvbridge-bench}
py=${NVB_PYTHON:-python3}
d=$(mktemp -d /tmp/nvb-bench-kv.XXXXXX) || exit 1
"$NVB_TEST_DAEMON" --socket "$d/s" > "$d/nvbridged.log" 2>&1 &
dp=$!
trap 'kill $dp 2>/dev/null; wait $dp 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 50); do [ -S "$d/s" ] && break; sleep 0.1; done
export NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET="$d/s"
pass=0 fail=0
ok() { echo "ok   bench-kv $1"; pass=$((pass + 1)); }
ko() { echo "FAIL bench-kv $1: $2"; fail=$((fail + 1)); }
has() { grep -qF -- "$1" "$2"; }
kvb() { timeout 120 "$b" "$@"; }

# the phase alone (--segments 2 without its batches), every method the host allows
kvb --kv 8,256,16K --kv-blocks 4,64 --trials 2 --kv-threads 3 --json-out "$d/kv.json" \
	> "$d/out" 2> "$d/err"
rc=$?
if [ $rc = 0 ] && has "every word right" "$d/out" && has "32 MiB read back" "$d/out" &&
   ! has "transfers:" "$d/out"; then ok runs_and_checks
else ko runs_and_checks "rc $rc: $(cat "$d/err" "$d/out" | tail -n 5)"; fi
n=$(grep -cE '^ +(4|64) +[0-9]+ [KM]iB +(nvbridge-xfer|legacy-ipc|large-copy|large-copy-1t) ' "$d/out")
if [ "$n" = 8 ]; then ok table_rows; else ko table_rows "$n rows, want 2 sizes x 4 methods"; fi
# the large-copy baseline uses the same threads and streams as the methods it rates
if has "large-copy     3 host threads, a stream each" "$d/out" &&
   has "large-copy-1t  1 host thread, 1 stream" "$d/out"; then ok large_copy_same_threads
else ko large_copy_same_threads "$(grep -E '^  large-copy' "$d/out")"; fi
if has "nccl           not run: both processes are on GPU 0" "$d/out"; then ok nccl_says_why
else ko nccl_says_why "no reason for the missing NCCL rows"; fi
if "$py" - "$d/kv.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
kv = d["kv"]
assert (kv["arrays"], kv["blocks"], kv["block_size"], kv["threads"]) == (8, 256, 16384, 3), kv
assert kv["blocks_per_request"] == [4, 64], kv
for m in ("nvbridge-xfer", "legacy-ipc", "large-copy", "large-copy-1t"):
    assert kv["checked_bytes"][m] == 8 * 256 * 16384, kv["checked_bytes"]
    for k in (4, 64):
        rs = [r for r in d["results"] if r["method"] == m and r["size"] == 8 * k * 16384]
        assert sorted(r["metric"] for r in rs) == ["kv_GBs", "kv_us"], rs
        assert all(r["n"] == 2 and r["min"] <= r["value"] <= r["max"] for r in rs), rs
assert kv["checked_bytes"]["nccl"] == 0 and "not run" in kv["resources"]["nccl"], kv
# every batch counted by the library's stats: 2 warm-ups + 2 trials x 5 requests, 3 threads
assert all(sum(p.values()) == 12 * 3 for p in kv["nvbridge_picked"]), kv["nvbridge_picked"]
assert d["gpus"] == [0, 0] and d["trials"] == 2 and "xfer_gbs" not in d["segments"], d
PY
then ok json; else ko json "the JSON above does not hold what ran"; fi

# bench/plot: its Markdown tables carry the KV rows (its plots need matplotlib,
# which this host may lack: then it exits 1 after the tables)
"$py" "$lib/../../bench/plot" "$d/kv.json" "$d/p" > "$d/plot.out" 2>&1
if grep -qE '^\| 64 \| 8 MiB \| nvbridge-xfer \|' "$d/p-tables.md"; then ok plot_tables
else ko plot_tables "$(tail -n 5 "$d/plot.out" "$d/p-tables.md" 2>&1)"; fi

# one spoiled byte fails the run
NVB_BENCH_KV_CORRUPT=1 kvb --kv 8,256,16K --kv-blocks 4,16 --trials 1 > "$d/out" 2> "$d/err"
rc=$?
if [ $rc = 1 ] && has "nvbridge-xfer: data check failed: 1 of 4194304 words wrong" "$d/err"; then
	ok corrupt_byte_fails
else ko corrupt_byte_fails "rc $rc: $(tail -n 3 "$d/err")"; fi

# --json: one JSON document on stdout; more threads than arrays
kvb --kv 2,64,4K --kv-blocks 64 --kv-threads 4 --kv-requests 1 --trials 1 --json \
	> "$d/out" 2> "$d/err"
rc=$?
if [ $rc = 0 ] && "$py" -c 'import json, sys; json.load(open(sys.argv[1]))' "$d/out"; then
	ok json_stdout_threads_beyond_arrays
else ko json_stdout_threads_beyond_arrays "rc $rc: $(tail -n 3 "$d/err")"; fi

# with --segments 3: the setup, the transfer batches, then the KV phase
kvb --segments 3 --seg-size 16M --seg-batches 2 --kv 4,64,4K --kv-blocks 16 --trials 1 \
	> "$d/out" 2> "$d/err"
rc=$?
if [ $rc = 0 ] && has "segments: 3 processes" "$d/out" && has "transfers:" "$d/out" &&
   has "every word right" "$d/out"; then ok after_segments
else ko after_segments "rc $rc: $(tail -n 3 "$d/err")"; fi

# --segments without --kv: --json-out gets its one-line document
kvb --segments 2 --seg-size 16M --seg-batches 1 --json-out "$d/seg.json" > "$d/out" 2> "$d/err"
rc=$?
if [ $rc = 0 ] && "$py" -c 'import json, sys; assert json.load(open(sys.argv[1]))["segments"]["nproc"] == 2' \
	"$d/seg.json"; then ok segments_json_out
else ko segments_json_out "rc $rc: $(tail -n 3 "$d/err")"; fi
# the batches' large-copy baseline: split over the batches' threads; 1 thread apart
# (the stand-in's events time nothing: the 1-thread figure is 0 here)
if [ $rc = 0 ] && has "large copy, same bytes, 4 threads x 1/4" "$d/out" &&
   has "large copy, 1 thread, 1 stream" "$d/out" &&
   "$py" -c 'import json, sys; s = json.load(open(sys.argv[1]))["segments"]; assert s["large_gbs"] > 0 and "large_1t_gbs" in s, s' \
	"$d/seg.json"; then ok segments_large_copy_same_threads
else ko segments_large_copy_same_threads "$(grep -E 'large copy' "$d/out")"; fi

# the setup's trials: a warm-up apart, then --trials; every figure and ratio
# as [median, min, max, first in the process], median within its range
kvb --segments 3 --seg-size 16M --seg-batches 1 --trials 3 --json-out "$d/seg3.json" \
	> "$d/out" 2> "$d/err"
rc=$?
if [ $rc = 0 ] && has "3 trials after one untimed warm-up trial" "$d/out" &&
   has "opens, all peers at once (nvb_gpu_seg_open_many)" "$d/out" &&
   has "publish / cuIpcGetMemHandle" "$d/out" && has "goal <= 1.0" "$d/out" &&
   "$py" - "$d/seg3.json" <<'EOF2'
import json, sys
s = json.load(open(sys.argv[1]))["segments"]
assert s["trials"] == 3 and s["warmup_trials"] == 1, s
for k in ("publish_us", "export_us", "publish_req_us", "ipc_get_us", "open_us",
          "open_watch_us", "open_fetch_us", "open_import_us", "open_access_us",
          "open_round_trips", "open_prefetched_us", "ipc_open_us", "open_many_us", "setup_nvb_us",
          "setup_ipc_us", "ratio_publish_get", "ratio_prefetched_open_ipc_open",
          "ratio_open_ipc_open", "setup_speed"):
    med, lo, hi, first = s[k]
    assert lo <= med <= hi, (k, s[k])
    assert k in ("open_access_us", "open_watch_us") or hi > 0, (k, s[k])
# on the broker an open's watch travels with its fetch: one round trip, no watch of its own
assert s["open_round_trips"] == [1.0, 1.0, 1.0, 1.0], s["open_round_trips"]
assert s["open_watch_us"][2] == 0, s["open_watch_us"]
assert s["publish_us"][0] > 0 and s["open_us"][0] > 0
EOF2
then ok segments_trials
else ko segments_trials "rc $rc: $(tail -n 3 "$d/err")"; fi

echo "$pass passed, $fail failed"
