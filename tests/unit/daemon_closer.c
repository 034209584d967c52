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
	case SYS_statx:		/* its type; a size alone (STATX_BLOCKS) is not a kind */
		return (si->entry.args[3] & STATX_TYPE) != 0;
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
 * PUBLISH and kept, so freeing the entries asks no file its kind again.
 * It used to (statx and F_GET_SEALS for a memfd, statx and readlink for a
 * character device): 2 system calls per entry, 2,048 for 1,024 entries.
 * A memfd's size is still asked (statx STATX_BLOCKS): a large one goes to
 * a closer (attack_memfd_last_close).
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

/* ---- a child of the broker that is not a closer ---- */
static int foster[2] = { -1, -1 };	/* its pipe: it exits when the write end closes */

/* daemon_setup: forks the child before the exec, so the broker inherits it */
static int fork_foster(void)
{
	pid_t g = fork();
	char c;

	if (g == 0) {
		close(foster[1]);
		while (read(foster[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(7);
	}
	return g < 0;	/* the broker's exec closes both ends (O_CLOEXEC) */
}

/* pid's state letter from /proc/pid/stat, or 0 */
static char proc_state(pid_t pid)
{
	char p[64], b[512], *r;
	FILE *f;
	char s = 0;

	snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
	f = fopen(p, "re");
	if (!f)
		return 0;
	r = fgets(b, sizeof(b), f) ? strrchr(b, ')') : NULL;
	if (r && r[1] == ' ')
		s = r[2];
	fclose(f);
	return s;
}

/*
 * The broker waits for its closers' pids only, never waitpid(-1): a child
 * it did not start (inherited across exec here; a library's helper) is
 * left to whoever waits for it.  The child ends beside closers that start
 * and end: it must stay a zombie, and the closers must still be reaped.
 */
static int t_daemon_reaps_only_closers(void)
{
	struct daemon d;
	pid_t k[8], g = 0;
	int n, r;

	CHECK(!pipe2(foster, O_CLOEXEC), "pipe: %s", strerror(errno));
	daemon_setup = fork_foster;
	r = daemon_start(&d, 0, NULL, NULL);
	daemon_setup = NULL;
	close(foster[0]);
	CHECK(!r, "daemon did not start");
	n = daemon_children(d.pid, k, 8);
	CHECK(n == 1, "%d children of the broker before any close, want the inherited one", n);
	g = k[0];
	EXPECT(publish_rounds(d.path, 3), 0);	/* closers start, close, report */
	close(foster[1]);			/* the inherited child exits: SIGCHLD */
	usleep(200000);
	EXPECT(publish_rounds(d.path, 3), 0);	/* and once more after it */
	usleep(200000);
	CHECK(proc_state(g) == 'Z', "the broker's inherited child %d: state '%c', want 'Z' (not reaped)",
	      (int)g, proc_state(g) ? proc_state(g) : '-');
	usleep(1300000);	/* idle closers end after 1 s and are reaped */
	n = daemon_children(d.pid, k, 8);
	CHECK(n == 1 && k[0] == g, "%d children left, want only the inherited zombie", n);
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}

/* ---- a request that cannot be written to a closer ---- */
/* daemon_setup: write() of 4 bytes (a closer's request, an fd number) fails ENOMEM */
static int refuse_requests(void)
{
	return seccomp_refuse_arg(__NR_write, 2, sizeof(int32_t), ENOMEM);
}

/* whether pid's table holds the pipe whose inode is ino */
static bool holds_pipe(pid_t pid, ino_t ino)
{
	char want[64], dir[64];
	struct dirent *e;
	bool found = false;
	DIR *dd;

	snprintf(want, sizeof(want), "pipe:[%lu]", (unsigned long)ino);
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	dd = opendir(dir);
	while (dd && !found && (e = readdir(dd))) {
		char p[320], link[64];
		ssize_t l;

		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		l = readlink(p, link, sizeof(link) - 1);
		found = l > 0 && (link[l] = 0, !strcmp(link, want));
	}
	if (dd)
		closedir(dd);
	return found;
}

/*
 * A request the broker cannot write to a closer's pipe (a pipe buffer
 * page not to be had: ENOMEM, made by a seccomp filter here) puts the
 * close back on its queue, tried again later.  It used to close the file
 * on the loop, where a FUSE file's FLUSH would stop the broker.  The file
 * (a pipe, sent with a PUBLISH that is refused) must stay open in the
 * broker, across retries, while the broker goes on answering.
 */
static int t_daemon_closer_write_refused(void)
{
	struct daemon d;
	struct stat sb;
	struct nvb *h;
	char line[256];
	int p[2], r, said = 0, onloop = 0;
	FILE *f;

	daemon_setup = refuse_requests;
	r = daemon_start(&d, 0, NULL, NULL);
	daemon_setup = NULL;
	CHECK(!r, "daemon did not start");
	{
		struct nvb_opts o = broker_at(d.path);

		EXPECT(nvb_open(&o, &h), 0);
	}
	CHECK(!pipe2(p, O_CLOEXEC) && !fstat(p[0], &sb), "pipe: %s", strerror(errno));
	EXPECT(nvb_publish(h, "closer.refused", p[0], NULL, 0, NULL, NULL), -EINVAL);
	close(p[0]);
	close(p[1]);
	usleep(300000);	/* three retries */
	CHECK(holds_pipe(d.pid, sb.st_ino), "the broker closed the file it could not hand to a closer");
	{
		int m = memfd_create("still", MFD_CLOEXEC);

		EXPECT(nvb_publish(h, "closer.still", m, NULL, 0, NULL, NULL), 0);
		close(m);
	}
	usleep(1200000);	/* the idle closer retires and is reaped; later retries start another */
	CHECK(holds_pipe(d.pid, sb.st_ino), "the broker closed the file after its closer retired");
	nvb_close(h);
	f = fopen(d.log, "re");
	while (f && fgets(line, sizeof(line), f)) {
		said |= strstr(line, "requeued") != NULL;
		onloop |= strstr(line, "on the loop") != NULL;
	}
	if (f)
		fclose(f);
	CHECK(said, "the broker did not say it requeued the close");
	CHECK(!onloop, "the broker closed on its loop");
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}

/* ---- a file numbered above the broker's table of close requests ---- */
/*
 * daemon_setup: RLIMIT_NOFILE 64 of 1024, and the broker cannot raise it
 * itself: prlimit64() setting RLIMIT_NOFILE fails EPERM (reading it works;
 * the other limits stay settable: ASan's start sets RLIMIT_CORE).
 */
static int nofile_64_of_1024(void)
{
	struct rlimit rl = { 64, 1024 };
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_prlimit64, 0, 7),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, RLIMIT_NOFILE, 0, 5),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2]) + 4),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	return setrlimit(RLIMIT_NOFILE, &rl) || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	       prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)
#ifdef __NR_setrlimit
	       || seccomp_refuse_arg(__NR_setrlimit, 0, RLIMIT_NOFILE, EPERM)
#endif
		;
}

/*
 * The broker keeps one close request per fd number below its
 * RLIMIT_NOFILE, made at start (closer.c reqs[]), so that queueing a close
 * never allocates.  A higher number exists only once someone raised that
 * limit from outside (prlimit(1)): its close costs a malloc() and still
 * goes to a closer.  Started at 64 (its raise to the hard 1024 refused),
 * raised to 1024 from here, N devices (/dev/null, major 1) published and
 * revoked with their connection: every one closed, none left open.
 */
static int t_daemon_closer_fd_above_table(void)
{
	enum { N = 100 };
	struct rlimit rl = { 1024, 1024 };
	struct daemon d;
	struct nvb *h;
	char line[256];
	int base, n, r, left = 0;
	FILE *f;

	daemon_setup = nofile_64_of_1024;
	r = daemon_start(&d, 0, "--publish-chrdev-majors", "1");
	daemon_setup = NULL;
	CHECK(!r, "daemon did not start");
	CHECK(!prlimit(d.pid, RLIMIT_NOFILE, &rl, NULL), "prlimit: %s", strerror(errno));
	base = proc_fds(d.pid);
	{
		struct nvb_opts o = broker_at(d.path);

		EXPECT(nvb_open(&o, &h), 0);
	}
	for (int i = 0; i < N; i++) {
		int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		char name[32];

		CHECK(fd >= 0, "/dev/null: %s", strerror(errno));
		snprintf(name, sizeof(name), "above.%d", i);
		r = nvb_publish(h, name, fd, NULL, 0, NULL, NULL);
		close(fd);
		EXPECT(r, 0);
	}
	n = proc_fds(d.pid);
	CHECK(n >= base + N && n > 64, "the broker holds %d fds, %d before: none above 64", n, base);
	nvb_close(h);
	n = fds_settle(d.pid, base);	/* closers close them, retire after 1 s idle, are reaped */
	CHECK(n == base, "broker fds %d, %d before: files above the table not closed", n, base);
	f = fopen(d.log, "re");
	while (f && fgets(line, sizeof(line), f))
		left |= strstr(line, "left open") != NULL;
	if (f)
		fclose(f);
	CHECK(!left, "the broker left a file open");
	CHECK(!daemon_stop(&d), "daemon");
	return 0;
}
