# gpu-fake: the GPU layer's logic (options, symbol versions, export/import,
# registration, segments...) against a stand-in libcuda whose "device
# memory" is host memory (tests/fakecuda/fakecuda.c), so CI proves the
# plumbing on hosts without a GPU.  It proves no CUDA behaviour: the GPU
# suite (make gputest, on a GPU host) does.
#
#   make check-gpu-fake   every tests/gpu-fake/*.c program, one line a case
#
# The programs link the shared library (so symbol versions are what a user
# gets) and find the stand-in as libcuda.so.1 on LD_LIBRARY_PATH.

NVB_FAKE_DIR  := $(BUILD)/gpu-fake
NVB_FAKE_CUDA := $(NVB_FAKE_DIR)/libfakecuda.so
GPU_FAKE_SRCS := $(sort $(wildcard tests/gpu-fake/*.c))
GPU_FAKE_BINS := $(patsubst tests/gpu-fake/%.c,$(NVB_FAKE_DIR)/%,$(GPU_FAKE_SRCS))

.PHONY: check-gpu-fake
CHECK_SUITES += gpu-fake

$(NVB_FAKE_CUDA): tests/fakecuda/fakecuda.c libnvbridge/cuda_api.h
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -O2 -g -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden \
		-I$(CURDIR)/libnvbridge -o $@ $<
	ln -sf libfakecuda.so $(@D)/libcuda.so.1

$(NVB_FAKE_DIR)/%: tests/gpu-fake/%.c tests/gpu-fake/fake.h tests/unit/cases.h $(LIB_SO)
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -O2 -g $(LIB_WARN) -pthread $(UAPI_INC) -I$(CURDIR)/libnvbridge \
		-I$(CURDIR)/tests/unit -o $@ $< -L$(LB) -l:libnvbridge.so.1 -ldl -l:liburing.a

# GPU_EXAMPLES (mk/gpu.mk, where cuda.h exists): register.c runs them too.
# tests/gpu-fake/bench-kv.sh: nvbridge-bench --kv end to end (mk/gpu.mk's BENCH_BIN).
check-gpu-fake: $(NVB_FAKE_CUDA) $(GPU_FAKE_BINS) $(LB)/nvbridged $(GPU_EXAMPLES) $(BENCH_BIN)
	$(call nvb_suite,tests/gpu-fake/run $(NVB_FAKE_DIR) $(LB) $(GPU_FAKE_BINS) \
		$(CURDIR)/tests/gpu-fake/bench-kv.sh,gpu-fake)

# gpu-fake-asan: the same programs over an AddressSanitizer + UBSan build of
# the whole library (rendezvous and GPU layer), LeakSanitizer included: the
# registration parser, segments and their completion thread run under it.
GFA_DIR   := $(BUILD)/gpu-fake-asan
GFA_SO    := $(GFA_DIR)/libnvbridge.so.1
GFA_FLAGS := $(LIB_ASAN_FL)
GFA_OBJS  := $(patsubst libnvbridge/%.c,$(GFA_DIR)/obj/%.o,$(LIB_SRCS) $(GPU_C_SRCS))
GFA_BINS  := $(patsubst tests/gpu-fake/%.c,$(GFA_DIR)/%,$(GPU_FAKE_SRCS))

.PHONY: check-gpu-fake-asan
CHECK_SUITES += gpu-fake-asan

$(GFA_DIR)/obj/%.o: libnvbridge/%.c $(LIB_HDRS) $(GPU_HDRS)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) $(GFA_FLAGS) -fPIC -c $< -o $@

$(GFA_SO): $(GFA_OBJS) $(GPU_B)/gpu_fatbin.o libnvbridge/libnvbridge.map
	$(CC) -shared -pthread $(GFA_FLAGS) -Wl,-soname,$(LIB_SONAME) \
		-Wl,--version-script=libnvbridge/libnvbridge.map -o $@ \
		$(GFA_OBJS) $(GPU_B)/gpu_fatbin.o $(URING_STATIC) -ldl -lpthread

$(GFA_DIR)/%: tests/gpu-fake/%.c tests/gpu-fake/fake.h tests/unit/cases.h $(GFA_SO)
	$(CC) -std=gnu11 -O1 -g $(GFA_FLAGS) $(LIB_WARN) -pthread $(UAPI_INC) -I$(CURDIR)/libnvbridge \
		-I$(CURDIR)/tests/unit -o $@ $< -L$(GFA_DIR) -l:libnvbridge.so.1 -ldl -l:liburing.a

check-gpu-fake-asan: $(NVB_FAKE_CUDA) $(GFA_BINS) $(LB)/nvbridged $(LB)/libnvbridge_torch.so
	$(call nvb_suite,ASAN_OPTIONS=abort_on_error=0:detect_leaks=1 NVB_TEST_DAEMON=$(LB)/nvbridged \
		tests/gpu-fake/run $(NVB_FAKE_DIR) $(GFA_DIR):$(LB) $(GFA_BINS),gpu-fake-asan)
