# The GPU layer (libnvbridge/gpu/*.c, gpu_nvb.c, cuda_*.c, gather.cu), nvbridge-bench and
# the GPU tests.
#
#   make gpu-objs     PIC objects that mk/lib.mk puts into libnvbridge.{a,so}
#   make bench        $(BUILD)/bench/nvbridge-bench
#   make gputest      GPU tests (1 GPU or more + a backend; starts a private
#                     nvbridged when /dev/nvbridge is absent); skipped without a GPU
#   make bench-run    the cross-process bench with all baselines and the co-run
#                     phase (make run uses it); JSON in build/bench, plots by
#                     bench/plot when python3-matplotlib is installed
#   make bench-multi  every GPU: --all-pairs --fan-out all --many-publishers 64
#                     (NVB_MULTI_ARGS; make run adds it on hosts with 3 GPUs or more)
#   suites: gpu-build (compile-only, -Werror, always), gpu (gputest; skips without GPUs)
#
# nvcc is optional: with it (PATH or /usr/local/cuda/bin) the SM copy kernel
# is built as a fatbin (sm_90 SASS + compute_90 PTX) and embedded; without
# it the library uses the copy engines only.  libcuda is never linked: it is
# dlopen()ed at run time.

NVCC       ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
GPU_B      := $(BUILD)/gpu
GPU_CFLAGS := -std=c11 -O2 -g -Wall -Wextra -Werror -fPIC -pthread -I$(CURDIR)/libnvbridge $(UAPI_INC)
GPU_HDRS   := libnvbridge/cuda_api.h libnvbridge/gpu_internal.h libnvbridge/nvbridge_gpu.h \
              libnvbridge/nvbridge.h libnvbridge/gpu/gpu_priv.h libnvbridge/gpu/proxy_layout.h libnvbridge/gpu/seg_priv.h \
              libnvbridge/opts.h libnvbridge/nvbridge_uring.h
GPU_CORE_SRCS := $(addprefix libnvbridge/gpu/,dev.c mem.c vagroup.c copy.c proxy.c register.c range.c exported.c segment.c xfer.c xfer_uring.c)
GPU_C_SRCS := libnvbridge/cuda_load.c $(GPU_CORE_SRCS) libnvbridge/gpu_nvb.c
NVB_GPU_OBJS := $(patsubst libnvbridge/%.c,$(GPU_B)/%.o,$(GPU_C_SRCS)) $(GPU_B)/gpu_fatbin.o
GPU_LIB_A  ?= $(BUILD)/lib/libnvbridge.a
GPU_LINK   := $(GPU_LIB_A) -l:liburing.a -ldl -lm -pthread
BENCH_BIN  := $(BUILD)/bench/nvbridge-bench
GPUTEST_BIN := $(GPU_B)/gputest
CUDA_INC   ?= $(firstword $(wildcard /usr/local/cuda/include))

ifneq ($(NVCC),)
GPU_FATBIN := $(GPU_B)/gather.fatbin
GPU_FATBIN_DEF := -DNVB_GPU_FATBIN='"$(GPU_FATBIN)"'
endif

.PHONY: gpu-objs bench gputest bench-run bench-multi check-gpu-build check-gpu
CHECK_SUITES += gpu-build gpu

all: bench
gpu-objs: $(NVB_GPU_OBJS)

$(GPU_B)/gather.fatbin: libnvbridge/gather.cu libnvbridge/gpu/proxy_layout.h
	@mkdir -p $(@D)
	$(NVCC) -Ilibnvbridge -fatbin -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
		-o $@ $<

$(GPU_B)/gpu_fatbin.o: libnvbridge/gpu_fatbin.S $(GPU_FATBIN)
	@mkdir -p $(@D)
	$(CC) -c $(GPU_FATBIN_DEF) -o $@ $<

$(GPU_B)/gpu/%.o: libnvbridge/gpu/%.c $(GPU_HDRS)
	@mkdir -p $(@D)
	$(CC) $(GPU_CFLAGS) -c $< -o $@

$(GPU_B)/%.o: libnvbridge/%.c $(GPU_HDRS)
	@mkdir -p $(@D)
	$(CC) $(GPU_CFLAGS) -c $< -o $@

bench: $(BENCH_BIN)
BENCH_SRCS := $(addprefix bench/,nvbridge-bench.c report.c child.c side.c phase_copy.c phase_flags.c \
              phase_import.c phase_vmm.c phase_nccl.c phase_seg.c phase_kv.c multi.c corun.c)
$(BENCH_BIN): $(BENCH_SRCS) bench/bench.h bench/multi.h bench/corun.h bench/seg.h bench/seg_priv.h bench/nccl_api.h bench/bench_util.h $(GPU_HDRS) $(GPU_LIB_A) $(NVB_GPU_OBJS)
	@mkdir -p $(@D)
	$(CC) $(GPU_CFLAGS) -DNVB_BENCH_LIB -o $@ $(BENCH_SRCS) $(GPU_LINK)

