#!/bin/sh
# lib-asan: the library, nvbridged and nvbridgectl built with ASan+UBSan:
# the conformance suite (sanitized client against a sanitized broker) and
# the unit/tool tests.  Any sanitizer or leak report fails the suite.
A=${1:?asan build dir}
here=$(cd "$(dirname "$0")/../.." && pwd)
export ASAN_OPTIONS=detect_leaks=1:exitcode=23:abort_on_error=0:log_exe_name=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
dir=$(mktemp -d /tmp/nvb-asan.XXXXXX)
chmod 755 "$dir"	# other uids (the access cases) must reach the socket
pass=0
fail=0
count() {
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
	if [ -z "$line" ]; then
		echo "FAIL $2: no result line"
		fail=$((fail + 1))
		return
	fi
	pass=$((pass + ${line%% passed*}))
	f=${line#*passed, }
	fail=$((fail + ${f%% failed*}))
}

sock=$dir/d.sock
"$A/nvbridged" --socket "$sock" 2>"$dir/daemon.log" &
dpid=$!
i=0; while [ ! -S "$sock" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET=$sock NVB_TEST_DAEMON=$A/nvbridged \
	timeout 900 "$A/nvb-conformance" >"$dir/conf.log" 2>"$dir/conf.err"
sed 's/^/conformance: /' "$dir/conf.log"
count "$dir/conf.log" conformance
kill -TERM $dpid
wait $dpid
drc=$?
if [ $drc -ne 0 ]; then
	echo "FAIL asan nvbridged exit status $drc at SIGTERM (23 = leak report)"
	fail=$((fail + 1))
else
	echo "ok   asan nvbridged clean exit"
	pass=$((pass + 1))
fi
sh "$here/tests/unit/run-unit.sh" "$A" 1 >"$dir/unit.log" 2>"$dir/unit.err"
sed 's/^/unit: /' "$dir/unit.log"
count "$dir/unit.log" unit
# any report anywhere (children write to the inherited stderr files)
if grep -l 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' \
	"$dir"/*.log "$dir"/*.err >/dev/null 2>&1; then
	echo "FAIL sanitizer reports:"
	grep -h -A12 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$dir"/*.log "$dir"/*.err | head -80
	fail=$((fail + 1))
else
	echo "ok   no sanitizer reports"
	pass=$((pass + 1))
fi
rm -rf "$dir"
echo "$pass passed, $fail failed"
