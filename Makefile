# nvbridge top-level Makefile.
#
#   make            build everything that builds on this host
#   make run        the main job (see README.md)
#   make check      install what is needed, build, run every suite, print
#                   "N passed, M failed"
#
# Each component adds its own targets in mk/<component>.mk.  A test suite
# registers itself by appending its name to CHECK_SUITES and providing a
# target "check-<name>" that writes its full output to
# $(RESULTS)/<name>.log; the log's last "N passed, M failed" line is what
# counts (no such line counts as one failure).

BUILD     ?= $(CURDIR)/build
RESULTS   := $(BUILD)/results
NVB_CACHE ?= $(HOME)/.cache/nvbridge
CC        ?= gcc
UAPI_INC  := -I$(CURDIR)/include/uapi
# one version for the library, pkg-config, DKMS and the tests: the public
# header's NVB_VERSION_MAJOR.MINOR.PATCH
NVB_VERSION := $(shell sed -n 's/^\#define NVB_VERSION_\(MAJOR\|MINOR\|PATCH\)[[:space:]]*\([0-9]*\).*/\2/p' \
	libnvbridge/nvbridge.h | paste -sd.)

export BUILD RESULTS NVB_CACHE NVB_VERSION

CHECK_SUITES :=

.PHONY: all check check-fresh run deps clean
all:

# $(call nvb_suite,COMMAND,NAME): a check-NAME recipe that runs COMMAND and
# keeps its output, "N passed, M failed" last, in $(RESULTS)/NAME.log.
nvb_suite = @mkdir -p $(RESULTS) && bash -o pipefail -c '$(1) 2>&1 | tee $(RESULTS)/$(2).log'

include $(sort $(wildcard mk/*.mk))

deps:
	./scripts/install-deps

# Suites run one after another; a failing suite does not stop the others.
check: deps
	@rm -rf $(RESULTS) && mkdir -p $(RESULTS)
	@for s in $(CHECK_SUITES); do \
		echo "==== suite $$s"; \
		$(MAKE) --no-print-directory check-$$s || true; \
	done
	@./scripts/summary $(RESULTS) $(CHECK_SUITES)

# make check on a pristine Debian 12 root (debootstrap, cached in
# $(NVB_CACHE)/fresh), entered with pivot_root; see scripts/check-fresh.
check-fresh:
	@./scripts/check-fresh check

clean:
	rm -rf $(BUILD)