$(GPUTEST_BIN): tests/gpu/gputest.c $(GPU_HDRS) $(GPU_LIB_A) $(NVB_GPU_OBJS)
	@mkdir -p $(@D)
	$(CC) $(GPU_CFLAGS) -o $@ tests/gpu/gputest.c $(GPU_LINK)

# The C example of registering existing memory (examples/register.c): the
# application's own CUDA calls need cuda.h and libcuda (the toolkit's stub
# to link; the driver, or the gpu-fake stand-in, at run time).
EXAMPLE_REGISTER := $(GPU_B)/nvb-example-register
CUDA_STUBS ?= $(firstword $(wildcard /usr/local/cuda/lib64/stubs))
ifneq ($(CUDA_INC),)
ifneq ($(CUDA_STUBS),)
all: $(EXAMPLE_REGISTER)
GPU_EXAMPLES += $(EXAMPLE_REGISTER)
$(EXAMPLE_REGISTER): examples/register.c $(GPU_HDRS) $(GPU_LIB_A) $(NVB_GPU_OBJS)
	@mkdir -p $(@D)
	$(CC) $(GPU_CFLAGS) -I$(CUDA_INC) -o $@ $< $(GPU_LINK) -L$(CUDA_STUBS) -lcuda
endif
endif
# segments and transfer batches (tests/gpu/segtest.c), run after gputest
SEGTEST_BIN := $(GPU_B)/segtest
$(SEGTEST_BIN): tests/gpu/segtest.c $(GPU_HDRS) $(GPU_LIB_A) $(NVB_GPU_OBJS)
	@mkdir -p $(@D)
	$(CC) $(GPU_CFLAGS) -o $@ tests/gpu/segtest.c $(GPU_LINK)

# Runs $(1) with a backend: /dev/nvbridge if present, else a private nvbridged.
gpu_with_backend = set -e; \
	if [ -e /dev/nvbridge ]; then $(1); exit $$?; fi; \
	sock=$(GPU_B)/nvbridged.sock; rm -f $$sock; \
	$(BUILD)/lib/nvbridged --socket $$sock & dpid=$$!; \
	for i in $$(seq 50); do [ -S $$sock ] && break; sleep 0.1; done; \
	set +e; NVBRIDGE_BACKEND=broker NVBRIDGE_SOCKET=$$sock $(1); rc=$$?; \
	kill $$dpid; wait $$dpid 2>/dev/null; exit $$rc

gputest: $(GPUTEST_BIN) $(SEGTEST_BIN) lib
	@$(call gpu_with_backend,sh -c '$(GPUTEST_BIN) && $(SEGTEST_BIN)')

check-gpu: $(GPUTEST_BIN) $(SEGTEST_BIN) lib
	@mkdir -p $(RESULTS)
	@( $(call gpu_with_backend,sh -c 'timeout 600 $(GPUTEST_BIN); r1=$$?; \
	   timeout 300 $(SEGTEST_BIN); r2=$$?; [ $$r1 = 0 ] && [ $$r2 = 0 ]') ) > $(RESULTS)/gpu.log 2>&1; \
	rc=$$?; \
	cat $(RESULTS)/gpu.log; exit $$rc

