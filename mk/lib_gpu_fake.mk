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
		-I$(CURDIR)/tests/unit -o $@ $< -L$(LB) -l:libnvbridge.so.1 -ldl

# GPU_EXAMPLES (mk/gpu.mk, where cuda.h exists): register.c runs them too
check-gpu-fake: $(NVB_FAKE_CUDA) $(GPU_FAKE_BINS) $(LB)/nvbridged $(GPU_EXAMPLES)
	$(call nvb_suite,tests/gpu-fake/run $(NVB_FAKE_DIR) $(LB) $(GPU_FAKE_BINS),gpu-fake)
