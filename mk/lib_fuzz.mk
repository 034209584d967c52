# libFuzzer harness for nvbridged's message handling (tests/fuzz/), built with
# clang (Debian's clang-14: -fsanitize=fuzzer,address,undefined).  The suite
# runs a fixed number of inputs from the seed corpus in the tree; longer runs:
#   make fuzz-broker && build/fuzz/fuzz-broker -max_total_time=3600 \
#        -dict= /tmp/newcorpus tests/fuzz/corpus/broker
# (named to sort after lib.mk, whose variables it uses)
#
#   suite: fuzz-broker

# FUZZ_CC and FUZZ_FL: mk/lib.mk
FZ            := $(BUILD)/fuzz
FUZZ_RUNS     ?= 20000
FUZZ_BROKER_SRCS := tests/fuzz/fuzz_broker.c $(filter-out daemon/main.c,$(DAEMON_SRCS))

.PHONY: fuzz-broker check-fuzz-broker
CHECK_SUITES += fuzz-broker

$(FZ)/fuzz-broker: $(FUZZ_BROKER_SRCS) $(DAEMON_HDRS)
	@mkdir -p $(@D)
	$(FUZZ_CC) -std=gnu11 $(FUZZ_FL) \
		-pthread $(UAPI_INC) -I$(CURDIR)/common -o $@ $(FUZZ_BROKER_SRCS)

fuzz-broker: $(FZ)/fuzz-broker

check-fuzz-broker:
	$(call nvb_suite,bash tests/fuzz/run-fuzz.sh $(MAKE) $(FZ)/fuzz-broker tests/fuzz/corpus/broker $(FUZZ_RUNS),fuzz-broker)
