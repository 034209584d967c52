#!/bin/sh
# conformance-broker: the conformance suite against a private nvbridged.
# usage: run-broker.sh BUILD_LIB_DIR   (last line: "N passed, M failed")
B=${1:?build dir}
dir=$(mktemp -d /tmp/nvb-conf.XXXXXX)
chmod 755 "$dir"	# other uids (the access cases) must reach the socket
sock=$dir/nvbridged.sock
"$B/nvbridged" --socket "$sock" 2>"$dir/daemon.log" &
dpid=$!
i=0
while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET=$sock NVB_TEST_DAEMON=$B/nvbridged \
	timeout 600 "$B/nvb-conformance" >"$dir/out" 2>&1
rc=$?
grep -v -E '^[0-9]+ passed, [0-9]+ failed' "$dir/out"
kill -TERM $dpid 2>/dev/null
wait $dpid
drc=$?
echo "# nvbridged log (dropped clients are expected from garbage_client):"
sed 's/^/#   /' "$dir/daemon.log"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$dir/out" | tail -n 1)
[ -n "$line" ] || line="0 passed, 1 failed"
if [ $drc -ne 0 ]; then
	echo "# nvbridged did not exit cleanly on SIGTERM (status $drc): counted as a failure"
	p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
	line="$p passed, $((f + 1)) failed"
	rc=1
fi
echo "$line"
rm -rf "$dir"
# the suite's own summary line is the last one printed above unless the daemon failed
[ $rc -eq 0 ] && [ $drc -eq 0 ]
