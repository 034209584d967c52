#!/bin/bash
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
# FUSE is a module in Debian's 6.1 kernel (built in since 6.12): the VM
# gets fuse.ko from the same linux-image package as its vmlinuz, kept in
# the cache, so that publish_fuse_file_einval runs on this backend too.
# Without it the case skips here and not on the broker: the diff below fails.
fuse_args=()
kver=$(modinfo -F vermagic "${NVB_MODULE:-$here/kmod/nvbridge.ko}" 2>/dev/null | cut -d' ' -f1)
cache=${NVB_CACHE:-$HOME/.cache/nvbridge}/vm
fuse_ko=$cache/fuse-$kver.ko
if [ -n "$kver" ] && [ ! -s "$fuse_ko" ]; then
	ver=$(dpkg-query -W -f '${Version}' "linux-headers-$kver" 2>/dev/null || true)
	dl=$(mkdir -p "$cache" && mktemp -d "$cache/dl.XXXXXX")
	if (cd "$dl" && apt-get download "linux-image-$kver${ver:+=$ver}") >"$dl/apt.log" 2>&1; then
		dpkg-deb --fsys-tarfile "$dl"/*.deb |
			tar -x -C "$dl" --wildcards "./lib/modules/$kver/kernel/fs/fuse/fuse.ko" &&
			mv "$dl/lib/modules/$kver/kernel/fs/fuse/fuse.ko" "$fuse_ko"
	else
		echo "# conformance-kernel: no fuse.ko for $kver (apt-get download failed)"
	fi
	rm -rf "$dl"
fi
if [ -s "$fuse_ko" ]; then
	setup=$(mktemp /tmp/nvb-kconf-setup.XXXXXX)
	echo 'grep -qw fuse /proc/filesystems || insmod /nvb/fuse.ko' >"$setup"
	fuse_args=(-a "$fuse_ko:/nvb/fuse.ko" -s "$setup")
fi
"$here/tests/vm/run" -q "${fuse_args[@]}" -- "$B/nvb-conformance-static" -b kernel >"$out" 2>&1
rc=$?
rm -f "${setup:-}"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
grep -v -E '^[0-9]+ passed, [0-9]+ failed' "$out"
if [ -z "$line" ]; then
	echo "conformance-kernel: no result from the VM (status $rc)"
	line="0 passed, 1 failed"
elif [ "$rc" != 0 ] && [ "$rc" != 1 ]; then
	# 126: the kernel log showed a WARNING/BUG/KASAN report; 124/125: the VM
	# timed out or failed after the summary was printed
	echo "# FAIL: the VM ended with status $rc after the suite (see above)"
	p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
	line="$p passed, $((f + 1)) failed"
fi
# the same case list as the broker run (when it ran first in this check)
blog=${RESULTS:-$here/build/results}/conformance-broker.log
if [ -f "$blog" ]; then
	cases() { grep -E '^(ok|FAIL|skip) +[0-9]+ ' "$1" | awk '{print $2, $3}'; }
	if [ "$(cases "$out")" = "$(cases "$blog")" ]; then
		echo "# case list identical to conformance-broker's ($(cases "$out" | wc -l) cases)"
		# Documentation/module-vs-broker.rst: the same answers on both
		# backends; the only differences are the documented skips:
		# broker_restart (no broker process on the kernel backend) and
		# override_by_capability (the broker reads no capability, C6)
		diffs=$(paste -d' ' <(grep -E '^(ok|FAIL|skip) +[0-9]+ ' "$out" | awk '{print $3, $1}') \
			<(grep -E '^(ok|FAIL|skip) +[0-9]+ ' "$blog" | awk '{print $1}') 2>/dev/null |
			awk '$2 != $3 && !($1 == "broker_restart" && $2 == "skip" && $3 == "ok") &&
			     !($1 == "override_by_capability" && $2 == "ok" && $3 == "skip") {
				print "#   " $1 ": " $2 " / " $3 }')
		if [ -n "$diffs" ]; then
			echo "# FAIL: results that differ (status kernel / broker):"
			echo "$diffs"
			p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
			line="$p passed, $((f + 1)) failed"
		fi
	else
		echo "# FAIL: the case list differs from conformance-broker's"
		p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
		line="$p passed, $((f + 1)) failed"
	fi
fi
echo "$line"
rm -f "$out"
exit $rc
