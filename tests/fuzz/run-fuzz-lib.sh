#!/bin/sh
# fuzz-lib: libFuzzer over libnvbridge's broker reply parser for a fixed
# number of executions (NVB_FUZZ_RUNS, default 200000), starting from the
# seed corpus in tests/fuzz/corpus-lib (read only: new inputs go to a
# scratch directory).  Longer runs: tests/fuzz/README.
# usage: run-fuzz-lib.sh FUZZER   (last line: "N passed, M failed")
F=${1:?fuzzer binary}
RUNS=${NVB_FUZZ_RUNS:-200000}
seeds=$(cd "$(dirname "$0")" && pwd)/corpus-lib
pass=0
fail=0
tmp=$(mktemp -d /tmp/nvb-fuzz-lib.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
case_() { # name, command...
	name=$1; shift
	if "$@" >"$tmp/out" 2>&1; then
		echo "ok   fuzz-lib $name"; pass=$((pass + 1))
	else
		echo "FAIL fuzz-lib $name"; sed 's/^/#   /' "$tmp/out" | tail -40
		fail=$((fail + 1))
	fi
	grep -E '^(Done|#[0-9]+[[:space:]]+DONE)' "$tmp/out" | sed 's/^/#   /'
}
if [ ! -x "$F" ]; then
	echo "FAIL fuzz-lib build: $F missing (clang-14 with libFuzzer: libclang-rt-14-dev)"
	echo "0 passed, 1 failed"
	exit 1
fi
case_ seeds_replay "$F" -runs=0 "$seeds"
mkdir "$tmp/corpus"
case_ "reply_parser_${RUNS}_runs" "$F" -runs="$RUNS" -seed=1 -artifact_prefix="$tmp/" \
	"$tmp/corpus" "$seeds"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
