# The module on a kernel newer than Debian 12's default 6.1 (bookworm also
# carries 6.12): built against its headers with -Werror, then the e2e suite
# in that kernel under qemu.  Suite vmtest-newer; scripts/newer-kernel
# installs the headers.

CHECK_SUITES += vmtest-newer
.PHONY: check-vmtest-newer vmtest-newer
check-vmtest-newer: $(BUILD)/vm/e2e $(BUILD)/vm/compat32
	@mkdir -p $(RESULTS)
	@tests/vm/newer-kernel $(RESULTS)/vmtest-newer.log $(BUILD)/vm/e2e

vmtest-newer: check-vmtest-newer
