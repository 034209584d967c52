#!/bin/sh
# lib-bench (not a test): nvb-bench through nvbridged on this host, and
# through nvbridge.ko in the VM (TCG: absolute numbers are emulated, the
# ratio to the same-process socketpair [A] in the same boot is what to read;
# the cross-process round trip [B] is dominated by TCG's scheduling there,
# milliseconds, and means nothing).  The broker's 3x goal is judged against
# [B], the kernel's 1.0x against [A]: nvb-bench prints why.
B=${1:?build dir}
N=${NVB_BENCH_N:-20000}
here=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/nvb-bench.XXXXXX)
"$B/nvbridged" --socket "$dir/s.sock" 2>"$dir/d.log" &
d=$!
i=0; while [ ! -S "$dir/s.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
NVBRIDGE_SOCKET=$dir/s.sock "$B/nvb-bench" -b broker -n "$N"
kill -TERM $d; wait $d
rm -rf "$dir"
if [ -x "$here/tests/vm/run" ] && [ -x "$B/nvb-bench-static" ]; then
	echo "(kernel backend, inside the qemu TCG VM)"
	"$here/tests/vm/run" -q -- "$B/nvb-bench-static" -b kernel -n "$((N / 4))"
fi
