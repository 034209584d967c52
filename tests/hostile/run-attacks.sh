#!/bin/bash
# Suite "attacks": whole-scenario attacks on nvbridged, one program each
# (tests/hostile/attack_*.c).  Each exits 0 when the attack worked (a hole:
# the case fails), 1 when it did not (passes), 2 when it could not set up.
# A setup failure where user namespaces are refused is a skip with the
# reason every suite gives; anywhere else it fails.
# Usage: run-attacks.sh NVBRIDGED BINDIR
set -u
daemon=$1
bindir=$2
pass=0
fail=0
userns=yes
unshare -U true 2>/dev/null || userns=no
for prog in "$bindir"/attack_*; do
	name=$(basename "$prog")
	timeout 120 "$prog" "$daemon"
	rc=$?
	case $rc in
	1) echo "ok   $name: the attack did not work"; pass=$((pass + 1)) ;;
	0) echo "FAIL $name: the attack worked"; fail=$((fail + 1)) ;;
	2) if [ "$userns" = no ]; then
		echo "skip $name: no user namespaces here (counted as passed)"
		pass=$((pass + 1))
	   else
		echo "FAIL $name: could not set up (exit 2)"; fail=$((fail + 1))
	   fi ;;
	77) echo "skip $name (counted as passed)"; pass=$((pass + 1)) ;;
	*) echo "FAIL $name: exit $rc"; fail=$((fail + 1)) ;;
	esac
done
[ $((pass + fail)) -gt 0 ] || { echo "FAIL no attack programs in $bindir"; fail=1; }
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
