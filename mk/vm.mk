# End to end in qemu (tests/vm/): Debian's own kernel booted with TCG, the
# freshly built nvbridge.ko inserted, static programs run inside.
#
#   make vmtest      the e2e suite (also part of make check: suite vmtest)
#   make vm-bench    fd hand-over latency, device vs SCM_RIGHTS (VM_BENCH_ARGS=N)
#   make vm-demo     two processes exchange a buffer through /dev/nvbridge
#   make vm-progs    just build the static programs into $(BUILD)/vm/
#
# tests/vm/run [options] PROGRAM [ARGS] runs any static program the same way
# (see tests/vm/run --help).  The kernel image is cached in $(NVB_CACHE)/vm.

VM_BUILD   := $(BUILD)/vm
VM_RUN     := $(CURDIR)/tests/vm/run
VM_CFLAGS  ?= -std=c11 -O2 -g -Wall -Wextra -Werror
VM_PROGS   := $(VM_BUILD)/e2e $(VM_BUILD)/bench-latency $(VM_BUILD)/demo \
	      $(VM_BUILD)/compat32
VM_BENCH_ARGS ?= 20000

.PHONY: vm-progs vmtest check-vmtest vm-bench vm-demo
all: vm-progs
vm-progs: $(VM_PROGS)

$(VM_BUILD)/%: tests/vm/%.c tests/vm/nvbtest.h tests/vm/fuzz.h include/uapi/linux/nvbridge.h
	@mkdir -p $(@D)
	$(CC) $(VM_CFLAGS) $(UAPI_INC) -static -o $@ $< -luring -lpthread

# The ioctls from an i386 process (e2e case compat_ioctl_32bit): built
# freestanding, since the build host has no 32-bit C library.
$(VM_BUILD)/compat32: tests/vm/compat32.c include/uapi/linux/nvbridge.h
	@mkdir -p $(@D)
	$(CC) -m32 -static -nostdlib -ffreestanding -fno-pie -no-pie \
		-fno-stack-protector -O2 -Wall -Wextra -Werror $(UAPI_INC) \
		-I/usr/include/$(shell $(CC) -dumpmachine) -o $@ $<

CHECK_SUITES += vmtest
# then, in a second boot, lib-hostile's fork cases on the kernel backend
# (tests/vm/fork-cases), counted in the same log
check-vmtest: module $(VM_BUILD)/e2e $(VM_BUILD)/compat32 $(LB)/nvb-hostile-static
	@mkdir -p $(RESULTS)
	@rc=0; tests/vm/suite $(RESULTS)/vmtest.log $(VM_RUN) --rmmod-check \
		-P $(VM_BUILD)/compat32 \
		--klog $(VM_BUILD)/vmtest-kernel.log $(VM_BUILD)/e2e || rc=1; \
	tests/vm/suite $(VM_BUILD)/vmtest-fork.log $(VM_RUN) --rmmod-check \
		-P $(LB)/nvb-hostile-static \
		--klog $(VM_BUILD)/vmtest-fork-kernel.log tests/vm/fork-cases >/dev/null || rc=1; \
	tests/vm/merge-results $(RESULTS)/vmtest.log $(VM_BUILD)/vmtest-fork.log fork-cases || rc=1; \
	exit $$rc

vmtest: check-vmtest

vm-bench: module $(VM_BUILD)/bench-latency
	$(VM_RUN) --klog $(VM_BUILD)/bench-kernel.log $(VM_BUILD)/bench-latency $(VM_BENCH_ARGS)

vm-demo: module $(VM_BUILD)/demo
	@$(VM_RUN) --klog $(VM_BUILD)/demo-kernel.log $(VM_BUILD)/demo
