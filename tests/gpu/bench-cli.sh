#!/bin/sh
# nvbridge-bench's option checks and its answer on a host without a usable
# CUDA driver; prints "ok NAME" / "FAIL NAME" lines.  Usage: bench-cli.sh BENCH
b=$1
t() {	# name, expected exit status, expected stderr text, arguments...
	name=$1 want=$2 text=$3
	shift 3
	err=$("$b" "$@" 2>&1 >/dev/null); rc=$?
	if [ $rc -eq "$want" ] && printf '%s' "$err" | grep -qF -- "$text"; then
		echo "ok   bench-cli $name"
	else
		echo "FAIL bench-cli $name: rc $rc (want $want), stderr: $err"
	fi
}
t fan-out-zero 2 "--fan-out: 'all' or a list" --fan-out 0
t fan-out-junk 2 "--fan-out: 'all' or a list" --fan-out 1,x
t gpus-repeated 2 "--gpus: a list of distinct" --gpus 0,0 --all-pairs
t gpus-three-two-gpu-form 2 "--gpus A,B: two GPUs" --gpus 0,1,2
t gpus-one-multi 2 "need two GPUs or more" --gpus 3 --all-pairs
t many-publishers-range 2 "--many-publishers: 1 to 256" --many-publishers 257
t pair-size-unaligned 2 "multiples of 4 KiB" --all-pairs --pair-size 5000
t pub-size-too-big 2 "multiples of 4 KiB" --many-publishers 4 --pub-size 2G
t pair-size-too-big 2 "at most 8 GiB" --all-pairs --pair-size 9G
t publishers-memory 2 "at most 16 GiB per GPU" --many-publishers 64 --pub-size 512M
t multi-socketpair 2 "rendezvous through libnvbridge only" --all-pairs --rdv socketpair
if [ -e /dev/nvidiactl ] && ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
	echo "skip bench-cli no-driver: this host has a CUDA driver"
else
	t no-driver 1 "no usable CUDA driver" --all-pairs
fi
t segments-one 2 "--segments: 2..16 processes" --segments 1
t segments-read-pct 2 "--seg-read-pct 0..100" --segments 2 --seg-read-pct 101
t segments-block-too-big 2 "--seg-block within it" --segments 2 --seg-size 1M --seg-block 2M
t segments-socketpair 2 "through libnvbridge only" --segments 2 --rdv socketpair
if [ -e /dev/nvidiactl ] && ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
	echo "skip bench-cli segments-no-driver: this host has a CUDA driver"
else
	t segments-no-driver 1 "no usable CUDA driver" --segments 3 --timeout 20
fi
t trials-zero 2 "--trials: 1 to 64" --trials 0
t trials-too-many 2 "--trials: 1 to 64" --trials 65
if [ -e /dev/nvidiactl ] && ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
	echo "skip bench-cli no-driver-pair: this host has a CUDA driver"
else
	t no-driver-pair 1 "libcuda.so.1" --quick --no-corun --rdv socketpair --timeout 20
fi
