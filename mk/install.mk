# Installation: make install / make uninstall, DKMS, udev, systemd, man
# pages, and the suites that prove them (udev, dkms, install, systemd,
# manlint).
#
#   make install   [PREFIX=/usr/local] [DESTDIR=] [LIBDIR=$(PREFIX)/lib] ...
#   make uninstall (same variables): removes exactly what install put there
#   make dkms-install / dkms-uninstall   the module through DKMS (root)
#
# Every directory below can be overridden on the command line.  The udev,
# systemd, sysusers.d and modules-load.d directories follow PREFIX: with
# PREFIX=/usr they are the distribution's own, and with PREFIX=/usr/local
# they are the /usr/local/lib/... directories that udev, systemd,
# systemd-sysusers and systemd-modules-load also read.
#
# What is installed comes from the other components, by variable, so that
# each piece is installed as soon as it exists (a missing one is skipped
# with a note; the install suite requires the library and its header):
#   NVB_LIB_FILES        libnvbridge.a, libnvbridge.so* (symlinks kept) and the
#                        PyTorch allocator libnvbridge_torch.so beside them
#   NVB_PUBLIC_HEADERS   the library's public headers
#   NVB_BIN_PROGRAMS     programs for $(BINDIR) (nvbridgectl, nvbridge-bench)
#   NVB_SBIN_PROGRAMS    programs for $(SBINDIR) (nvbridged)
#   NVB_PC_REQUIRES_PRIVATE, NVB_PC_LIBS_PRIVATE   for static linking
# A component's mk file may set them (they are expanded when the recipes
# run, so the order of the mk files does not matter).


