# The one-call GPU run (tests/gpu/device-all.sh): everything it needs,
# built here, where nvcc and the CUDA headers are, for a GPU host that has
# none of them (only libc, the driver's libcuda and python3 with torch).
#
#   make device-bundle   builds the binaries below (the SM kernel's fatbin
#                        embedded, liburing linked statically), checks that
#                        every ELF one needs only what such a host has, and
#                        prints the paths to carry with their sizes (<= 64 MiB)
#   make device-dry-run  the whole script here against the stand-in libcuda
#                        (build/gpu-fake): GPU steps fail or skip saying why,
#                        the script still finishes and writes SUMMARY.txt
#
# It is not a suite: the check runs where the bundle is built.  Named zz_ so
# that it is included last: its prerequisites use the other mk/*.mk's variables.

DEVICE_CARRY := build/lib build/gpu build/bench
DEVICE_BINS  := $(LIB_SO) $(LB)/nvbridged $(TORCH_ALLOC_SO) $(FLOOR_ALLOC_SO) $(BENCH_BIN) $(GPUTEST_BIN) \
                $(SEGTEST_BIN) $(EXAMPLE_REGISTER)

.PHONY: device-bundle device-dry-run

device-bundle: $(DEVICE_BINS)
	@[ "$(BUILD)" = "$(CURDIR)/build" ] || \
		{ echo "device-bundle: tests/gpu/device-all.sh reads build/; BUILD=$(BUILD) is elsewhere"; exit 1; }
	@[ -n "$(NVCC)" ] || { echo "device-bundle: nvcc not found: the SM copy kernel would be missing"; exit 1; }
	@[ -n "$(CUDA_INC)" ] && [ -n "$(CUDA_STUBS)" ] || \
		{ echo "device-bundle: CUDA headers or stubs missing: no register example"; exit 1; }
	@sh tests/gpu/device-bundle-check $(BUILD) $(DEVICE_BINS) -- $(DEVICE_CARRY)
	@# what was built, for the run's SUMMARY.txt (the device copy has no .git)
	@echo "commit $$(git rev-parse --short HEAD)$$(git diff --quiet HEAD -- . ':!build' || echo ' + uncommitted changes'), built $$(date -u '+%Y-%m-%d %H:%M UTC') with $$($(NVCC) --version | tail -n 1)" \
		> $(LB)/device-bundle.txt && cat $(LB)/device-bundle.txt

# every step of the script's STEPS list must have run (12 since the wide step)
DEVICE_NSTEPS = $(words $(shell sed -n 's/^STEPS="\(.*\)"$$/\1/p' tests/gpu/device-all.sh))

device-dry-run: device-bundle $(NVB_FAKE_CUDA)
	@rm -rf $(BUILD)/device-dry-run && mkdir -p $(BUILD)/device-dry-run
	@# GPU steps fail here; what must hold is that the script finishes in
	@# time, runs every step and writes the summary
	@# the kv step's cache is host memory here: 8 x 256 x 16 KiB, not 3 x 2 GiB
	-NVB_DEVICE_FAKE_CUDA=$(NVB_FAKE_DIR) NVB_PYTHON=$(NVB_PYTHON) NVB_KV=8,256,16K \
		NVB_KV_ARGS="--kv-blocks 4,16,64" tests/gpu/device-all.sh $(BUILD)/device-dry-run
	@s=$(BUILD)/device-dry-run/SUMMARY.txt; [ -f $$s ] && \
		[ $$(grep -cE '^[a-z]+ +(ok|ok\+skip|FAIL|SKIPPED) +[0-9]+ ' $$s) = $(DEVICE_NSTEPS) ] && ! grep -qE '^[a-z]+ +(TIMEOUT|NOTRUN) ' $$s && \
		[ -f $(BUILD)/device-dry-run/steps.tar.gz ] && [ $$(ls $(BUILD)/device-dry-run | wc -l) -le 8 ] && \
		echo "device-dry-run: the script finished, every step ran, $$s written" || \
		{ echo "device-dry-run: the script did not finish every step (see $$s)"; exit 1; }
