# KUnit on UML: the module's KUnit suites (kmod/nvbridge_kunit.c) run in a
# UML kernel built from Debian's linux-source-6.1, with KASAN and lockdep.
# The kernel tree and build live in $(NVB_CACHE) (see tests/kunit/run).
#
#   make kunit         build (incrementally) and run, "N passed, M failed"
#   make check-kunit   the same, logged to $(RESULTS)/kunit.log

CHECK_SUITES += kunit

.PHONY: kunit check-kunit
kunit:
	./tests/kunit/run

check-kunit:
	$(call nvb_suite,./tests/kunit/run,kunit)
