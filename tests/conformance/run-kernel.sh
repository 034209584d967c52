#!/bin/sh
# conformance-kernel: the same suite against nvbridge.ko inside the VM
# (tests/vm/run, owned by the vm helper), statically linked.
B=${1:?build dir}
here=$(cd "$(dirname "$0")/../.." && pwd)
if [ ! -x "$here/tests/vm/run" ]; then
	echo "conformance-kernel: tests/vm/run (the VM harness) is not available"
	echo "0 passed, 1 failed"
	exit 1
fi
out=$(mktemp /tmp/nvb-kconf.XXXXXX)
"$here/tests/vm/run" -q -- "$B/nvb-conformance-static" -b kernel >"$out" 2>&1
rc=$?
cat "$out"
if ! grep -qE '^[0-9]+ passed, [0-9]+ failed' "$out"; then
	echo "conformance-kernel: no result from the VM (status $rc)"
	echo "0 passed, 1 failed"
fi
rm -f "$out"
exit $rc
