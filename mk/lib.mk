# libnvbridge, nvbridged, nvbridgectl, examples, conformance + unit suites.
#
#   make lib            libnvbridge.{so,a}, libnvbridge.pc, nvbridged, nvbridgectl, examples
#   make conformance    the conformance suite against a private nvbridged
#   make lib-bench      publish+fetch+close and event latency (not a test)
#   suites: lib-unit, conformance-broker, conformance-kernel, lib-asan, lib-hostile, fuzz-lib

LIB_VERSION   := $(NVB_VERSION)
LIB_SONAME    := libnvbridge.so.1
LB            := $(BUILD)/lib
LIB_WARN      := -Wall -Wextra -Werror -Wno-missing-field-initializers -Wno-format-truncation
LIB_CFLAGS    := -std=c11 -O2 -g $(LIB_WARN) -pthread $(UAPI_INC) -I$(CURDIR)/common -I$(CURDIR)/libnvbridge
LIB_SRCS      := libnvbridge/core.c libnvbridge/kernel.c libnvbridge/broker.c libnvbridge/reply.c
LIB_HDRS      := libnvbridge/nvbridge.h libnvbridge/nvbridge_uring.h libnvbridge/nvb_internal.h \
                 include/uapi/linux/nvbridge.h common/nvb_wire.h common/nvb_name.h \
                 libnvbridge/opts.h
URING_STATIC  := -l:liburing.a
LIB_SO        := $(LB)/libnvbridge.so.$(LIB_VERSION)
LIB_A         := $(LB)/libnvbridge.a
LIB_A_STATIC  := $(LB)/static/libnvbridge.a
LIB_PC        := $(LB)/libnvbridge.pc
LIB_BINS      := $(LB)/nvbridged $(LB)/nvbridgectl $(LB)/nvb-example-events \
                 $(LB)/nvb-conformance $(LB)/nvb-unit $(LB)/nvb-bench
LIB_ASAN_FL   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LA            := $(BUILD)/lib-asan

.PHONY: lib conformance lib-bench check-lib-unit check-conformance-broker \
        check-conformance-kernel check-lib-asan lib-static check-lib-hostile check-fuzz-lib
all: lib
lib: $(LIB_SO) $(LIB_A) $(LIB_PC) $(LIB_BINS)

CHECK_SUITES += lib-unit conformance-broker conformance-kernel lib-asan lib-hostile fuzz-lib

# ---- library ----
$(LB)/obj/%.o: libnvbridge/%.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

$(LB)/static-obj/%.o: libnvbridge/%.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -DNVB_NO_DLOPEN -c $< -o $@

LIB_CORE_OBJS := $(patsubst libnvbridge/%.c,$(LB)/obj/%.o,$(LIB_SRCS))
LIB_OBJS := $(LIB_CORE_OBJS)
# the GPU layer's objects (mk/gpu.mk, owned by the GPU helper) go into the same library
ifneq ($(strip $(NVB_GPU_OBJS)),)
LIB_OBJS += $(NVB_GPU_OBJS)
endif

$(LIB_SO): $(LIB_OBJS) libnvbridge/libnvbridge.map
	$(CC) -shared -pthread -Wl,-soname,$(LIB_SONAME) -Wl,--version-script=libnvbridge/libnvbridge.map \
		-Wl,-z,defs -Wl,--as-needed -o $@ $(LIB_OBJS) $(URING_STATIC) -ldl -lpthread
	ln -sf libnvbridge.so.$(LIB_VERSION) $(LB)/$(LIB_SONAME)
	ln -sf $(LIB_SONAME) $(LB)/libnvbridge.so

$(LIB_A): $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

