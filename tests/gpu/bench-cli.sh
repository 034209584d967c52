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
t kv-two-fields 2 "--kv L,B,S: L arrays" --kv 64,1024
t kv-block-unaligned 2 "a multiple of 256" --kv 4,16,1000
t kv-too-big 2 "at most 64 GiB" --kv 1024,1048576,64M
t kv-zero-arrays 2 "--kv L,B,S: L arrays" --kv 0,16,4K
t kv-blocks-beyond-cache 2 "but the cache has 16 blocks" --kv 4,16,4K --kv-blocks 8,32
t kv-blocks-zero 2 "--kv-blocks: 1 to 8" --kv 4,16,4K --kv-blocks 0
t kv-blocks-too-many 2 "--kv-blocks: 1 to 8" --kv-blocks 1,2,3,4,5,6,7,8,9
t kv-blocks-repeated 2 "--kv-blocks: 1 to 8 distinct" --kv-blocks 16,64,16
t kv-threads-zero 2 "--kv-threads: 1..32" --kv 4,256,4K --kv-threads 0
t kv-requests-too-many 2 "--kv-requests: 1..64" --kv 4,256,4K --kv-requests 65
t kv-socketpair 2 "through libnvbridge only" --kv 4,256,4K --rdv socketpair
if [ -e /dev/nvidiactl ] && ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
	echo "skip bench-cli kv-no-driver: this host has a CUDA driver"
else
	t kv-no-driver 1 "no usable CUDA driver" --kv 4,256,4K --timeout 20
fi
t vmm-parts-too-many 2 "--vmm-parts: 0 to 8" --vmm-parts 9
t vmm-parts-junk 2 "--vmm-parts: 0 to 8" --vmm-parts 2x
t trials-zero 2 "--trials: 1 to 64" --trials 0
t trials-too-many 2 "--trials: 1 to 64" --trials 65
if [ -e /dev/nvidiactl ] && ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
	echo "skip bench-cli no-driver-pair: this host has a CUDA driver"
else
	t no-driver-pair 1 "libcuda.so.1" --quick --no-corun --rdv socketpair --timeout 20
fi
