#!/bin/sh
# lib-hostile: libnvbridge against hung, dying, lying and foreign brokers and
# fork() (tests/unit/hostile.c), in the plain build and under ASan + UBSan.
# usage: run-hostile.sh BUILD_LIB_DIR BUILD_LIB_ASAN_DIR   (last line: "N passed, M failed")
B=${1:?build dir}
A=${2:?asan build dir}
pass=0
fail=0
for v in "$B" "$A"; do
	echo "# $v/nvb-hostile"
	NVB_TEST_DAEMON=$B/nvbridged "$v/nvb-hostile" >"$v/hostile.out" 2>&1
	# case names get the build's name: hostile[lib], hostile[lib-asan]
	sed -E "s/^(ok  |FAIL) hostile /\1 hostile[$(basename "$v")] /" "$v/hostile.out" |
		grep -v -E '^[0-9]+ passed, [0-9]+ failed'
	if grep -q 'ERROR: AddressSanitizer\|runtime error' "$v/hostile.out"; then
		echo "FAIL sanitizer report in $v/hostile.out"
		fail=$((fail + 1))
	fi
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$v/hostile.out" | tail -n 1)
	if [ -z "$line" ]; then
		echo "FAIL $v/nvb-hostile: no result line"
		fail=$((fail + 1))
		continue
	fi
	pass=$((pass + ${line%% passed*}))
	f=${line#*passed, }
	fail=$((fail + ${f%% failed*}))
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
