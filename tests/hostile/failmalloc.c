// SPDX-License-Identifier: MIT
/*
 * LD_PRELOAD shim for attack closer_oom (not an attack program itself):
 * after SIGUSR1 every malloc(), calloc() and realloc() of the process
 * fails with ENOMEM, as under strict overcommit once the commit limit is
 * used up (which any local user's own allocations can do); SIGUSR2 ends
 * that.  free() is glibc's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);

static volatile sig_atomic_t failing;

static void on_signal(int sig)
{
	failing = sig == SIGUSR1;
}

__attribute__((constructor)) static void failmalloc_init(void)
{
	struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART };

	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
}

void *malloc(size_t n)
{
	if (failing) {
		errno = ENOMEM;
		return NULL;
	}
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
	if (failing) {
		errno = ENOMEM;
		return NULL;
	}
	return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
	if (failing) {
		errno = ENOMEM;
		return NULL;
	}
	return __libc_realloc(p, n);
}
