# Shared helpers for the install-side suites (sourced, bash).
# Each check prints "PASS: ..." or "FAIL: ..."; finish prints the
# "N passed, M failed" line that scripts/summary reads and sets the status.

nvb_pass=0
nvb_fail=0
nvb_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

ok() { nvb_pass=$((nvb_pass + 1)); echo "PASS: $*"; }
bad() { nvb_fail=$((nvb_fail + 1)); echo "FAIL: $*"; }
# check DESCRIPTION COMMAND [ARGS...]: passes when COMMAND succeeds.
check() {
	local d=$1
	shift
	if "$@"; then ok "$d"; else bad "$d"; fi
}
# check_eq DESCRIPTION EXPECTED ACTUAL
check_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (expected '$2', got '$3')"; fi
}
finish() {
	echo "$nvb_pass passed, $nvb_fail failed"
	[ "$nvb_fail" -eq 0 ]
}
