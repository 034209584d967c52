#!/bin/sh
# lib-unit: library unit tests (nvb-unit), the exported symbol set, nvbridged's
# command line / socket / activation / shutdown behaviour, nvbridgectl's
# output and exit codes.  Last line: "N passed, M failed".
# usage: run-unit.sh BUILD_LIB_DIR [ASAN]   (ASAN=1: sanitizer build, no .so checks)
B=${1:?build dir}
ASAN=${2:-0}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
pass=0
fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1${2:+: $2}"; fail=$((fail + 1)); return 1; }
t() { name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }

tmp=$(mktemp -d /tmp/nvb-unit.XXXXXX)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
# the ABI version nvbridgectl reports: the UAPI header's
abi=$(awk '$2 == "NVBRIDGE_ABI_VERSION" { print $3 }' "$(dirname "$0")/../../include/uapi/linux/nvbridge.h")

# 1. the C unit tests
NVB_TEST_DAEMON="$B/nvbridged" "$B/nvb-unit" >"$tmp/unit.out" 2>&1
cat "$tmp/unit.out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp/unit.out" | tail -n 1)
if [ -n "$line" ]; then
	pass=$((pass + ${line%% passed*}))
	f=${line#*passed, }
	fail=$((fail + ${f%% failed*}))
else
	bad "nvb-unit" "no result line"
fi

# 1b. nvbridged's keyed hash (daemon/hash.c) and tables (daemon/htable.c)
if [ -x "$B/nvb-daemon-hash" ]; then
	t "daemon_siphash_vectors" "$B/nvb-daemon-hash" vectors
	t "daemon_htable_grows" "$B/nvb-daemon-hash" htable
elif [ "$ASAN" = 0 ]; then
	bad "daemon_hash_tests" "nvb-daemon-hash is missing"
fi
# INFO's counters and LIST's id lists (daemon/visible.c)
if [ -x "$B/nvb-daemon-visible" ]; then
	t "daemon_visible_oracle" "$B/nvb-daemon-visible" oracle
	t "daemon_visible_memory" "$B/nvb-daemon-visible" memory
	t "daemon_visible_vorder" "$B/nvb-daemon-visible" vorder
elif [ "$ASAN" = 0 ]; then
	bad "daemon_visible_tests" "nvb-daemon-visible is missing"
fi

# 2. the shared library exports exactly the versioned nvb_* API
if [ "$ASAN" = 0 ] && [ ! -e "$B/libnvbridge.so" ]; then
	bad "so_built" "libnvbridge.so is missing (it includes the GPU layer's objects)"
elif [ "$ASAN" = 0 ]; then
	syms=$(nm -D --defined-only "$B/libnvbridge.so" | awk '$2 == "T" {print $3}')
	nonapi=$(echo "$syms" | grep -v '^nvb_' | grep -v '^$')
	unver=$(echo "$syms" | grep -Ev '@@?LIBNVBRIDGE_1\.[0-9]+$')
	t "so_exports_only_nvb_api" sh -c '[ -z "$1" ] && [ -z "$2" ] && [ -n "$3" ]' _ \
		"$nonapi" "$unver" "$syms"
	# exactly the functions the public headers declare: no internal
	# helper exported, no declared function missing from the map
	decl=$(cat "$ROOT"/libnvbridge/nvbridge.h "$ROOT"/libnvbridge/nvbridge_gpu.h \
		"$ROOT"/libnvbridge/nvbridge_uring.h |
		grep -oE '^[a-z][a-z0-9_ ]*[ *](nvb_[a-z0-9_]+)\(' | grep -v '^static' |
		grep -oE 'nvb_[a-z0-9_]+' | sort -u)
	expo=$(echo "$syms" | sed 's/@.*//' | sort -u)
	t "so_exports_match_public_headers" bash -c '[ "$1" = "$2" ] || { echo "declared vs exported:"; diff <(echo "$1") <(echo "$2"); false; }' _ \
		"$decl" "$expo"
	t "so_soname" sh -c "readelf -d '$B/libnvbridge.so' | grep -q 'SONAME.*libnvbridge.so.1'"
	t "so_no_liburing_dependency" sh -c "! readelf -d '$B/libnvbridge.so' | grep -q 'liburing'"
	t "pc_file" grep -q '^Libs: -L${libdir} -lnvbridge' "$B/libnvbridge.pc"
	# a program built against the .so alone runs
	cat >"$tmp/p.c" <<'EOF'
#include <nvbridge.h>
#include <string.h>
int main(void) { return strcmp(nvb_backend_name(NVB_BACKEND_BROKER), "broker") != 0; }
EOF
	t "link_against_so" sh -c "cc -std=c11 -Wall -Werror -I'$(dirname "$0")/../../libnvbridge' '$tmp/p.c' -L'$B' -lnvbridge -o '$tmp/p' && LD_LIBRARY_PATH='$B' '$tmp/p'"
fi

# 3. nvbridged
D=$B/nvbridged
C=$B/nvbridgectl
sock=$tmp/run/d.sock
"$D" --socket "$sock" --mode 0600 2>"$tmp/d.log" &
dpid=$!
i=0; while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
t "daemon_creates_socket_dir_and_socket" [ -S "$sock" ]
t "daemon_socket_mode" [ "$(stat -c %a "$sock")" = 600 ]
t "daemon_refuses_second_instance" sh -c "! '$D' --socket '$sock' 2>/dev/null"
t "daemon_still_listening_after_refusal" [ -S "$sock" ]
t "daemon_bad_option_exit_2" sh -c "'$D' --max-blob-size 99999999 2>/dev/null; [ \$? = 2 ]"
export NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET=$sock

# 4. nvbridgectl against it
t "ctl_info" sh -c "'$C' info | grep -q '^backend *broker'"
t "ctl_global_options_after_command" sh -c "'$C' info --backend broker --socket '$sock' | grep -q '^backend *broker'"
t "ctl_info_json" sh -c "'$C' --json info | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"backend\"]==\"broker\" and d[\"abi_version\"]==$abi'"
# a publishable file is memory-backed: on tmpfs (/tmp may be a disk; the
# refusal of others is ctl_publish_not_memory_einval below)
shm=$(mktemp -d /dev/shm/nvb-unit.XXXXXX)
trap 'rm -rf "$tmp" "$shm"' EXIT
head -c 3000 /dev/urandom >"$shm/data"
cp "$shm/data" "$tmp/data"
"$C" publish ctl/a --file "$shm/data" --blob hello --access scope --for 10 >"$tmp/pub.out" &
ppid=$!
i=0; while ! grep -q published "$tmp/pub.out" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
t "ctl_publish_prints" grep -q '^published ctl/a id [0-9]' "$tmp/pub.out"
t "ctl_list_json" sh -c "'$C' list --json | python3 -c 'import json,sys; l=json.load(sys.stdin); assert [e for e in l if e[\"name\"]==\"ctl/a\" and e[\"has_fd\"] and e[\"access\"]==\"scope\"]'"
t "ctl_fetch_file_roundtrip" sh -c "'$C' fetch ctl/a --out '$tmp/got' >/dev/null && cmp -s '$tmp/data' '$tmp/got'"
t "ctl_fetch_blob" sh -c "[ \"\$('$C' fetch ctl/a --blob-out -)\" = hello ]"
t "ctl_fetch_json" sh -c "'$C' --json fetch ctl/a | python3 -c 'import json,sys; e=json.load(sys.stdin); assert e[\"blob_len\"]==5'"
t "ctl_fetch_expect_uid_match" sh -c "'$C' fetch ctl/a --expect-uid $(id -u) >/dev/null"
t "ctl_fetch_expect_uid_other_3" sh -c "'$C' fetch ctl/a --expect-uid 4321 2>/dev/null; [ \$? = 3 ]"
t "ctl_exit_not_found_3" sh -c "'$C' fetch ctl/none 2>/dev/null; [ \$? = 3 ]"
t "ctl_exit_timeout_5" sh -c "'$C' fetch ctl/none --wait --timeout 0.2 2>/dev/null; [ \$? = 5 ]"
t "ctl_publish_not_memory_einval" sh -c "'$C' publish ctl/p --file /proc/version --for 0 2>&1 >/dev/null | grep -q 'Invalid argument' && ! '$C' fetch ctl/p >/dev/null 2>&1"
t "ctl_exit_exists_6" sh -c "'$C' publish ctl/a --for 0 >/dev/null 2>&1; [ \$? = 6 ]"
t "ctl_exit_usage_2" sh -c "'$C' frobnicate 2>/dev/null; [ \$? = 2 ]"
t "ctl_exit_denied_4" sh -c "'$C' publish ctl/own --for 5 >/dev/null & sleep 0.3; setpriv --reuid 4321 --regid 4321 --clear-groups '$C' fetch ctl/own 2>/dev/null; r=\$?; wait; [ \$r = 4 ]"
# two users publish one name: a clear message and exit 9 until --expect-uid says whose
# (a second broker with a socket other users may reach)
"$D" --socket "$tmp/run2/d.sock" 2>"$tmp/d2.log" &
d2pid=$!
i=0; while [ ! -S "$tmp/run2/d.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
NVBRIDGE_SOCKET=$tmp/run2/d.sock "$C" publish ctl/two --access scope --for 3 >/dev/null &
NVBRIDGE_SOCKET=$tmp/run2/d.sock setpriv --reuid 4321 --regid 4321 --clear-groups \
	"$C" publish ctl/two --access scope --for 3 >/dev/null &
sleep 0.4
t "ctl_exit_notuniq_9" sh -c "NVBRIDGE_SOCKET='$tmp/run2/d.sock' '$C' fetch ctl/two 2>'$tmp/nu.err'; [ \$? = 9 ] && grep -q -- --expect-uid '$tmp/nu.err'"
t "ctl_notuniq_expect_uid" sh -c "NVBRIDGE_SOCKET='$tmp/run2/d.sock' '$C' fetch ctl/two --expect-uid 4321 >/dev/null"
kill "$d2pid" 2>/dev/null
wait "$d2pid" 2>/dev/null
t "ctl_error_json" sh -c "'$C' --json fetch ctl/none | python3 -c 'import json,sys; e=json.load(sys.stdin); assert e[\"errno\"]==2'"
"$C" watch ctl/w --count 2 --json --timeout 10 >"$tmp/watch.out" &
wpid=$!
sleep 0.3
"$C" publish ctl/w/x --for 0.1 >/dev/null
wait $wpid
t "ctl_watch_stream" sh -c "python3 -c '
import json
ev=[json.loads(l) for l in open(\"$tmp/watch.out\")]
assert [e[\"type\"] for e in ev]==[\"published\",\"revoked\"], ev
assert ev[1][\"reason\"]==\"closed\" and ev[0][\"name\"]==\"ctl/w/x\"'"
kill $ppid 2>/dev/null
wait $ppid
t "ctl_publish_sigterm_exit_0" [ $? = 0 ]
t "ctl_no_backend_7" sh -c "NVBRIDGE_SOCKET=$tmp/none.sock '$C' info 2>/dev/null; [ \$? = 7 ]"

# 5. SIGTERM: clean exit, socket removed
kill -TERM $dpid
wait $dpid
t "daemon_sigterm_exit_0" [ $? = 0 ]
t "daemon_sigterm_removes_socket" [ ! -e "$sock" ]
if [ -s "$tmp/d.log" ] && grep -qi 'ERROR: AddressSanitizer\|runtime error' "$tmp/d.log"; then
	bad "daemon_sanitizer_clean" "$(head -5 "$tmp/d.log")"
fi

# 5b. --group: the socket's group; a member gets in, others are refused by the mode
gsock=$tmp/g.sock
"$D" --socket "$gsock" --mode 0660 --group 4242 2>>"$tmp/d.log" &
gpid=$!
i=0; while [ ! -S "$gsock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
t "daemon_group_and_mode" [ "$(stat -c %a:%g "$gsock")" = 660:4242 ]
t "daemon_group_member_connects" sh -c "NVBRIDGE_SOCKET='$gsock' setpriv --reuid 4300 --regid 4300 --groups 4242 '$C' info >/dev/null"
t "daemon_non_member_refused" sh -c "NVBRIDGE_SOCKET='$gsock' setpriv --reuid 4300 --regid 4300 --clear-groups '$C' info 2>/dev/null; [ \$? = 4 ]"
kill -TERM $gpid
wait $gpid

# 5c. the hardened unit's setup: a non-root broker with only CAP_SYS_PTRACE
# (DynamicUser= + AmbientCapabilities=CAP_SYS_PTRACE) still reads every
# client's namespaces: run the identity-sensitive conformance cases on it
if [ "$(id -u)" = 0 ]; then
	usock=$tmp/u/u.sock
	# the broker's own directory, as RuntimeDirectory= gives a DynamicUser:
	# clients trust a broker that owns the socket's directory (libnvbridge)
	mkdir -p "$tmp/u" && chown 61999:61999 "$tmp/u" && chmod 755 "$tmp/u"
	setpriv --reuid 61999 --regid 61999 --clear-groups --inh-caps +sys_ptrace \
		--ambient-caps +sys_ptrace "$D" --socket "$usock" 2>>"$tmp/d.log" &
	upid=$!
	i=0; while [ ! -S "$usock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET=$usock "$B/nvb-conformance" share_memfd_two_processes \
		access_owner access_group access_cap_ipc_owner ipc_namespace_scope \
		user_namespace_ids pid_namespace_pids event_revoked_exited self_publish_refused \
		fetch_expect_uid \
		>"$tmp/u.out" 2>&1
	t "daemon_nonroot_cap_sys_ptrace" grep -q '^10 passed, 0 failed' "$tmp/u.out" || cat "$tmp/u.out"
	kill -TERM $upid
	wait $upid
fi

# 6. systemd socket activation (LISTEN_FDS): python binds, then execs nvbridged as fd 3
asock=$tmp/act.sock
python3 - "$D" "$asock" 2>"$tmp/act.log" <<'EOF' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[2]); s.listen(8)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execve(sys.argv[1], [sys.argv[1]], env)
EOF
apid=$!
i=0; while ! NVBRIDGE_SOCKET="$asock" "$C" info >/dev/null 2>&1 && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
t "daemon_socket_activation" sh -c "NVBRIDGE_SOCKET='$asock' '$C' info | grep -q broker"
kill -TERM $apid
wait $apid
t "daemon_activated_sigterm_exit_0" [ $? = 0 ]
t "daemon_activated_keeps_socket" [ -S "$asock" ]

# 6b. activation without PassCredentials=: the listening socket never had
# SO_PASSCRED, and the first client connected before nvbridged even started
# (tests/install/sockact.py waits for it, as systemd does).  Its HELLO must
# still carry SCM_CREDENTIALS: the broker sets SO_PASSCRED on each accepted
# socket (newer kernels copy the listener's flag at connect()).
nsock=$tmp/nopass.sock
python3 "$(dirname "$0")/../install/sockact.py" "$nsock" 0666 "$D" >"$tmp/nopass.out" 2>"$tmp/nopass.log" &
npid=$!
i=0; while [ ! -S "$nsock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
NVBRIDGE_SOCKET="$nsock" "$C" info >"$tmp/nopass.info" 2>&1
t "daemon_activated_without_passcred_first_client" grep -q '^backend *broker' "$tmp/nopass.info" ||
	{ cat "$tmp/nopass.info"; sed 's/^/#   /' "$tmp/nopass.log"; }
t "daemon_activated_without_passcred_no_drop" sh -c "! grep -q 'dropping client' '$tmp/nopass.log'"
kill -TERM $npid
wait $npid

echo "$pass passed, $fail failed"
