# (named to sort after lib.mk, whose variables it uses)
# hostile: attacks on nvbridged by unprivileged local users (tests/hostile/),
# against the broker as built and against its ASan+UBSan build.
#
#   suites: hostile, hostile-asan, attacks (whole-scenario attack programs)

HB            := $(BUILD)/hostile
HOSTILE_SRCS  := tests/hostile/hostile.c tests/hostile/util.c tests/hostile/fuse_hang.c \
                 tests/hostile/evict.c tests/hostile/entries.c \
                 tests/hostile/review_broker.c
HOSTILE_BINS  := $(HB)/nvb-hostile $(HB)/nvb-hostile-suid

ATTACK_BINS   := $(patsubst tests/hostile/%.c,$(HB)/%,$(wildcard tests/hostile/attack_*.c))

.PHONY: check-hostile check-hostile-asan check-attacks
CHECK_SUITES += hostile hostile-asan attacks

ATTACK_SRCS   := tests/hostile/util.c tests/hostile/fuse_hang.c

$(HB)/attack_%: tests/hostile/attack_%.c $(ATTACK_SRCS) tests/hostile/hostile.h tests/hostile/fuse_hang.h \
		tests/seccomp_refuse.h $(LIB_HDRS) $(LIB_CORE_A)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -I$(CURDIR)/tests/hostile -o $@ $< $(ATTACK_SRCS) $(LIB_LINK)

# attack closer_oom's LD_PRELOAD shim: the broker's malloc() fails between SIGUSR1 and SIGUSR2
$(HB)/failmalloc.so: tests/hostile/failmalloc.c
	@mkdir -p $(@D)
	$(CC) -std=c11 -O2 -g -Wall -Wextra -Werror -fPIC -shared -o $@ $<

check-attacks: $(LB)/nvbridged $(ATTACK_BINS) $(HB)/failmalloc.so
	$(call nvb_suite,bash tests/hostile/run-attacks.sh $(LB)/nvbridged $(HB),attacks)

$(HB)/nvb-hostile: $(HOSTILE_SRCS) tests/hostile/hostile.h $(LIB_HDRS) $(LIB_CORE_A)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -o $@ $(HOSTILE_SRCS) $(LIB_LINK)

$(HB)/nvb-hostile-suid: tests/hostile/suid_sleep.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Werror -static -o $@ $<

check-hostile: $(LB)/nvbridged $(HOSTILE_BINS)
	$(call nvb_suite,bash tests/hostile/run-hostile.sh $(LB)/nvbridged $(HB),hostile)

# a small quarantine: reply_memory measures the broker's RSS
check-hostile-asan: $(LA)/nvbridged $(HOSTILE_BINS)
	$(call nvb_suite,ASAN_OPTIONS=quarantine_size_mb=8:detect_leaks=1 bash tests/hostile/run-hostile.sh $(LA)/nvbridged $(HB),hostile-asan)
