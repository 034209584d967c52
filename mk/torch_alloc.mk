# libnvbridge_torch.so: the PyTorch pluggable allocator (alloc/), installed
# next to libnvbridge by make install.
#
#   make torch-alloc    $(BUILD)/lib/libnvbridge_torch.so
#   make torch-alloc-bench   alloc+free of repeated sizes vs PyTorch's own
#                       caching allocator (a GPU host with torch; not a test)
#
# It links libnvbridge.so.1 (nvb_gpu_alloc does the VMM work) and finds it
# beside itself ($ORIGIN), so that torch can dlopen it by path; libcuda is
# dlopen()ed at run time, as by libnvbridge.  Its C logic is tested in the
# gpu-fake suite (tests/gpu-fake/torch_alloc.c), its Python side in the
# python suite.

TORCH_ALLOC_SO   := $(LB)/libnvbridge_torch.so
TORCH_ALLOC_SRCS := alloc/torch_alloc.c libnvbridge/cuda_load.c
TORCH_ALLOC_HDRS := alloc/nvbridge_torch.h libnvbridge/cuda_api.h libnvbridge/nvbridge_gpu.h

# The pluggable interface's floor (bench/floor_alloc.c): a baseline of
# torch-alloc-bench, built beside the bench, never installed.
FLOOR_ALLOC_SO   := $(BUILD)/bench/libnvb_floor_alloc.so

.PHONY: torch-alloc torch-alloc-bench
all: torch-alloc
torch-alloc: $(TORCH_ALLOC_SO)

$(TORCH_ALLOC_SO): $(TORCH_ALLOC_SRCS) $(TORCH_ALLOC_HDRS) alloc/nvbridge_torch.map $(LIB_SO)
	$(CC) $(LIB_CFLAGS) -I$(CURDIR)/alloc -fPIC -fvisibility=hidden -shared \
		-Wl,-soname,libnvbridge_torch.so -Wl,--version-script=alloc/nvbridge_torch.map \
		-Wl,-z,defs -Wl,-rpath,'$$ORIGIN' -o $@ $(TORCH_ALLOC_SRCS) \
		-L$(LB) -l:libnvbridge.so.1 -ldl -pthread

# the suites that load it
check-gpu-fake check-python: $(TORCH_ALLOC_SO)

$(FLOOR_ALLOC_SO): bench/floor_alloc.c
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -fPIC -fvisibility=hidden -shared -Wl,-z,defs -o $@ $< -ldl -pthread

torch-alloc-bench: $(TORCH_ALLOC_SO) $(FLOOR_ALLOC_SO)
	NVBRIDGE_LIB=$(LB)/libnvbridge.so.1 PYTHONPATH=$(CURDIR)/python \
		$(or $(NVB_PYTHON),python3) bench/torch_alloc_bench.py

$(NVB_FAKE_DIR)/torch_alloc: alloc/nvbridge_torch.h
