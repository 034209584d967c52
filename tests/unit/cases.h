/* SPDX-License-Identifier: MIT */
/* The case harness of the library's C test programs (nvb-unit, nvb-hostile). */
#ifndef NVB_TEST_CASES_H
#define NVB_TEST_CASES_H

#include <dirent.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#define FAIL(...) do { printf("    %s:%d: ", __func__, __LINE__); printf(__VA_ARGS__); \
		       printf("\n"); return 1; } while (0)
#define CHECK(c, ...) do { if (!(c)) FAIL("check failed: " #c " " __VA_ARGS__); } while (0)
#define EXPECT(expr, want) do { long _r = (long)(expr), _w = (long)(want); \
		if (_r != _w) FAIL("%s = %ld (%s), want %ld", #expr, _r, \
				   _r < 0 ? strerror((int)-_r) : "ok", _w); } while (0)

/* A case returns 0 (passed), NVB_CASE_SKIP (could not run here: it printed why) or else failed. */
#define NVB_CASE_SKIP	77

struct nvb_case {
	const char *name;
	int (*fn)(void);
};

/* Open fds of pid (0: this process), or -1. */
static inline int proc_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/fd");
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return pid ? n : n - 1;	/* our own count includes the DIR's fd */
}

/*
 * Runs the cases named in argv (all without names), one line each, then
 * "N passed, M failed".  isolate: each case in its own process group under
 * alarm(20), so that a hang or a crash is a failure and whatever it forked
 * goes with it.  after() (may be NULL) cleans up after each case.
 */
static inline int run_cases(const char *suite, const struct nvb_case *cases, size_t n,
			    int argc, char **argv, bool isolate, void (*after)(void))
{
	int pass = 0, fail = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < n; i++) {
		int sel = argc < 2, r, st;
		pid_t c;

		for (int a = 1; a < argc; a++)
			sel |= !strcmp(argv[a], cases[i].name);
		if (!sel)
			continue;
		if (!isolate) {
			r = cases[i].fn();
		} else {
			c = fork();
			if (c == 0) {
				setpgid(0, 0);
				alarm(20);
				_exit(cases[i].fn());
			}
			waitpid(c, &st, 0);
			kill(-c, SIGKILL);
			r = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
			if (!WIFEXITED(st))
				printf("    killed by signal %d%s\n", WTERMSIG(st),
				       WTERMSIG(st) == SIGALRM ? " (hung for 20 s)" : "");
		}
		if (after)
			after();
		if (r == NVB_CASE_SKIP) {
			printf("skip %s %s\n", suite, cases[i].name);
			continue;
		}
		printf("%s %s %s\n", r ? "FAIL" : "ok  ", suite, cases[i].name);
		if (r)
			fail++;
		else
			pass++;
	}
	printf("%d passed, %d failed\n", pass, fail);
	return fail != 0;
}

#endif
