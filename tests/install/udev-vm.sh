#!/bin/sh
# Runs inside the test VM (busybox sh, as root), started by udev-test:
# a real systemd-udevd applies the installed nvbridge rules to /dev/nvbridge
# on hotplug (systemd-modules-load, modprobe) and on coldplug (udevadm
# trigger), for the default rules and the group-narrowed variant.
# $1: the ABI version the module must report (the UAPI header's)
abi=${1:?ABI version}
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
check_eq() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1 (expected '$2', got '$3')"; fi; }
node() { stat -c '%F %a %u %g' /dev/nvbridge 2>/dev/null || echo none; }
loaded() { grep -q '^nvbridge ' /proc/modules; }
settle() { udevadm settle --timeout=60; }
as_user() { u=$1; shift; su -s /bin/sh "$u" -c "$*" </dev/null >/dev/null 2>&1; }
start_udevd() {
	/lib/systemd/systemd-udevd --daemon --resolve-names=early
	i=0
	while ! udevadm control --ping 2>/dev/null; do
		i=$((i + 1)); [ $i -lt 100 ] || return 1; usleep 100000
	done
}
stop_udevd() {
	udevadm control --exit
	i=0
	while pidof systemd-udevd >/dev/null; do
		i=$((i + 1)); [ $i -lt 100 ] || return 1; usleep 100000
	done
}
props() { udevadm info --query=property --name=/dev/nvbridge 2>/dev/null; }
prop() { props | sed -n "s/^$1=//p"; }
echo "kernel $(uname -r), $(udevadm --version | head -n 1 | sed 's/^/udev /')"

# --- sysusers.d creates the group; a member and a non-member ----------
check "systemd-sysusers (sysusers.d/nvbridge.conf)" systemd-sysusers
gid=$(awk -F: '$1 == "nvbridge" { print $3 }' /etc/group)
check "group nvbridge exists after systemd-sysusers" [ -n "$gid" ]
echo "nvbuser:x:1001:1001:nvbridge group member:/tmp:/bin/sh" >>/etc/passwd
echo "nvbuser:x:1001:" >>/etc/group
sed -i "s/^nvbridge:x:$gid:.*/nvbridge:x:$gid:nvbuser/" /etc/group

# --- default rules, hotplug through modules-load.d ---------------------
check "systemd-udevd starts and answers udevadm control --ping" start_udevd
check "module not loaded yet" sh -c '! grep -q "^nvbridge " /proc/modules'
check "systemd-modules-load (modules-load.d/nvbridge.conf) loads it" /lib/systemd/systemd-modules-load
check "nvbridge is in /proc/modules" loaded
settle
check_eq "default rules: character device, mode 0666, root:root" "character special file 666 0 0" "$(node)"
check_eq "udevadm info: DEVNAME" /dev/nvbridge "$(prop DEVNAME)"
check_eq "udevadm info: SUBSYSTEM" misc "$(prop SUBSYSTEM)"
check_eq "udevadm info: NVBRIDGE_ABI_VERSION (from sysfs abi_version)" \
	"$(cat /sys/class/misc/nvbridge/abi_version 2>/dev/null || echo no-sysfs-attr)" "$(prop NVBRIDGE_ABI_VERSION)"
check_eq "udevadm info: NVBRIDGE_ABI_VERSION is $abi" "$abi" "$(prop NVBRIDGE_ABI_VERSION)"
check_eq "udevadm info: NVBRIDGE_BACKEND" kernel "$(prop NVBRIDGE_BACKEND)"
check "udevadm info: TAGS has :systemd:" sh -c 'udevadm info --query=property --name=/dev/nvbridge | grep -q "^TAGS=.*:systemd:"'
check "udevadm info -a: ATTR{abi_version}==\"$abi\"" sh -c "udevadm info --attribute-walk --name=/dev/nvbridge | grep -q 'ATTR{abi_version}==\"$abi\"'"
check "default rules: nobody may open /dev/nvbridge" as_user nobody 'exec 3<>/dev/nvbridge'

# --- removal -----------------------------------------------------------
check "modprobe -r nvbridge" /sbin/modprobe -r nvbridge
settle
check_eq "node gone after removal" none "$(node)"
check "udev database entry gone" sh -c '! udevadm info --name=/dev/nvbridge >/dev/null 2>&1'

# --- group variant, hotplug through modprobe ---------------------------
mkdir -p /etc/udev/rules.d
cp /nvb/60-nvbridge-group.rules /etc/udev/rules.d/60-nvbridge.rules
udevadm control --reload
check "modprobe nvbridge (modules.dep from depmod)" /sbin/modprobe nvbridge
settle
check_eq "group rules: mode 0660, root:nvbridge" "character special file 660 0 $gid" "$(node)"
check "group rules: nobody (not a member) is refused" sh -c '! su -s /bin/sh nobody -c "exec 3<>/dev/nvbridge" </dev/null >/dev/null 2>&1'
check "group rules: nvbuser (member of nvbridge) may open" as_user nvbuser 'exec 3<>/dev/nvbridge'
check_eq "group rules: NVBRIDGE_ABI_VERSION still set" "$abi" "$(prop NVBRIDGE_ABI_VERSION)"

# --- coldplug: module loaded before udevd, then udevadm trigger --------
check "udevd stops (udevadm control --exit)" stop_udevd
/sbin/modprobe -r nvbridge
insmod "/lib/modules/$(uname -r)/extra/nvbridge.ko"
before=$(node)
echo "    devtmpfs alone gives: $before"
check "without udevd the node is not root:nvbridge 0660" [ "$before" != "character special file 660 0 $gid" ]
check "systemd-udevd restarts" start_udevd
udevadm trigger --action=add --subsystem-match=misc --sysname-match=nvbridge
settle
check_eq "coldplug (udevadm trigger): mode 0660, root:nvbridge" "character special file 660 0 $gid" "$(node)"
check "coldplug: udevadm info has NVBRIDGE_BACKEND" [ "$(prop NVBRIDGE_BACKEND)" = kernel ]
stop_udevd
rmmod nvbridge

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
