#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Everything issues 13, 14 and 15 measure on one GPU, in one device call of
# under 10 minutes, from binaries prebuilt here (make device-bundle: nothing
# is compiled on the GPU host, which has no compiler, toolkit or liburing).
#
# The lead's call (from /work/main, after `make device-bundle` there):
#
#   run(command="bash tests/gpu/device-all.sh \"$OUT\"",
#       carry=["build/lib", "build/gpu", "build/bench"], timeout_s=600)
#
# (make device-bundle prints the carry list with its sizes: about 6 MiB.)
# Then read $OUT/SUMMARY.txt (also the last thing printed); every step's full
# output is in $OUT/steps.tar.gz (one directory per step: log, the private
# broker's log, the step's own files), repacked after every step so that a
# call cut short still brings back the steps that finished.
#
# Steps (nominal timeouts in seconds, NVB_T_<STEP> overrides; their sum is
# 585 = NVB_DEVICE_BUDGET's default; a step also gets what earlier steps left
# unused, up to twice its nominal time, never the later steps' nominal time,
# so the whole run ends within the budget):
#   info        25  nvidia-smi, torch/python, cuBLAS, ldd of every binary
#   bench      100  nvbridge-bench one-GPU table + co-run GEMM phase (issue 13)
#   segments    35  nvbridge-bench --segments 4 (issue 15: setup vs legacy IPC, batches)
#   kv          30  nvbridge-bench --kv 64,1024,32K (issue 15: a KV cache moved by request,
#                   nvb_gpu_xfer_submit vs legacy IPC + a copy per block vs a large copy)
#   wide        25  segments 2 + kv with the SM budget at 2 x the SMs (opt-in, not the default)
#   yield       20  segments 2 + kv with NVB_GPU_OPEN_SM_YIELD (opt-in: lowest priority, no cap)
#   gputest     80  build/gpu/gputest, every one-GPU case (issues 13, 14)
#   segtest     45  build/gpu/segtest (issue 15)
#   coexist     60  tests/gpu/torch_coexist.py: synchronize/empty_cache with objects alive
#   python      80  tests/python: test_gpu.py, test_torch_alloc_gpu.py (whole process
#                   and MemPool), test_example.py (kv_producer/kv_consumer pair)
#   register    20  build/gpu/nvb-example-register (VMM range over 2 allocations + cuMemAlloc)
#   torchalloc  55  bench/torch_alloc_bench.py: allocator vs PyTorch default and the pluggable floor (issue 14)
#   plot        10  bench/plot on the bench's and the kv step's JSON (PNGs, Markdown tables)
# NVB_DEVICE_STEPS="bench segments" runs only those (for a rerun);
# NVB_BENCH_ARGS / NVB_SEG_ARGS / NVB_KV_ARGS add arguments to the three bench
# runs; NVB_KV=L,B,S replaces the kv step's cache layout.
#
# $OUT gets at most 8 files (the tool's limit): SUMMARY.txt, steps.tar.gz
# (steps.txt, the logs alone, where tar or gzip is missing), and copies of
# nvbridge-bench.json, bench-tables.md, nvb-bandwidth.png, nvb-corun.png,
# torch-alloc.json, nvb-kv.png.
#
# Dry run (no GPU): NVB_DEVICE_FAKE_CUDA=build/gpu-fake puts the stand-in
# libcuda first on the library path (make device-dry-run): steps that need
# a GPU fail or skip saying why; the script still finishes.
set -u
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
OUTDIR=${1:-${OUT:-$REPO/build/device-out}}
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
W=$(mktemp -d /tmp/nvb-device.XXXXXX) || exit 2
chmod 755 "$W"
T0=$(date +%s)
BUDGET=${NVB_DEVICE_BUDGET:-585}
PY=${NVB_PYTHON:-python3}
LB=$REPO/build/lib
SUM=$W/SUMMARY.txt
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export NVBRIDGE_LIB=$LB/libnvbridge.so.1 NVB_TEST_DAEMON=$LB/nvbridged
export PYTHONPATH=$REPO/python${PYTHONPATH:+:$PYTHONPATH}
DRY=""
if [ -n "${NVB_DEVICE_FAKE_CUDA:-}" ]; then
	fake=$(cd "$NVB_DEVICE_FAKE_CUDA" && pwd)
	export LD_LIBRARY_PATH=$fake${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export NVB_FAKE_CUDA=$fake/libfakecuda.so
	DRY="DRY RUN against the stand-in libcuda ($fake): no CUDA behaviour is proven"
fi

ROWS=""	# one summary row per step, in order
left() { echo $((BUDGET - ($(date +%s) - T0))); }

# the summary from what the steps wrote so far, and every step's files
pack() {
	{
		echo "nvbridge device run, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -n)"
		echo "bundle: $(cat "$LB/device-bundle.txt" 2>/dev/null || echo 'build/lib/device-bundle.txt missing: not built by make device-bundle')"
		[ -z "$DRY" ] || echo "$DRY"
		cat "$W"/*-info/gpu.csv 2>/dev/null | sed 's/^/gpu: /'
		grep -hv '^+ ' "$W"/*-info/torch.txt 2>/dev/null | sed 's/^/python: /'
		echo "elapsed $(( $(date +%s) - T0 )) s of a $BUDGET s budget"
		echo
		printf '%-11s %-8s %5s  %s\n' step verdict secs "rc; passed/failed; skips"
		printf '%b' "$ROWS"
		bad=$(printf '%b' "$ROWS" | awk '$2 != "ok" {print $1 " " $2}' | paste -sd, -)
		echo "verdict: ${bad:-every step ran and passed with no skip}"
		for d in "$W"/[0-9]*; do
			[ -s "$d/keys.txt" ] || continue
			echo
			echo "== $(basename "$d")"
			cat "$d/keys.txt"
		done
	} > "$SUM"
	cp "$SUM" "$OUTDIR/SUMMARY.txt"
	if tar czf "$OUTDIR/steps.tar.gz.tmp" -C "$W" . 2>/dev/null; then
		mv "$OUTDIR/steps.tar.gz.tmp" "$OUTDIR/steps.tar.gz"
	else	# no tar or gzip there: every step's log in one file
		rm -f "$OUTDIR/steps.tar.gz.tmp"
		for f in "$W"/[0-9]*/log; do echo "==== $f"; cat "$f"; done > "$OUTDIR/steps.txt"
	fi
}

# A private nvbridged for one step (its log in the step's directory).
broker_start() {
	sock=$1/nvbridged.sock
	"$LB/nvbridged" --socket "$sock" > "$1/nvbridged.log" 2>&1 & BPID=$!
	for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
	[ -S "$sock" ] || echo "nvbridged did not start (see nvbridged.log)" >> "$1/log"
	export NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET=$sock
}
broker_stop() {
	[ -n "${BPID:-}" ] || return 0
	kill "$BPID" 2>/dev/null
	for _ in $(seq 50); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$BPID" 2>/dev/null
	wait "$BPID" 2>/dev/null
	BPID=""
	unset NVBRIDGE_BACKEND NVBRIDGE_SOCKET
}
trap 'broker_stop; pack' EXIT
trap 'exit 130' INT TERM

N=0
# step NAME NOMINAL_TIMEOUT: runs s_NAME in $W/NN-NAME with stdout+stderr in
# log, then k_NAME writes keys.txt; one summary row.
step() {
	local name=$1 t=$2 d rc verdict secs t0 p f sk line later
	N=$((N + 1))
	d=$W/$(printf '%02d' $N)-$name
	selected "$name" || return 0
	later=$(reserved_after "$name")
	mkdir -p "$d"
	if [ "$(left)" -lt 5 ]; then
		ROWS="$ROWS$(printf '%-11s %-8s %5s  %s' "$name" NOTRUN 0 "the $BUDGET s budget is spent")\n"
		pack
		return 0
	fi
	# the nominal timeout plus what earlier steps left unused (at most
	# twice the nominal), never eating into the later steps' nominal time
	t=$(( $(left) - later ))
	[ "$t" -le $((2 * $2)) ] || t=$((2 * $2))
	[ "$t" -ge 5 ] || t=5
	[ "$t" -le "$(left)" ] || t=$(left)
	echo "== $name (timeout $t s)"
	t0=$(date +%s)
	# every command of a step is bounded: its main one by TO (timeout kills
	# the whole process group, children included, SIGKILL 5 s after SIGTERM:
	# hence STEP_T = t - 6), the others by short timeouts; the broker is
	# stopped within 5 s
	( cd "$d" && STEP_T=$((t > 11 ? t - 6 : 5)) "s_$name" ) > "$d/log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - t0 ))
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$d/log" | tail -n 1)
	p=""; f=""
	if [ -n "$line" ]; then p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}; fi
	sk=$(grep -ciE '^(skip|SKIP)[ :]' "$d/log")
	if [ $rc = 124 ] || [ $rc = 137 ]; then verdict=TIMEOUT
	elif [ $rc != 0 ]; then verdict=FAIL
	elif [ -n "$f" ] && [ "$f" != 0 ]; then verdict=FAIL
	elif [ -n "$line" ] && [ "$p" = 0 ]; then verdict=SKIPPED	# nothing ran: not a proof
	elif grep -q '^NOT-PROVEN' "$d/log"; then verdict=SKIPPED
	elif [ "$sk" != 0 ]; then verdict=ok+skip	# read the skip reasons below
	else verdict=ok
	fi
	( cd "$d" && "k_$name" ) > "$d/keys.txt" 2>&1
	ROWS="$ROWS$(printf '%-11s %-8s %5s  rc %s%s; %s skip line(s)' "$name" "$verdict" "$secs" "$rc" \
		"${line:+; $line}" "$sk")\n"
	echo "   $verdict (rc $rc, ${secs} s)"
	pack
}

# ---- the steps: s_X runs (cwd: its directory), k_X picks its key lines ----
TO() { timeout -k 5 "$STEP_T" "$@"; }
bins="$LB/libnvbridge.so.1 $LB/libnvbridge_torch.so $LB/nvbridged $REPO/build/bench/nvbridge-bench
      $REPO/build/gpu/gputest $REPO/build/gpu/segtest $REPO/build/gpu/nvb-example-register"

s_info() {
	set -x
	date -u; uname -a; nproc; free -g; id
	timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id,compute_cap \
		--format=csv,noheader > gpu.csv 2> gpu.err || echo "nvidia-smi failed or is missing: $(cat gpu.err)" > gpu.csv
	timeout 10 nvidia-smi > nvidia-smi.txt 2>&1
	timeout 10 nvidia-smi -q > nvidia-smi-q.txt 2>&1
	timeout 10 nvidia-smi topo -m > topo.txt 2>&1
	cat "$LB/device-bundle.txt"
	command -v "$PY"
	TO "$PY" - > torch.txt 2>&1 <<'PY'
import sys
try:
    import torch
    cuda = torch.cuda.is_available()
    print(f"{sys.executable} {sys.version.split()[0]}; torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"sees CUDA: {cuda}" + (f", {torch.cuda.get_device_name(0)}" if cuda else ""))
except Exception as e:  # noqa: BLE001
    print(f"{sys.executable} {sys.version.split()[0]}; torch: {e}")
for m in ("pytest", "numpy", "matplotlib"):
    try:
        print(f"  {m} {__import__(m).__version__}")
    except Exception as e:  # noqa: BLE001
        print(f"  {m}: {e}")
PY
	cat torch.txt
	echo "cuBLAS: $(timeout 10 sh "$REPO/scripts/find-cublas" 2>/dev/null || echo none)"
	ls -l /dev/nvbridge 2>&1
	ls -lL $bins
	for b in $bins; do echo "-- $b"; ldd "$b"; done
	ldd $bins 2>&1 | grep 'not found' && echo "NOT-PROVEN: a library above does not resolve"
	true
}
k_info() {
	cat gpu.csv torch.txt 2>/dev/null | grep -v '^+ '
	grep -E '^cuBLAS:|not found|NOT-PROVEN' log | grep -v '^+'
}

s_bench() {
	local nccl cublas
	nccl=$(timeout 10 "$PY" -c 'import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
	cublas=$(timeout 10 sh "$REPO/scripts/find-cublas" 2>/dev/null)
	broker_start "$PWD"
	# the bench's own deadline first, so that it kills its children and
	# still prints what it measured
	TO "$REPO/build/bench/nvbridge-bench" --timeout $((STEP_T > 20 ? STEP_T - 10 : 10)) --nccl "${nccl:-libnccl.so.2}" \
		${cublas:+--cublas "$cublas"} --json-out "$PWD/nvbridge-bench.json" ${NVB_BENCH_ARGS:-}
	local rc=$?
	broker_stop
	return $rc
}
k_bench() {
	{
		grep -E '^(nvbridge-bench|rendezvous|NCCL|INVALID)' log
		grep -iE 'nvbridge-bench:.*(not|fail|error|no )' log
		awk '/^values: median/{on=1} on&&/^$/{exit} on' log
		awk '/^co-run: a bf16 GEMM/{on=1} on' log
	} | awk '!seen[$0]++'
}

s_segments() {
	broker_start "$PWD"
	TO "$REPO/build/bench/nvbridge-bench" --timeout $((STEP_T > 18 ? STEP_T - 8 : 10)) --segments 4 \
		--json-out "$PWD/nvbridge-seg.json" ${NVB_SEG_ARGS:-}
	local rc=$?
	broker_stop
	return $rc
}
k_segments() {
	# the whole table: medians (min-max) over the trials, the ratios against issue 15's goals
	grep -vE '^\[|^$' log | awk '/^segments:/{on=1} on' | head -n 45
	grep -E 'fail|error' log | head -n 5
}

# the KV-cache phase alone (--segments 2 without its batches): 3 x 2 GiB on the GPU
s_kv() {
	broker_start "$PWD"
	TO "$REPO/build/bench/nvbridge-bench" --timeout $((STEP_T > 18 ? STEP_T - 8 : 10)) \
		--kv "${NVB_KV:-64,1024,32K}" --json-out "$PWD/nvbridge-kv.json" ${NVB_KV_ARGS:-}
	local rc=$?
	broker_stop
	return $rc
}
k_kv() {
	grep -E '^(KV cache|latency per request)|^  (nvbridge-xfer|legacy-ipc|large-copy|large-copy-1t|nccl) ' log |
		cut -c1-300
	awk '/^  blocks +bytes/{on=1} on&&/^data:/{print; exit} on' log
	grep -E '^nvbridge-bench' log | grep -iE 'fail|error|not|no ' | head -n 5
}

# the same two phases with the SM budget an application may grant
# (nvb_gpu_opts.sm_ctas = 2 x the SMs): what a batch of small blocks gets
# when compute can spare the GPU, against the default 4-CTA budget above
s_wide() {
	broker_start "$PWD"
	TO "$REPO/build/bench/nvbridge-bench" --timeout $((STEP_T > 18 ? STEP_T - 8 : 10)) \
		--segments 2 --seg-sm-ctas "${NVB_WIDE_CTAS:-264}" --kv "${NVB_KV:-64,1024,32K}" \
		--json-out "$PWD/nvbridge-wide.json"
	local rc=$?
	broker_stop
	return $rc
}
k_wide() {
	grep -E '^transfers|xfer_submit|legacy IPC, copy|large copy, ' log | head -n 5
	k_kv
}

s_yield() {
	broker_start "$PWD"
	TO "$REPO/build/bench/nvbridge-bench" --timeout $((STEP_T > 18 ? STEP_T - 8 : 10)) \
		--segments 2 --seg-sm-yield --kv "${NVB_KV:-64,1024,32K}" \
		--json-out "$PWD/nvbridge-yield.json"
	local rc=$?
	broker_stop
	return $rc
}
k_yield() { k_wide; }

s_gputest() {
	broker_start "$PWD"
	TO "$REPO/build/gpu/gputest"
	local rc=$?
	broker_stop
	return $rc
}
k_gputest() {
	grep -E '^(gputest|SKIP|skip|FAIL)|sync_and_free|deadline_catches|context_as_found|proxy_exits|coexist|^[0-9]+ passed, [0-9]+ failed' log |
		cut -c1-300 | awk '!seen[$0]++'
}

s_segtest() {
	broker_start "$PWD"
	TO "$REPO/build/gpu/segtest"
	local rc=$?
	broker_stop
	return $rc
}
k_segtest() {
	grep -E '^(segtest|SKIP|skip|FAIL)|setup_stats|open_many seg|^[0-9]+ passed, [0-9]+ failed' log
}

s_coexist() {
	TO "$PY" "$REPO/tests/gpu/torch_coexist.py" "$LB/libnvbridge.so.1"
	local rc=$?
	local p f
	p=$(grep -c '^ok ' log); f=$(grep -c '^FAIL' log)
	echo "$p passed, $f failed"
	return $rc
}
k_coexist() { grep -E '^(ok|FAIL)' log | cut -c1-300; }

s_python() {
	# run.py starts its own private nvbridged; the GPU files only
	TO "$PY" "$REPO/tests/python/run.py" test_gpu.py test_torch_alloc_gpu.py test_example.py
}
k_python() {
	grep -E '::test_[a-z_0-9]+ PASSED' log | sed 's|^.*tests/python/||; s/ *PASSED.*/ PASSED/' | awk '!seen[$0]++'
	grep -E '^(SKIP:|FAILED|ERROR)|Error:|^[0-9]+ passed, [0-9]+ failed' log | cut -c1-300 | tail -n 30
}

s_register() {
	broker_start "$PWD"
	TO "$REPO/build/gpu/nvb-example-register"
	local rc=$?
	broker_stop
	return $rc
}
k_register() { grep -E '^(exporter|importer|OK|FAILED)|rror' log | cut -c1-300; }

s_torchalloc() {
	TO "$PY" "$REPO/bench/torch_alloc_bench.py" --json "$PWD/torch-alloc.json"
}
k_torchalloc() { grep -vE '^\s*$' log | tail -n 12; }

s_plot() {
	local j k rc=0 half=$((STEP_T / 2 > 3 ? STEP_T / 2 : 3))
	j=$(ls "$W"/*-bench/nvbridge-bench.json 2>/dev/null | head -n 1)
	k=$(ls "$W"/*-kv/nvbridge-kv.json 2>/dev/null | head -n 1)
	if [ -n "$j" ]; then
		timeout -k 2 "$half" "$PY" "$REPO/bench/plot" "$j" "$PWD/nvb" || rc=$?
	else
		echo "NOT-PROVEN: no bench JSON to plot"
	fi
	if [ -n "$k" ]; then	# kv-tables.md, kv-kv.png
		timeout -k 2 "$half" "$PY" "$REPO/bench/plot" "$k" "$PWD/kv" || rc=$?
	fi
	return $rc
}
k_plot() { ls; grep -iE 'error|matplotlib' log; }

echo "nvbridge device run: $OUTDIR (staging $W), budget $BUDGET s${DRY:+; $DRY}"
# exec bits may not survive the copy to the GPU host
chmod u+x $bins "$REPO/bench/plot" 2>/dev/null
# name:nominal timeout (s); NVB_T_<NAME> overrides one
STEPS="info:25 bench:100 segments:35 kv:30 wide:25 yield:20 gputest:80 segtest:45 coexist:60 python:80 register:20 torchalloc:55 plot:10"
selected() { [ -z "${NVB_DEVICE_STEPS:-}" ] || echo " $NVB_DEVICE_STEPS " | grep -q " $1 "; }
nominal() {	# nominal NAME DEFAULT
	local var
	var=NVB_T_$(echo "$1" | tr a-z A-Z)
	echo "${!var:-$2}"
}
reserved_after() {	# the nominal seconds of the selected steps after NAME
	local seen=0 sum=0 e
	for e in $STEPS; do
		[ $seen = 1 ] && selected "${e%%:*}" && sum=$((sum + $(nominal "${e%%:*}" "${e#*:}")))
		[ "${e%%:*}" = "$1" ] && seen=1
	done
	echo $sum
}
for e in $STEPS; do
	step "${e%%:*}" "$(nominal "${e%%:*}" "${e#*:}")"
done
# a few files beside the tarball, for reading without unpacking (<= 8 in all)
for f in "$W"/*-bench/nvbridge-bench.json "$W"/*-torchalloc/torch-alloc.json "$W"/*-plot/nvb-tables.md \
	 "$W"/*-plot/nvb-bandwidth.png "$W"/*-plot/nvb-corun.png; do
	[ -f "$f" ] && cp "$f" "$OUTDIR/"
done
[ -f "$OUTDIR/nvb-tables.md" ] && mv "$OUTDIR/nvb-tables.md" "$OUTDIR/bench-tables.md"
[ -f "$W"/*-plot/kv-kv.png ] && cp "$W"/*-plot/kv-kv.png "$OUTDIR/nvb-kv.png"
trap - EXIT
broker_stop
pack
cat "$SUM"
echo
sed -n '/^step /,/^verdict:/p' "$SUM"	# the table again, last in the call's output
rm -rf "$W"
! grep -qE '^[a-z]+ +(FAIL|TIMEOUT|SKIPPED|NOTRUN) ' "$OUTDIR/SUMMARY.txt"
