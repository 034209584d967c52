#!/bin/sh
# Runs gputest and nvbridge-bench on a GPU host from prebuilt binaries
# (build/lib/nvbridged, build/gpu/gputest, build/bench/nvbridge-bench), with a
# private nvbridged.  Usage: tests/gpu/run-device.sh OUTDIR
# (Issues 13-15 on one GPU in one call, with a summary: tests/gpu/device-all.sh.)
#   NVB_BENCH_ARGS   extra arguments of the two-GPU bench
#   NVB_BENCH2_ARGS  when set, a second two-GPU run with these (bench2.txt/json)
#   NVB_SKIP_GPUTEST, NVB_SKIP_BENCH, NVB_SKIP_TORCH  skip those steps
#   NVB_MULTI_ARGS   when set, a multi-GPU run (multi.txt, multi.json,
#                    multi-pairs.png) with these arguments, e.g.
#                    "--all-pairs --fan-out all --many-publishers 64"
out=${1:-.}
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,driver_version,pci.bus_id --format=csv > "$out/bench.err" 2>&1
nvidia-smi topo -m >> "$out/bench.err" 2>&1
sock=/tmp/nvbridged-gputest.sock
rm -f $sock
./build/lib/nvbridged --socket $sock & dpid=$!
for i in $(seq 50); do [ -S $sock ] && break; sleep 0.1; done
export NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET=$sock
if [ -z "$NVB_SKIP_GPUTEST" ]; then
	timeout ${NVB_GPUTEST_TIMEOUT:-240} ./build/gpu/gputest > "$out/gputest.log" 2>&1
	echo "gputest rc=$?" >> "$out/gputest.log"
fi
if [ -z "$NVB_SKIP_TORCH" ]; then
	timeout ${NVB_TORCH_TIMEOUT:-200} python3 tests/gpu/torch_coexist.py "$PWD/build/lib/libnvbridge.so.1" \
		>> "$out/gputest.log" 2>&1
	echo "torch_coexist rc=$?" >> "$out/gputest.log"
fi
if [ -n "$NVB_MULTI_ARGS" ]; then
	timeout ${NVB_MULTI_TIMEOUT:-400} ./build/bench/nvbridge-bench $NVB_MULTI_ARGS \
		--json-out "$out/multi.json" > "$out/multi.txt" 2> "$out/multi.err"
	echo "multi rc=$?" >> "$out/multi.txt"
	python3 bench/plot "$out/multi.json" "$out/multi" >> "$out/multi.err" 2>&1
fi
nccl=$(python3 -c 'import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
cublas=$(sh scripts/find-cublas 2>/dev/null)
if [ -z "$NVB_SKIP_BENCH" ]; then
	timeout ${NVB_BENCH_TIMEOUT:-300} ./build/bench/nvbridge-bench --nccl "${nccl:-libnccl.so.2}" \
		${cublas:+--cublas "$cublas"} --json-out "$out/nvbridge-bench.json" $NVB_BENCH_ARGS \
		> "$out/bench.txt" 2>> "$out/bench.err"
	echo "bench rc=$?" >> "$out/bench.txt"
	NVB_PLOT_NO_TABLES=1 python3 bench/plot "$out/nvbridge-bench.json" "$out/nvb" >> "$out/bench.err" 2>&1
fi
if [ -n "$NVB_BENCH2_ARGS" ]; then
	timeout ${NVB_BENCH2_TIMEOUT:-300} ./build/bench/nvbridge-bench --nccl "${nccl:-libnccl.so.2}" \
		${cublas:+--cublas "$cublas"} --json-out "$out/bench2.json" $NVB_BENCH2_ARGS \
		> "$out/bench2.txt" 2>> "$out/bench.err"
	echo "bench2 rc=$?" >> "$out/bench2.txt"
fi
kill $dpid; wait $dpid 2>/dev/null