# the rendezvous part alone: what the programs and tests here link, so that
# they do not depend on the GPU layer building
LIB_CORE_A := $(LB)/core/libnvbridge.a
$(LIB_CORE_A): $(LIB_CORE_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

# for fully static binaries (the VM): no dlopen of libudev, sysfs lookup instead
$(LIB_A_STATIC): $(patsubst libnvbridge/%.c,$(LB)/static-obj/%.o,$(LIB_SRCS))
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(LIB_PC): libnvbridge/libnvbridge.pc.in
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(or $(PREFIX),/usr/local)|' -e 's|@LIBDIR@|$(or $(LIBDIR),$${prefix}/lib)|' \
	    -e 's|@VERSION@|$(LIB_VERSION)|' $< > $@

# ---- programs (libnvbridge.a + liburing.a: they run on hosts without liburing) ----
LIB_LINK := $(LIB_CORE_A) $(URING_STATIC) -ldl -pthread

DAEMON_SRCS   := $(sort $(wildcard daemon/*.c))
DAEMON_HDRS   := $(wildcard daemon/*.h) $(LIB_HDRS)
$(LB)/nvbridged: $(DAEMON_SRCS) $(DAEMON_HDRS)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -o $@ $(DAEMON_SRCS)

$(LB)/nvbridgectl: tools/nvbridgectl.c $(LIB_CORE_A)
	$(CC) $(LIB_CFLAGS) -o $@ $< $(LIB_LINK)

$(LB)/nvb-example-events: examples/events.c $(LIB_CORE_A)
	$(CC) $(LIB_CFLAGS) -o $@ $< $(LIB_LINK)

$(LB)/nvb-conformance: tests/conformance/conformance.c tests/conformance/contract.c tests/conformance/memfiles.c tests/conformance/gids.c tests/hostile/fuse_hang.c tests/hostile/fuse_hang.h $(LIB_CORE_A)
	$(CC) $(LIB_CFLAGS) -o $@ $< $(LIB_LINK)

$(LB)/nvb-unit: tests/unit/unit.c tests/unit/daemon_closer.c tests/unit/cases.h tests/seccomp_refuse.h $(LIB_CORE_A)
	$(CC) $(LIB_CFLAGS) -o $@ $< $(LIB_LINK)

$(LB)/nvb-hostile: tests/unit/hostile.c tests/unit/cases.h $(LIB_CORE_A)
	$(CC) $(LIB_CFLAGS) -o $@ $< $(LIB_LINK)

$(LB)/nvb-bench: tests/conformance/bench.c $(LIB_CORE_A)
	$(CC) $(LIB_CFLAGS) -o $@ $< $(LIB_LINK)

# static conformance binary for the kernel backend in the VM
$(LB)/nvb-conformance-static: tests/conformance/conformance.c tests/conformance/contract.c tests/conformance/memfiles.c tests/conformance/gids.c tests/hostile/fuse_hang.c tests/hostile/fuse_hang.h $(LIB_A_STATIC)
	$(CC) $(LIB_CFLAGS) -static -o $@ $< $(LIB_A_STATIC) $(URING_STATIC) -pthread

$(LB)/nvb-bench-static: tests/conformance/bench.c $(LIB_A_STATIC)
	$(CC) $(LIB_CFLAGS) -static -o $@ $< $(LIB_A_STATIC) $(URING_STATIC) -pthread

# the fork cases of lib-hostile on the kernel backend in the VM:
#   NVB_HOSTILE_ANY_BACKEND=1 nvb-hostile-static fork_child_calls fork_child_outlives_parent
$(LB)/nvb-hostile-static: tests/unit/hostile.c tests/unit/cases.h $(LIB_A_STATIC)
	$(CC) $(LIB_CFLAGS) -static -o $@ $< $(LIB_A_STATIC) $(URING_STATIC) -pthread

lib-static: $(LB)/nvb-conformance-static $(LB)/nvb-bench-static $(LB)/nvb-hostile-static

# ---- ASan + UBSan builds ----
$(LA)/libnvbridge.a: $(LIB_SRCS) $(LIB_HDRS)
	@mkdir -p $(LA)/obj
	for s in $(LIB_SRCS); do \
		$(CC) $(LIB_CFLAGS) $(LIB_ASAN_FL) -c $$s -o $(LA)/obj/$$(basename $$s .c).o || exit 1; \
	done
	rm -f $@ && ar rcs $@ $(LA)/obj/*.o

LA_LINK := $(LA)/libnvbridge.a $(URING_STATIC) -ldl -pthread

$(LA)/nvbridged: $(DAEMON_SRCS) $(DAEMON_HDRS)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) $(LIB_ASAN_FL) -o $@ $(DAEMON_SRCS)

$(LA)/%: $(LA)/libnvbridge.a
$(LA)/nvb-conformance: tests/conformance/conformance.c tests/conformance/contract.c tests/conformance/memfiles.c tests/conformance/gids.c tests/hostile/fuse_hang.c tests/hostile/fuse_hang.h $(LA)/libnvbridge.a
	$(CC) $(LIB_CFLAGS) $(LIB_ASAN_FL) -o $@ $< $(LA_LINK)
$(LA)/nvb-unit: tests/unit/unit.c tests/unit/daemon_closer.c tests/unit/cases.h tests/seccomp_refuse.h $(LA)/libnvbridge.a
	$(CC) $(LIB_CFLAGS) $(LIB_ASAN_FL) -o $@ $< $(LA_LINK)
$(LA)/nvb-hostile: tests/unit/hostile.c tests/unit/cases.h $(LA)/libnvbridge.a
	$(CC) $(LIB_CFLAGS) $(LIB_ASAN_FL) -o $@ $< $(LA_LINK)
$(LA)/nvbridgectl: tools/nvbridgectl.c $(LA)/libnvbridge.a
	$(CC) $(LIB_CFLAGS) $(LIB_ASAN_FL) -o $@ $< $(LA_LINK)
# visible.c's oracle and memory tests (lib-unit), under the sanitizers too
$(LA)/nvb-daemon-visible: tests/unit/daemon_visible.c daemon/visible.c daemon/vorder.c daemon/hash.c daemon/htable.c daemon/util.c daemon/nvbridged.h
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) $(LIB_ASAN_FL) -o $@ $(filter %.c,$^)

# ---- suites ----
LIB_CORE_BINS := $(LIB_CORE_A) $(LB)/nvbridged $(LB)/nvbridgectl $(LB)/nvb-example-events \
                 $(LB)/nvb-conformance $(LB)/nvb-unit $(LB)/nvb-bench
# nvbridged's keyed hash and tables, outside the broker
$(LB)/nvb-daemon-hash: tests/unit/daemon_hash.c daemon/hash.c daemon/htable.c daemon/nvbridged.h
	$(CC) $(LIB_CFLAGS) -o $@ tests/unit/daemon_hash.c daemon/hash.c daemon/htable.c

$(LB)/nvb-daemon-visible: tests/unit/daemon_visible.c daemon/visible.c daemon/vorder.c daemon/hash.c daemon/htable.c daemon/util.c daemon/nvbridged.h
	$(CC) $(LIB_CFLAGS) -o $@ tests/unit/daemon_visible.c daemon/visible.c daemon/vorder.c daemon/hash.c daemon/htable.c daemon/util.c

check-lib-unit: $(LIB_CORE_BINS) $(LB)/nvb-daemon-hash $(LB)/nvb-daemon-visible
	@$(MAKE) --no-print-directory $(LIB_SO) $(LIB_PC) >$(LB)/so-build.log 2>&1 || \
		{ echo "libnvbridge.so did not build (see $(LB)/so-build.log):"; tail -5 $(LB)/so-build.log; }
	$(call nvb_suite,sh tests/unit/run-unit.sh $(LB),lib-unit)

conformance check-conformance-broker: $(LIB_CORE_BINS)
	$(call nvb_suite,sh tests/conformance/run-broker.sh $(LB),conformance-broker)

check-conformance-kernel: module $(LB)/nvb-conformance-static
	$(call nvb_suite,bash tests/conformance/run-kernel.sh $(LB),conformance-kernel)

check-lib-asan: $(LA)/nvbridged $(LA)/nvb-conformance $(LA)/nvb-unit $(LA)/nvbridgectl $(LA)/nvb-daemon-visible
	$(call nvb_suite,sh tests/conformance/run-asan.sh $(LA),lib-asan)

check-lib-hostile: $(LB)/nvb-hostile $(LB)/nvbridged $(LA)/nvb-hostile
	$(call nvb_suite,sh tests/unit/run-hostile.sh $(LB) $(LA),lib-hostile)

# ---- libFuzzer: the library's reply parser (tests/fuzz/README) ----
FUZZ_CC       ?= clang-14
FUZZ_FL       := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
LIB_FUZZ      := $(BUILD)/fuzz/fuzz-lib-reply
$(LIB_FUZZ): tests/fuzz/fuzz_lib_reply.c libnvbridge/reply.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FL) $(filter-out -Wno-format-truncation,$(LIB_WARN)) $(UAPI_INC) -I$(CURDIR)/common -I$(CURDIR)/libnvbridge -o $@ \
		tests/fuzz/fuzz_lib_reply.c libnvbridge/reply.c

check-fuzz-lib:
	@$(MAKE) --no-print-directory $(LIB_FUZZ) >$(BUILD)/fuzz-lib-build.log 2>&1 || \
		tail -5 $(BUILD)/fuzz-lib-build.log
	$(call nvb_suite,sh tests/fuzz/run-fuzz-lib.sh $(LIB_FUZZ),fuzz-lib)

lib-bench: $(LIB_CORE_BINS) lib-static
	@sh tests/conformance/run-bench.sh $(LB)
