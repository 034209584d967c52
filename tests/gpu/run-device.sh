#!/bin/sh
# Runs gputest and the full nvbridge-bench on a GPU host from prebuilt
# binaries (build/lib/nvbridged, build/gpu/gputest, build/bench/nvbridge-bench),
# with a private nvbridged.  Usage: tests/gpu/run-device.sh OUTDIR
# NVB_BENCH_ARGS: extra bench arguments; NVB_BENCH2_ARGS: when set, a second
# bench run with those arguments (bench2.txt, bench2.json).
out=${1:-.}
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,driver_version,pci.bus_id --format=csv > "$out/gpus.csv" 2>&1
sock=/tmp/nvbridged-gputest.sock
rm -f $sock
./build/lib/nvbridged --socket $sock & dpid=$!
for i in $(seq 50); do [ -S $sock ] && break; sleep 0.1; done
export NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET=$sock
timeout ${NVB_GPUTEST_TIMEOUT:-240} ./build/gpu/gputest > "$out/gputest.log" 2>&1; echo "gputest rc=$?" >> "$out/gputest.log"
nccl=$(python3 -c 'import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
timeout ${NVB_BENCH_TIMEOUT:-300} ./build/bench/nvbridge-bench --nccl "${nccl:-libnccl.so.2}" --png "$out/nvbridge-bench.png" \
	--json-out "$out/nvbridge-bench.json" $NVB_BENCH_ARGS > "$out/bench.txt" 2> "$out/bench.err"
echo "bench rc=$?" >> "$out/bench.txt"
if [ -n "$NVB_BENCH2_ARGS" ]; then
	timeout ${NVB_BENCH_TIMEOUT:-300} ./build/bench/nvbridge-bench --nccl "${nccl:-libnccl.so.2}" \
		--json-out "$out/bench2.json" $NVB_BENCH2_ARGS > "$out/bench2.txt" 2>> "$out/bench.err"
	echo "bench2 rc=$?" >> "$out/bench2.txt"
fi
kill $dpid; wait $dpid 2>/dev/null
