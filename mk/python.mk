# The nvbridge Python package (python/nvbridge: ctypes over libnvbridge.so.1)
# and its suite.
#
#   make check-python   tests/python against a private nvbridged (pytest when
#                       installed, else unittest); numpy/torch cases skip
#                       without python3-numpy / python3-torch; the GPU path
#                       runs over the real GPU layer with a stand-in libcuda
#                       (tests/fakecuda/fakecuda.c), and on a GPU (test_gpu.py)
#   make python-example the producer/consumer pair in examples/python (its tests)
#   suite: python
#
# Debian's interpreter (/usr/bin/python3) is used when present: it is the one
# that sees python3-numpy, python3-torch and python3-pytest.

NVB_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
NVB_PY_ENV := PYTHONDONTWRITEBYTECODE=1 NVBRIDGE_LIB=$(LB)/libnvbridge.so.1 NVB_TEST_DAEMON=$(LB)/nvbridged

.PHONY: check-python python-example
CHECK_SUITES += python

check-python: $(LIB_SO) $(LB)/nvbridged $(NVB_FAKE_CUDA)
	$(call nvb_suite,$(NVB_PY_ENV) NVB_FAKE_CUDA=$(NVB_FAKE_CUDA) timeout 900 $(NVB_PYTHON) tests/python/run.py,python)

python-example: $(LIB_SO) $(LB)/nvbridged
	$(NVB_PY_ENV) $(NVB_PYTHON) tests/python/run.py -s -k KvExample
