// SPDX-License-Identifier: MIT
/*
 * nvbridged: configuration, logging, time and the memory budget: what
 * every part of the broker uses (and the fuzz harness links without main.c).
 */
#include "nvbridged.h"
#include <time.h>

struct config cfg = {
	.socket = "/run/nvbridge/nvbridged.sock",
	.mode = 0666,
	.max_entries_per_user = 1024,
	.max_bytes_per_user = 1 << 20,
	.max_blob_size = 4096,
	.max_events = 1024,
	.max_watches = 64,
	.max_watches_per_user = 65536,	/* the module's max_watches_per_user */
	.max_waiters = 256,
	.max_waiters_per_user = 1024,
	.max_waiters_total = 65536,
	.max_conns_per_user = 256,
	.max_conns_per_tenant = 256,
	.max_bytes_per_tenant = 1 << 20,
	.max_waiters_per_tenant = 1024,
	.max_queued = 256,
	.max_queued_kb = 1024,
	.max_queued_kb_per_user = 16384,
	.max_fds_in_flight = 64,
	.max_fds_in_flight_per_user = 256,
	.max_closes_per_user = 64,
	.max_closes_per_tenant = 64,
	.max_memory_mb = 1024,
	.hello_timeout_ms = 5000,
	.chrdev_majors = { 195 },
	.nchrdev_majors = 1,
};

uint32_t overflowuid = 65534, overflowgid = 65534;
int ep = -1;
uint64_t msg_gen = 1;	/* bumped per message handled (see pub_alive) */
bool have_pidfd_signal;	/* pidfd_send_signal(sig 0) works here (probed at start) */
size_t mem_used;

static void vlog(const char *fmt, va_list ap)
{
	fprintf(stderr, "nvbridged: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void logmsg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

/* 20 lines a second with bursts of 50; then one line saying how many were left out */
void logmsg_rl(const char *fmt, ...)
{
	static int64_t last;
	static double tokens = 50;
	static unsigned long suppressed;
	int64_t now = now_ns();
	va_list ap;

	tokens += (double)(now - last) * 20 / 1e9;
	if (tokens > 50)
		tokens = 50;
	last = now;
	if (tokens < 1) {
		suppressed++;
		return;
	}
	tokens--;
	if (suppressed) {
		logmsg("(%lu messages about clients left out: rate limit)", suppressed);
		suppressed = 0;
	}
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool mem_charge(size_t n)
{
	if (mem_used + n > (size_t)cfg.max_memory_mb << 20)
		return false;
	mem_used += n;
	return true;
}

void mem_uncharge(size_t n)
{
	mem_used -= n;
}

/* calloc(1, n) counted against --max-memory-mb: NULL when over it or out of memory */
void *mem_calloc(size_t n)
{
	void *p;

	if (!mem_charge(n))
		return NULL;
	p = calloc(1, n);
	if (!p)
		mem_uncharge(n);
	return p;
}