# NCCL for the baseline: NVB_NCCL_LIB, else PyTorch's wheel (nvidia-nccl), else libnccl.so.2.
bench-run: $(BENCH_BIN) lib
	@nccl=$${NVB_NCCL_LIB:-$$(python3 -c 'import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)}; \
	[ -n "$$nccl" ] && [ -e "$$nccl" ] || nccl=libnccl.so.2; \
	cublas=$$(sh scripts/find-cublas); \
	export NCCL_NVLS_ENABLE=0; \
	( $(call gpu_with_backend,$(BENCH_BIN) --nccl $$nccl $${cublas:+--cublas $$cublas} \
		--json-out $(BUILD)/bench/nvbridge-bench.json $(NVB_BENCH_ARGS)) ); rc=$$?; \
	python3 bench/plot $(BUILD)/bench/nvbridge-bench.json $(BUILD)/bench/nvbridge-bench || \
		echo "bench-run: tables only (python3-matplotlib is not installed)"; \
	exit $$rc

# Every GPU of the host: all pairs, fan-out, many publishers (make run on >= 3 GPUs).
NVB_MULTI_ARGS ?= --all-pairs --fan-out all --many-publishers 64
bench-multi: $(BENCH_BIN) lib
	@export NCCL_NVLS_ENABLE=0; \
	( $(call gpu_with_backend,$(BENCH_BIN) $(NVB_MULTI_ARGS) \
		--json-out $(BUILD)/bench/nvbridge-bench-multi.json) ); rc=$$?; \
	if python3 -c 'import matplotlib' 2>/dev/null; then \
		python3 bench/plot $(BUILD)/bench/nvbridge-bench-multi.json $(BUILD)/bench/nvbridge-bench-multi; \
	fi; exit $$rc

# Compile-only proof that the GPU code builds with -Werror on any host,
# and that our driver-API declarations match cuda.h where it exists.
check-gpu-build:
	@mkdir -p $(RESULTS)
	@( p=0; f=0; \
	ok() { echo "ok   $$1"; p=$$((p+1)); }; ko() { echo "FAIL $$1"; f=$$((f+1)); }; \
	for src in $(GPU_C_SRCS); do \
		if $(CC) $(GPU_CFLAGS) -fsyntax-only $$src; then ok "compile $$src"; else ko "compile $$src"; fi; \
	done; \
	all=1; for bsrc in $(BENCH_SRCS); do $(CC) $(GPU_CFLAGS) -fsyntax-only -DNVB_BENCH_LIB $$bsrc || all=0; done; \
	if [ $$all = 1 ]; then ok "compile bench"; else ko "compile bench"; fi; \
	all=1; for bsrc in $(BENCH_SRCS); do $(CC) $(GPU_CFLAGS) -fsyntax-only $$bsrc || all=0; done; \
	if [ $$all = 1 ]; then ok "compile bench (socketpair only)"; else ko "compile bench (socketpair only)"; fi; \
	if $(CC) $(GPU_CFLAGS) -fsyntax-only tests/gpu/gputest.c; then ok "compile tests/gpu/gputest.c"; else ko "compile tests/gpu/gputest.c"; fi; \
	if [ -n "$(CUDA_INC)" ]; then \
		if $(CC) $(GPU_CFLAGS) -I$(CUDA_INC) -fsyntax-only examples/register.c; then ok "compile examples/register.c"; else ko "compile examples/register.c"; fi; \
	else echo "skip examples/register.c: no CUDA headers on this host"; fi; \
	if $(CC) $(GPU_CFLAGS) -fsyntax-only tests/gpu/segtest.c; then ok "compile tests/gpu/segtest.c"; else ko "compile tests/gpu/segtest.c"; fi; \
	if $(CC) -c -o /dev/null libnvbridge/gpu_fatbin.S; then ok "assemble empty fatbin (no nvcc)"; else ko "assemble empty fatbin"; fi; \
	if [ -n "$(CUDA_INC)" ]; then \
		if $(CC) $(GPU_CFLAGS) -I$(CUDA_INC) -fsyntax-only tests/gpu/abi_check.c; then ok "cuda_api.h matches cuda.h"; else ko "cuda_api.h matches cuda.h"; fi; \
	else echo "skip cuda_api.h vs cuda.h: no CUDA headers on this host"; fi; \
	if [ -n "$(NVCC)" ]; then \
		if $(MAKE) --no-print-directory $(GPU_B)/gather.fatbin >/dev/null; then ok "nvcc gather.cu (sm_90 + PTX)"; else ko "nvcc gather.cu"; fi; \
	else echo "skip nvcc gather.cu: nvcc not found"; fi; \
	stub=$$(ls /usr/local/cuda/lib64/stubs/libcuda.so 2>/dev/null); \
	if [ -n "$$stub" ]; then miss=""; \
		for s in $$(sed -n 's/.*X([a-zA-Z0-9_]*, "\([a-zA-Z0-9_]*\)".*/\1/p' libnvbridge/cuda_api.h); do \
			nm -D $$stub | grep -qw "$$s" || miss="$$miss $$s"; done; \
		if [ -z "$$miss" ]; then ok "every driver symbol exists in libcuda stub"; else ko "libcuda stub lacks:$$miss"; fi; \
	fi; \
	if $(MAKE) --no-print-directory gpu-objs >/dev/null; then \
		if nm --undefined-only $(filter %.o,$(NVB_GPU_OBJS)) 2>/dev/null | grep -q ' cu[A-Z]'; then ko "no link-time libcuda symbols"; \
		else ok "no link-time libcuda symbols"; fi; \
	else ko "build gpu-objs"; fi; \
	if $(MAKE) --no-print-directory $(BENCH_BIN) >/dev/null; then \
		sh tests/gpu/bench-cli.sh $(BENCH_BIN) > $(RESULTS)/bench-cli.out; cat $(RESULTS)/bench-cli.out; \
		p=$$((p + $$(grep -c '^ok' $(RESULTS)/bench-cli.out))); \
		f=$$((f + $$(grep -c '^FAIL' $(RESULTS)/bench-cli.out))); \
	else ko "build nvbridge-bench"; fi; \
	echo "$$p passed, $$f failed" ) 2>&1 | tee $(RESULTS)/gpu-build.log
