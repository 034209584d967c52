# nvbridge.ko, built against Debian 12's 6.1 headers (or KDIR=...).
#
# KVER defaults to the version of the installed linux-headers-*-amd64
# package, so that the module matches the kernel image the VM boots.

# The release the linux-headers-amd64 metapackage points to (Debian 12's
# default kernel), not merely the newest headers present: a host may also
# carry newer headers for the newer-kernel suite (mk/newer-kernel.mk).
#
# These are derived from installed packages, which "make check" and "make
# run" install only after this file is parsed.  So an empty KVER (from the
# environment of a parent make, or from a lookup before the headers were
# there) counts as unset and is looked up again, and nothing derived from an
# empty KVER is exported: each recursive make (one per suite) looks again.
ifeq ($(strip $(KVER)),)
KVER := $(shell dpkg-query -W -f '$${Depends}' linux-headers-amd64 2>/dev/null | \
	grep -o 'linux-headers-[^ ,]*-amd64' | head -n 1 | sed 's/^linux-headers-//')
endif
ifeq ($(strip $(KVER)),)
KVER := $(shell ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sed 's|.*/linux-headers-||' | sort -V | tail -n 1)
endif
ifneq ($(strip $(KVER)),)
ifeq ($(strip $(KDIR)),)
KDIR := /usr/src/linux-headers-$(KVER)
endif
export KVER
endif
ifneq ($(strip $(KDIR)),)
export KDIR
endif

KMOD_SRCS := Kbuild $(wildcard kmod/Kbuild kmod/*.c kmod/*.h kmod/probes/*.c) include/uapi/linux/nvbridge.h

.PHONY: module module-clean
all: module

module: kmod/nvbridge.ko

kmod/nvbridge.ko: $(KMOD_SRCS)
	@test -n "$(KDIR)" && test -d "$(KDIR)" || \
		{ echo "no kernel headers (KDIR='$(KDIR)'; 'make deps' installs them)"; exit 1; }
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules

module-clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean
