// SPDX-License-Identifier: MIT
/*
 * nvb-unit cases on nvbridged's closing of client files (daemon/closer.c,
 * registry.c entry_put()).  Not a program of its own: unit.c includes it
 * before its case table, for daemon_start(), daemon_children() and the
 * rest of its harness.
 */

static volatile sig_atomic_t ptrace_timed_out;

static void on_alarm(int sig)
{
	(void)sig;
	ptrace_timed_out = 1;
}

/* what asks a file what it is: classify_fd() and closer_close() use these */
static bool asks_file_kind(const struct __ptrace_syscall_info *si)
{
	switch (si->entry.nr) {
	case SYS_statx:
#ifdef SYS_readlink
	case SYS_readlink:
#endif
	case SYS_readlinkat:
		return true;
	case SYS_fcntl:
		return si->entry.args[1] == F_GET_SEALS;
	default:
		return false;
	}
}

static bool is_epoll_wait(uint64_t nr)
{
#ifdef SYS_epoll_wait
	if (nr == SYS_epoll_wait)
		return true;
#endif
	return nr == SYS_epoll_pwait || nr == SYS_epoll_pwait2;
}

/*
 * Runs the stopped broker b under PTRACE_SYSCALL until it enters
 * epoll_wait with its fd table back to base (plus its closers' pipes,
 * two each): every file of the disconnect closed.  Returns how many
 * times it asked a file its kind meanwhile, or -1 (10 s passed, or it
 * ended).
 */
static int trace_until_closed(pid_t b, int base)
{
	struct sigaction sa = { .sa_handler = on_alarm }, old;
	int asked = 0, sig = 0, st;
	pid_t k[40];

	ptrace_timed_out = 0;
	sigaction(SIGALRM, &sa, &old);	/* no SA_RESTART: waitpid() returns EINTR */
	alarm(10);
	for (;;) {
		struct __ptrace_syscall_info si;

		if (ptrace(PTRACE_SYSCALL, b, 0, sig) ||
		    waitpid(b, &st, __WALL) != b || ptrace_timed_out || !WIFSTOPPED(st)) {
			asked = -1;
			break;
		}
		sig = 0;
		if (WSTOPSIG(st) != (SIGTRAP | 0x80)) {
			if (st >> 16 == 0)	/* a signal to deliver, not a ptrace event */
				sig = WSTOPSIG(st);
			continue;
		}
		if (ptrace(PTRACE_GET_SYSCALL_INFO, b, sizeof(si), &si) <= 0 ||
		    si.op != PTRACE_SYSCALL_INFO_ENTRY)
			continue;
		asked += asks_file_kind(&si);
		if (is_epoll_wait(si.entry.nr) &&
		    proc_fds(b) <= base + 2 * daemon_children(b, k, 40))
			break;
	}
	alarm(0);
	sigaction(SIGALRM, &old, NULL);
	return asked;
}

/*
 * A disconnect revoking many entries: each file's kind was found at
 * PUBLISH and kept, so freeing the entries asks no file again.  It used
 * to (statx and F_GET_SEALS for a memfd, statx and readlink for a
 * character device): 2 system calls per entry, 2,048 for 1,024 entries.
 * Counted with ptrace across the disconnect, which revokes memfds (closed
 * on the loop) and /dev/null (major 1 allowed here: closed by closers).
 */
static int t_daemon_entry_free_not_reclassified(void)
{
	enum { N = 128 };
	struct daemon d;
	struct nvb *h;
	int base, asked, st;

	CHECK(!daemon_start(&d, 0, "--publish-chrdev-majors", "1"), "daemon did not start");
	base = proc_fds(d.pid);
	{
		struct nvb_opts o = broker_at(d.path);

		EXPECT(nvb_open(&o, &h), 0);
	}
	for (int i = 0; i < 2 * N; i++) {
		int fd = i < N ? memfd_create("kind", MFD_CLOEXEC) :
				 open("/dev/null", O_RDWR | O_CLOEXEC);
		char name[32];
		int r;

		CHECK(fd >= 0, "file %d: %s", i, strerror(errno));
		snprintf(name, sizeof(name), "kind.%d", i);
		r = nvb_publish(h, name, fd, NULL, 0, NULL, NULL);
		close(fd);
		EXPECT(r, 0);
	}
	CHECK(proc_fds(d.pid) >= base + 2 * N, "the broker holds %d fds, %d before",
	      proc_fds(d.pid), base);
	CHECK(!ptrace(PTRACE_SEIZE, d.pid, 0, PTRACE_O_TRACESYSGOOD), "PTRACE_SEIZE: %s",
	      strerror(errno));
	CHECK(!ptrace(PTRACE_INTERRUPT, d.pid, 0, 0), "PTRACE_INTERRUPT: %s", strerror(errno));
	CHECK(waitpid(d.pid, &st, __WALL) == d.pid && WIFSTOPPED(st), "broker did not stop");
	nvb_close(h);	/* the broker reads the hang-up once it runs again */
	asked = trace_until_closed(d.pid, base);
	ptrace(PTRACE_DETACH, d.pid, 0, 0);
	CHECK(asked >= 0, "the disconnect's files were not all closed within 10 s (%d fds, %d before)",
	      proc_fds(d.pid), base);
	CHECK(asked == 0, "freeing %d entries asked files their kind %d times", 2 * N, asked);
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}
