#!/bin/bash
# hostile: attacks on nvbridged by unprivileged local users (tests/hostile/hostile.c).
# usage: run-hostile.sh NVBRIDGED HOSTILE_BUILD_DIR   (last line: "N passed, M failed")
# The broker runs as a host runs it: without CAP_SYS_ADMIN/CAP_SYS_RESOURCE
# (the unit keeps CAP_SYS_PTRACE only), with a 2048-fd limit, so that fds in
# flight and fd exhaustion count as they would there.  Any sanitizer report
# in the broker's log (an ASan build) is one more failure.
D=${1:?nvbridged binary}
H=${2:?hostile build dir}
shift 2
dir=$(mktemp -d /tmp/nvb-hostile.XXXXXX)
chmod 755 "$dir"
trap 'kill -KILL $dpid 2>/dev/null; rm -rf "$dir"' EXIT
if [ "$(id -u)" != 0 ]; then
	echo "skip: the hostile suite needs root (it becomes test uids and mounts FUSE)"
	echo "1 passed, 0 failed"
	exit 0
fi
install -o root -g root -m 4755 "$H/nvb-hostile-suid" "$dir/suid"
caps=
if [ -z "${NVB_HOSTILE_FULLCAPS:-}" ] && command -v setpriv >/dev/null; then
	caps="setpriv --bounding-set=-all,+sys_ptrace --inh-caps=-all"
fi
( ulimit -n 2048; exec $caps "$D" --socket "$dir/s.sock" ${NVB_HOSTILE_BROKER_ARGS:-} ) \
	2>"$dir/daemon.log" &
dpid=$!
i=0; while [ ! -S "$dir/s.sock" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET=$dir/s.sock NVB_BROKER_PID=$dpid \
NVB_BROKER_LOG=$dir/daemon.log NVB_BROKER_BIN=$D NVB_SUID=$dir/suid NVB_DIR=$dir \
	timeout 900 "$H/nvb-hostile" "$@" >"$dir/out" 2>&1
grep -v -E '^[0-9]+ passed, [0-9]+ failed' "$dir/out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$dir/out" | tail -n 1)
[ -n "$line" ] || line="0 passed, 1 failed"
p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
kill -TERM $dpid 2>/dev/null
for i in $(seq 50); do kill -0 $dpid 2>/dev/null || break; sleep 0.1; done
if kill -0 $dpid 2>/dev/null; then
	echo "FAIL the broker did not exit within 5 s of SIGTERM"
	f=$((f + 1))
fi
wait $dpid 2>/dev/null
echo "# nvbridged log: $(wc -l <"$dir/daemon.log") lines, the last 15:"
tail -n 15 "$dir/daemon.log" | sed 's/^/#   /'
if grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$dir/daemon.log"; then
	echo "FAIL sanitizer report in the broker:"
	grep -A12 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$dir/daemon.log" | head -40
	f=$((f + 1))
fi
echo "$p passed, $f failed"
[ "$f" = 0 ]
