# Kernel-side lint: checkpatch --strict on kmod/ and the UAPI header, sparse
# (C=2) and a -Werror build against the Debian headers, and the UAPI header
# compiled alone in user space with -Wpadded (see tests/lint/run).
#
#   make lint          run every check, "N passed, M failed"
#   make check-lint    the same, logged to $(RESULTS)/lint.log

CHECK_SUITES += lint

.PHONY: lint check-lint
lint:
	./tests/lint/run

check-lint:
	$(call nvb_suite,./tests/lint/run,lint)