PREFIX      ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
BINDIR      ?= $(EXEC_PREFIX)/bin
SBINDIR     ?= $(EXEC_PREFIX)/sbin
LIBDIR      ?= $(EXEC_PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
DATADIR     ?= $(PREFIX)/share
MANDIR      ?= $(DATADIR)/man
DOCDIR      ?= $(DATADIR)/doc/nvbridge
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
NVB_DATADIR ?= $(DATADIR)/nvbridge
UDEVDIR     ?= $(PREFIX)/lib/udev
UDEVRULESDIR ?= $(UDEVDIR)/rules.d
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
MODULESLOADDIR ?= $(PREFIX)/lib/modules-load.d
NVB_SOCKET_PATH ?= /run/nvbridge/nvbridged.sock
DESTDIR     ?=

NVB_LIB_FILES = $(wildcard $(BUILD)/lib/libnvbridge.a $(BUILD)/lib/libnvbridge.so* $(BUILD)/lib/libnvbridge_torch.so)
# The Python package: Debian's interpreter reads /usr/lib/python3/dist-packages
# (PREFIX=/usr) and /usr/local/lib/python3.X/dist-packages (PREFIX=/usr/local).
# LIBDIR is recorded in the installed nvbridge/_paths.py.
NVB_PY_FILES = $(wildcard python/nvbridge/*.py python/nvbridge/py.typed)
NVB_PYVER = $(shell $(or $(NVB_PYTHON),python3) -c 'import sys; print("python%d.%d" % sys.version_info[:2])' 2>/dev/null || echo python3)
PYTHONDIR ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/python3/dist-packages,$(PREFIX)/lib/$(NVB_PYVER)/dist-packages)
NVB_PUBLIC_HEADERS = $(wildcard libnvbridge/nvbridge.h libnvbridge/nvbridge_uring.h \
	libnvbridge/nvbridge_gpu.h alloc/nvbridge_torch.h)
NVB_BIN_PROGRAMS = $(wildcard $(BUILD)/lib/nvbridgectl $(BUILD)/bench/nvbridge-bench)
NVB_SBIN_PROGRAMS = $(wildcard $(BUILD)/lib/nvbridged)
# The library's own template (libnvbridge/libnvbridge.pc.in: @PREFIX@,
# @LIBDIR@, @VERSION@) is used when it exists; it is filled in here, at
# install time, so that PREFIX and LIBDIR are the ones of "make install".
NVB_PC_IN = $(wildcard libnvbridge/libnvbridge.pc.in)
NVB_PC_VERSION = $(or $(LIB_VERSION),$(NVB_VERSION))
NVB_PC_REQUIRES_PRIVATE ?= liburing
NVB_PC_LIBS_PRIVATE ?= -ldl -pthread

# The kernel module for the udev and dkms suites.
NVB_KO ?= kmod/nvbridge.ko
NVB_KMOD_TARGET ?= module

INSTALL      ?= install
NVB_GEN      := $(BUILD)/install
NVB_MANPAGES = $(sort $(wildcard man/*.[1-8]))

# Substitutions for the *.in templates.
nvb_subst = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
	-e 's|@NVB_SOCKET_PATH@|$(NVB_SOCKET_PATH)|g' \
	-e 's|@NVB_SOCKET_DIR@|$(patsubst %/,%,$(dir $(NVB_SOCKET_PATH)))|g' \
	-e 's|@NVB_VERSION@|$(NVB_VERSION)|g' -e 's|@NVB_DATADIR@|$(NVB_DATADIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g'

CHECK_SUITES += udev dkms install systemd manlint

.PHONY: install install-files uninstall install-gen dkms-install dkms-uninstall \
	check-udev check-dkms check-install check-systemd check-manlint \
	udevtest dkmstest installtest systemdtest manlint

# ---------------------------------------------------------------- generated
install-gen:
	@mkdir -p $(NVB_GEN)
	@$(nvb_subst) systemd/nvbridged.service.in >$(NVB_GEN)/nvbridged.service
	@$(nvb_subst) systemd/nvbridged.socket.in >$(NVB_GEN)/nvbridged.socket
	@if [ -n "$(NVB_PC_IN)" ]; then \
		sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@VERSION@|$(NVB_PC_VERSION)|g' -e 's|^includedir=.*|includedir=$(INCLUDEDIR)|' \
			$(NVB_PC_IN) >$(NVB_GEN)/libnvbridge.pc; \
	else { \
		echo 'prefix=$(PREFIX)'; \
		echo 'libdir=$(LIBDIR)'; \
		echo 'includedir=$(INCLUDEDIR)'; \
		echo ''; \
		echo 'Name: libnvbridge'; \
		echo 'Description: credential-checked rendezvous for file descriptors and GPU memory (nvbridge)'; \
		echo 'Version: $(NVB_PC_VERSION)'; \
		echo 'Requires.private: $(NVB_PC_REQUIRES_PRIVATE)'; \
		echo 'Libs: -L$${libdir} -lnvbridge'; \
		echo 'Libs.private: $(NVB_PC_LIBS_PRIVATE)'; \
		echo 'Cflags: -I$${includedir}'; \
		} | sed -e 's|=$(PREFIX)/|=$${prefix}/|' >$(NVB_GEN)/libnvbridge.pc; \
	fi

# ---------------------------------------------------------------- install
# "install" builds what the other components build, then copies.
install: all
	@$(MAKE) --no-print-directory install-files

D := $(DESTDIR)
install-files: install-gen
	@set -e; \
	note() { echo "install: $$*"; }; \
	inst() { mode=$$1; dir=$$2; shift 2; for f in "$$@"; do \
		$(INSTALL) -d -m 0755 "$(D)$$dir"; \
		$(INSTALL) -m $$mode "$$f" "$(D)$$dir/"; \
		echo "  $$dir/$$(basename $$f)"; done; }; \
	if [ -n "$(strip $(NVB_LIB_FILES))" ]; then \
		$(INSTALL) -d -m 0755 "$(D)$(LIBDIR)"; \
		for f in $(NVB_LIB_FILES); do cp -P "$$f" "$(D)$(LIBDIR)/"; \
			[ -L "$$f" ] || chmod 0644 "$(D)$(LIBDIR)/$$(basename $$f)"; \
			case $$f in *.so*) [ -L "$$f" ] || chmod 0755 "$(D)$(LIBDIR)/$$(basename $$f)";; esac; \
			echo "  $(LIBDIR)/$$(basename $$f)"; done; \
		inst 0644 $(PKGCONFIGDIR) $(NVB_GEN)/libnvbridge.pc; \
	else note "libnvbridge not built: library and pkg-config file skipped"; fi; \
	if [ -n "$(strip $(NVB_PUBLIC_HEADERS))" ]; then inst 0644 $(INCLUDEDIR) $(NVB_PUBLIC_HEADERS); \
	else note "no public library header yet: skipped"; fi; \
	inst 0644 $(INCLUDEDIR)/linux include/uapi/linux/nvbridge.h; \
	if [ -n "$(strip $(NVB_BIN_PROGRAMS))" ]; then inst 0755 $(BINDIR) $(NVB_BIN_PROGRAMS); \
	else note "nvbridgectl / nvbridge-bench not built: skipped"; fi; \
	if [ -n "$(strip $(NVB_SBIN_PROGRAMS))" ]; then inst 0755 $(SBINDIR) $(NVB_SBIN_PROGRAMS); \
	else note "nvbridged not built: skipped"; fi; \
	$(INSTALL) -d -m 0755 "$(D)$(UDEVRULESDIR)" "$(D)$(MODULESLOADDIR)" "$(D)$(SYSUSERSDIR)"; \
	$(INSTALL) -m 0644 udev/60-nvbridge.rules "$(D)$(UDEVRULESDIR)/60-nvbridge.rules"; \
	$(INSTALL) -m 0644 udev/modules-load.conf "$(D)$(MODULESLOADDIR)/nvbridge.conf"; \
	$(INSTALL) -m 0644 udev/sysusers.conf "$(D)$(SYSUSERSDIR)/nvbridge.conf"; \
	echo "  $(UDEVRULESDIR)/60-nvbridge.rules $(MODULESLOADDIR)/nvbridge.conf $(SYSUSERSDIR)/nvbridge.conf"; \
	inst 0644 $(SYSTEMDUNITDIR) $(NVB_GEN)/nvbridged.service $(NVB_GEN)/nvbridged.socket; \
	inst 0644 $(NVB_DATADIR) udev/60-nvbridge-group.rules systemd/nvbridged-socket-group.conf; \
	for m in $(NVB_MANPAGES); do s=$${m##*.}; inst 0644 $(MANDIR)/man$$s $$m; done; \
	inst 0644 $(DOCDIR) $(wildcard README.md Documentation/*.rst); \
	if [ -n "$(strip $(NVB_PY_FILES))" ]; then \
		$(INSTALL) -d -m 0755 "$(D)$(PYTHONDIR)/nvbridge"; \
		$(INSTALL) -m 0644 $(NVB_PY_FILES) "$(D)$(PYTHONDIR)/nvbridge/"; \
		sed -i 's|^LIBDIR: Optional\[str\] = None$$|LIBDIR: Optional[str] = "$(LIBDIR)"|' \
			"$(D)$(PYTHONDIR)/nvbridge/_paths.py"; \
		echo "  $(PYTHONDIR)/nvbridge/ (Python package, libnvbridge from $(LIBDIR))"; \
		$(INSTALL) -m 0644 python/README.md "$(D)$(DOCDIR)/python.md"; \
	fi

uninstall:
	@for f in $(notdir $(NVB_LIB_FILES)); do rm -f "$(D)$(LIBDIR)/$$f"; done
	@rm -f "$(D)$(LIBDIR)"/libnvbridge.a "$(D)$(LIBDIR)"/libnvbridge.so "$(D)$(LIBDIR)"/libnvbridge.so.* \
		"$(D)$(LIBDIR)"/libnvbridge_torch.so
	@rm -f "$(D)$(PKGCONFIGDIR)/libnvbridge.pc"
	@rm -f $(foreach h,$(notdir $(NVB_PUBLIC_HEADERS)),"$(D)$(INCLUDEDIR)/$(h)")
	@rm -f "$(D)$(INCLUDEDIR)/linux/nvbridge.h"
	@rm -f "$(D)$(BINDIR)/nvbridgectl" "$(D)$(BINDIR)/nvbridge-bench" "$(D)$(SBINDIR)/nvbridged"
	@rm -f "$(D)$(UDEVRULESDIR)/60-nvbridge.rules" "$(D)$(MODULESLOADDIR)/nvbridge.conf" \
		"$(D)$(SYSUSERSDIR)/nvbridge.conf"
	@rm -f "$(D)$(SYSTEMDUNITDIR)/nvbridged.service" "$(D)$(SYSTEMDUNITDIR)/nvbridged.socket"
	@rm -rf "$(D)$(NVB_DATADIR)" "$(D)$(DOCDIR)" "$(D)$(PYTHONDIR)/nvbridge"
	@for m in $(notdir $(NVB_MANPAGES)); do rm -f "$(D)$(MANDIR)/man$${m##*.}/$$m"; done
	@# In a staging tree (DESTDIR set) also remove the directories that are
	@# empty now, up to DESTDIR; on a live system shared directories stay.
	@if [ -n "$(DESTDIR)" ]; then \
		for d in "$(PKGCONFIGDIR)" "$(LIBDIR)" "$(INCLUDEDIR)/linux" "$(BINDIR)" "$(SBINDIR)" \
			"$(UDEVRULESDIR)" "$(MODULESLOADDIR)" "$(SYSUSERSDIR)" "$(SYSTEMDUNITDIR)" \
			$(foreach s,1 3 4 7 8,"$(MANDIR)/man$(s)") "$(DOCDIR)" "$(NVB_DATADIR)" "$(PYTHONDIR)"; do \
			while [ -n "$$d" ] && [ "$$d" != / ] && [ "$$d" != . ]; do \
				if [ -d "$(D)$$d" ]; then rmdir "$(D)$$d" 2>/dev/null || break; fi; \
				d=$$(dirname "$$d"); done; \
		done; \
	fi
	@echo "uninstall: done"

# ---------------------------------------------------------------- DKMS
NVB_DKMS_SRC := /usr/src/nvbridge-$(NVB_VERSION)
dkms-install:
	rm -rf $(NVB_DKMS_SRC) && mkdir -p $(NVB_DKMS_SRC)/include/uapi
	cp dkms.conf Kbuild $(NVB_DKMS_SRC)/
	cp -r include/uapi/linux $(NVB_DKMS_SRC)/include/uapi/
	cd kmod && find . -name '*.[ch]' -o -name Kbuild -o -name Kconfig | \
		while read -r f; do mkdir -p "$(NVB_DKMS_SRC)/kmod/$$(dirname $$f)"; \
		cp "$$f" "$(NVB_DKMS_SRC)/kmod/$$f"; done
	dkms add nvbridge/$(NVB_VERSION)
	dkms install nvbridge/$(NVB_VERSION)

dkms-uninstall:
	-dkms remove nvbridge/$(NVB_VERSION) --all
	rm -rf $(NVB_DKMS_SRC)

# ---------------------------------------------------------------- suites
# The module build's output goes to a log that is shown when it fails, so
# that the suite's own log says why "module built" failed.
udevtest:
	@mkdir -p $(BUILD)
	@$(MAKE) --no-print-directory $(NVB_KMOD_TARGET) >$(BUILD)/udev-module-build.log 2>&1 || \
		{ echo "udev: building the module failed:"; sed 's/^/     /' $(BUILD)/udev-module-build.log; }
	@$(MAKE) --no-print-directory install-files DESTDIR=$(BUILD)/udev-stage PREFIX=/usr >/dev/null
	NVB_KO=$(NVB_KO) ./tests/install/udev-test $(BUILD)/udev-stage
check-udev:
	$(call nvb_suite,$(MAKE) --no-print-directory udevtest,udev)

dkmstest:
	NVB_VERSION=$(NVB_VERSION) ./tests/install/dkms-test
check-dkms:
	$(call nvb_suite,NVB_VERSION=$(NVB_VERSION) ./tests/install/dkms-test,dkms)

installtest:
	-@$(MAKE) --no-print-directory all >/dev/null
	NVB_PC_VERSION=$(NVB_PC_VERSION) ./tests/install/install-test
check-install:
	$(call nvb_suite,$(MAKE) --no-print-directory installtest,install)

systemdtest: install-gen
	./tests/install/systemd-test
check-systemd:
	$(call nvb_suite,$(MAKE) --no-print-directory systemdtest,systemd)

manlint:
	./tests/install/manlint
check-manlint:
	$(call nvb_suite,./tests/install/manlint,manlint)
