// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit suites for nvbridge, linked into nvbridge.ko when
 * CONFIG_NVBRIDGE_KUNIT_TEST is enabled.  The cases call the module's
 * internal functions, which are VISIBLE_IF_KUNIT (static otherwise) and
 * declared in nvbridge_internal.h.
 *
 * Test files are anonymous-inode files with nvbridge's own file operations,
 * set up exactly as nvb_open() sets up /dev/nvbridge, opened under crafted
 * credentials (real kuid/kgid values, supplementary groups, no
 * capabilities) with override_creds(), so file->f_cred is what the module
 * judges.  Cases that go through the ioctl entry point give the case's
 * kernel thread a user address space of its own and pass real user
 * pointers.
 *
 * The suites run in the order listed at the end: the lock-order suite comes
 * first, before anything that could make KASAN report (a KASAN report
 * switches lockdep off).  Every suite's exit hook releases what the case
 * left open, restores the limits and then checks that the registry is
 * empty, so a leaked entry fails the case that leaked it.
 */

#include <kunit/test.h>
#include <linux/cred.h>
#include <linux/file.h>
#include <linux/ipc_namespace.h>
#include <linux/pid_namespace.h>
#include <linux/uaccess.h>
#include <linux/user_namespace.h>
#include <linux/anon_inodes.h>
#include <linux/delay.h>
#include <linux/fdtable.h>
#include <linux/kthread.h>
#include <linux/mman.h>
#include <linux/nsproxy.h>
#include <linux/random.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/shmem_fs.h>
#include <linux/syscalls.h>
#include <linux/net.h>
#include <net/net_namespace.h>

#include "nvbridge_internal.h"

/* nvb_fetch_expect() from any publisher. */
static int nvb_fetch_wait(struct nvb_file *f, const char *name, u32 blob_cap,
			  bool wait, s64 timeout_ns, struct nvb_fetched *r)
{
	return nvb_fetch_expect(f, name, blob_cap, INVALID_UID, wait,
				&timeout_ns, r);
}

#define NVB_T_MAX_FILES		16
#define NVB_T_MAX_FDS		16
#define NVB_T_MAX_CREDS		16
#define NVB_T_WAIT_MS		5000

struct nvb_t_waiter;

/* Per-case state: what to undo in the exit hook. */
struct nvb_t_ctx {
	struct file *files[NVB_T_MAX_FILES];
	const struct cred *creds[NVB_T_MAX_CREDS];
	struct user_namespace *userns[2];
	struct nvb_t_waiter *waiters[4];
	int fds[NVB_T_MAX_FDS];
	unsigned int nr_fds;
	unsigned int saved[6];
};

static struct nvb_limit *const nvb_t_limits[6] = {
	&nvb_max_entries_per_user, &nvb_max_bytes_per_user, &nvb_max_blob_size,
	&nvb_max_events, &nvb_max_watches, &nvb_max_watches_per_user,
};

static int nvb_t_init(struct kunit *test)
{
	struct nvb_t_ctx *ctx;
	int i;

	ctx = kunit_kzalloc(test, sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	for (i = 0; i < ARRAY_SIZE(nvb_t_limits); i++)
		ctx->saved[i] = nvb_limit(nvb_t_limits[i]);
	test->priv = ctx;
	return 0;
}

static unsigned int nvb_t_nr_entries(void)
{
	return atomic_read(&nvb_nr_entries);
}

static unsigned int nvb_t_user_entries(uid_t uid)
{
	struct nvb_user *u;
	unsigned int n;

	spin_lock(&nvb_users_lock);
	u = nvb_user_find(make_kuid(&init_user_ns, uid));
	n = u ? atomic_read(&u->entries) : 0;
	spin_unlock(&nvb_users_lock);
	return n;
}

static void nvb_t_waiter_stop(struct nvb_t_waiter *w);

struct nvb_t_cleanup {
	struct nvb_t_ctx *ctx;
	struct completion done;
};

/*
 * Closes the case's fds and releases its files.  Runs in a kernel thread
 * of its own: after a failed assertion KUnit calls the exit hook from the
 * thread that runs the suites, which is not a kernel thread (no
 * __fput_sync() there) and has a file table of its own.
 */
static int nvb_t_cleanup_fn(void *data)
{
	struct nvb_t_cleanup *c = data;
	struct nvb_t_ctx *ctx = c->ctx;
	int i;

	for (i = 0; i < ctx->nr_fds; i++)
		close_fd(ctx->fds[i]);
	flush_delayed_fput();
	for (i = 0; i < NVB_T_MAX_FILES; i++)
		if (ctx->files[i])
			__fput_sync(ctx->files[i]);
	flush_delayed_fput();
	complete(&c->done);
	return 0;
}

static void nvb_t_exit(struct kunit *test)
{
	struct nvb_t_ctx *ctx = test->priv;
	struct nvb_t_cleanup *c;
	struct task_struct *t;
	int i;

	/* Threads still waiting hold pointers to the case's files. */
	for (i = 0; i < ARRAY_SIZE(ctx->waiters); i++)
		if (ctx->waiters[i])
			nvb_t_waiter_stop(ctx->waiters[i]);
	c = kzalloc(sizeof(*c), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, c);
	c->ctx = ctx;
	init_completion(&c->done);
	t = kthread_create(nvb_t_cleanup_fn, c, "nvb-cleanup");
	if (!IS_ERR(t)) {
		get_task_struct(t);
		wake_up_process(t);
		wait_for_completion(&c->done);
		kthread_stop(t);
		put_task_struct(t);
	}
	kfree(c);
	KUNIT_EXPECT_FALSE_MSG(test, IS_ERR(t), "no cleanup thread");
	for (i = 0; i < NVB_T_MAX_CREDS; i++)
		if (ctx->creds[i])
			put_cred(ctx->creds[i]);
	for (i = 0; i < ARRAY_SIZE(ctx->userns); i++)
		if (ctx->userns[i])
			put_user_ns(ctx->userns[i]);
	for (i = 0; i < ARRAY_SIZE(nvb_t_limits); i++)
		WRITE_ONCE(nvb_t_limits[i]->val, ctx->saved[i]);
	KUNIT_EXPECT_EQ_MSG(test, nvb_t_nr_entries(), 0U,
			    "entries left in the registry after the case");
}

/* ------------------------------------------------------------------ */
/* Helpers: credentials, files, entries                               */

/* A uid/gid base that differs from run to run, away from system ids. */
static u32 nvb_t_random_id(void)
{
	return 10000 + get_random_u32() % 1000000;
}

/*
 * Credentials of an unprivileged user in user namespace @ns: ids @uid and
 * @gid and the supplementary @groups, all as seen in @ns (they must be
 * mapped there), no capabilities.
 */
static const struct cred *nvb_t_cred_ns(struct kunit *test,
					struct user_namespace *ns, uid_t uid,
					gid_t gid, const gid_t *groups,
					int ngroups)
{
	struct nvb_t_ctx *ctx = test->priv;
	struct group_info *gi;
	struct cred *c;
	int i, slot;

	for (slot = 0; slot < NVB_T_MAX_CREDS; slot++)
		if (!ctx->creds[slot])
			break;
	KUNIT_ASSERT_LT(test, slot, NVB_T_MAX_CREDS);
	c = prepare_creds();
	KUNIT_ASSERT_NOT_NULL(test, c);
	gi = groups_alloc(ngroups);
	if (!gi)
		abort_creds(c);
	KUNIT_ASSERT_NOT_NULL(test, gi);
	for (i = 0; i < ngroups; i++)
		gi->gid[i] = make_kgid(ns, groups[i]);
	groups_sort(gi);
	set_groups(c, gi);
	put_group_info(gi);
	if (c->user_ns != ns) {
		put_user_ns(c->user_ns);
		c->user_ns = get_user_ns(ns);
	}
	c->uid = make_kuid(ns, uid);
	c->euid = c->uid;
	c->suid = c->uid;
	c->fsuid = c->uid;
	c->gid = make_kgid(ns, gid);
	c->egid = c->gid;
	c->sgid = c->gid;
	c->fsgid = c->gid;
	cap_clear(c->cap_inheritable);
	cap_clear(c->cap_permitted);
	cap_clear(c->cap_effective);
	cap_clear(c->cap_ambient);
	ctx->creds[slot] = c;
	KUNIT_ASSERT_TRUE(test, uid_valid(c->uid) && gid_valid(c->gid));
	return c;
}

static const struct cred *nvb_t_cred(struct kunit *test, uid_t uid, gid_t gid,
				     const gid_t *groups, int ngroups)
{
	return nvb_t_cred_ns(test, &init_user_ns, uid, gid, groups, ngroups);
}

static void nvb_t_track(struct kunit *test, struct file *filp)
{
	struct nvb_t_ctx *ctx = test->priv;
	int i;

	for (i = 0; i < NVB_T_MAX_FILES; i++) {
		if (!ctx->files[i]) {
			ctx->files[i] = filp;
			return;
		}
	}
	__fput_sync(filp);
	KUNIT_ASSERT_FAILURE(test, "too many test files");
}

/*
 * An open /dev/nvbridge as nvb_open() makes it, opened with @cred (NULL:
 * the case's own, root with every capability) and extra @flags.
 */
static struct file *nvb_t_open_flags(struct kunit *test,
				     const struct cred *cred, int flags)
{
	const struct cred *old = NULL;
	struct file *filp;
	int ret;

	if (cred)
		old = override_creds(cred);
	filp = anon_inode_getfile("[nvbridge-test]", &nvb_fops, NULL,
				  O_RDWR | flags);
	if (cred)
		revert_creds(old);
	KUNIT_ASSERT_FALSE(test, IS_ERR(filp));
	ret = nvb_open(file_inode(filp), filp);
	/* On failure the file is leaked on purpose: release needs state. */
	KUNIT_ASSERT_EQ(test, ret, 0);
	nvb_t_track(test, filp);
	return filp;
}

static struct file *nvb_t_open(struct kunit *test, const struct cred *cred)
{
	return nvb_t_open_flags(test, cred, O_NONBLOCK);
}

static struct nvb_file *nvb_t_f(struct file *filp)
{
	return filp->private_data;
}

/* Release a test file now (its last reference), as close() would. */
static void nvb_t_close(struct kunit *test, struct file *filp)
{
	struct nvb_t_ctx *ctx = test->priv;
	int i;

	for (i = 0; i < NVB_T_MAX_FILES; i++)
		if (ctx->files[i] == filp)
			ctx->files[i] = NULL;
	__fput_sync(filp);
}

/* A file to publish (not an nvbridge file). */
static struct file *nvb_t_payload(struct kunit *test)
{
	struct file *filp;

	/* a shmem file, like a memfd: on the publish allowlist */
	filp = shmem_file_setup("nvbridge-payload", PAGE_SIZE, 0);
	KUNIT_ASSERT_FALSE(test, IS_ERR(filp));
	nvb_t_track(test, filp);
	return filp;
}

/*
 * Publish through @filp as PUBLISH does after argument checks: @file gets
 * an extra reference, @blob is copied.  Returns 0 or the error; @id may be
 * NULL.
 */
static int nvb_t_publish_full(struct file *filp, const char *name,
			      struct file *file, u32 access, kuid_t uid,
			      kgid_t gid, const void *blob, u32 blob_len,
			      u64 *id)
{
	struct nvb_file *f = nvb_t_f(filp);
	struct nvb_entry *e;
	void *copy = NULL;
	int ret;

	if (blob_len) {
		copy = kvmalloc(blob_len, GFP_KERNEL);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, blob, blob_len);
	}
	e = nvb_entry_new(f, name, file ? get_file(file) : NULL, copy,
			  blob_len, access, uid, gid);
	if (!e) {
		if (file)
			fput(file);
		kvfree(copy);
		return -ENOMEM;
	}
	ret = nvb_entry_reserve(f, e);
	if (ret) {
		nvb_entry_put(e);
		return ret;
	}
	if (id)
		*id = e->id;
	nvb_entry_commit(f, e);
	return 0;
}

static int nvb_t_publish(struct file *filp, const char *name, u32 access)
{
	return nvb_t_publish_full(filp, name, NULL, access, INVALID_UID,
				  INVALID_GID, NULL, 0, NULL);
}

/* FETCH without waiting; the result is dropped. */
static int nvb_t_fetch(struct file *filp, const char *name)
{
	struct nvb_fetched r = {};
	int ret;

	ret = nvb_fetch_wait(nvb_t_f(filp), name, NVBRIDGE_BLOB_MAX, false, 0,
			     &r);
	nvb_fetched_release(&r);
	return ret;
}

static int nvb_t_watch(struct file *filp, const char *name, bool prefix,
		       u64 *id)
{
	u64 dummy;

	return nvb_watch_add(nvb_t_f(filp), prefix ? NVBRIDGE_WATCH_PREFIX : 0,
			     name, id ? id : &dummy);
}

/* Read up to @max events without blocking; returns how many, or -errno. */
static int nvb_t_read_events(struct file *filp, struct nvbridge_event *ev,
			     int max)
{
	loff_t pos = 0;
	ssize_t n;

	n = kernel_read(filp, ev, max * sizeof(*ev), &pos);
	if (n < 0)
		return n;
	if (n % sizeof(*ev))
		return -EIO;
	return n / sizeof(*ev);
}

/* Wait (up to NVB_T_WAIT_MS) until a task sleeps on @wq. */
static bool nvb_t_sleeper(struct wait_queue_head *wq)
{
	int ms;

	for (ms = 0; ms < NVB_T_WAIT_MS; ms += 2) {
		if (wq_has_sleeper(wq))
			return true;
		usleep_range(1000, 2000);
	}
	return wq_has_sleeper(wq);
}

/* ------------------------------------------------------------------ */
/* Helpers: waiting in a second thread                                */

enum nvb_t_op { NVB_T_FETCH_WAIT, NVB_T_READ };

struct nvb_t_waiter {
	enum nvb_t_op op;
	struct file *filp;
	char name[NVBRIDGE_NAME_MAX];
	s64 timeout_ns;
	bool signals;
	int ret;
	u64 id;
	ktime_t elapsed;
	struct nvbridge_event ev;
	struct task_struct *task;
	struct completion done;
};

static int nvb_t_waiter_fn(void *data)
{
	struct nvb_t_waiter *w = data;
	ktime_t t0 = ktime_get();

	if (w->signals)
		allow_signal(SIGUSR1);
	if (w->op == NVB_T_FETCH_WAIT) {
		struct nvb_fetched r = {};

		w->ret = nvb_fetch_wait(nvb_t_f(w->filp), w->name, 0, true,
					w->timeout_ns, &r);
		w->id = r.id;
		nvb_fetched_release(&r);
	} else {
		loff_t pos = 0;

		w->ret = kernel_read(w->filp, &w->ev, sizeof(w->ev), &pos);
	}
	w->elapsed = ktime_sub(ktime_get(), t0);
	if (w->signals)
		flush_signals(current);
	/* complete_all(): waiting for it does not consume it */
	complete_all(&w->done);
	return 0;
}

static struct nvb_t_waiter *nvb_t_waiter_start(struct kunit *test,
					       enum nvb_t_op op,
					       struct file *filp,
					       const char *name, s64 timeout_ns,
					       bool signals)
{
	struct nvb_t_ctx *ctx = test->priv;
	struct nvb_t_waiter *w;
	int slot;

	w = kunit_kzalloc(test, sizeof(*w), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, w);
	w->op = op;
	w->filp = filp;
	strscpy(w->name, name, sizeof(w->name));
	w->timeout_ns = timeout_ns;
	w->signals = signals;
	init_completion(&w->done);
	for (slot = 0; slot < ARRAY_SIZE(ctx->waiters); slot++)
		if (!ctx->waiters[slot])
			break;
	KUNIT_ASSERT_LT(test, slot, (int)ARRAY_SIZE(ctx->waiters));
	w->task = kthread_create(nvb_t_waiter_fn, w, "nvb-waiter");
	KUNIT_ASSERT_FALSE(test, IS_ERR(w->task));
	get_task_struct(w->task);
	ctx->waiters[slot] = w;
	wake_up_process(w->task);
	return w;
}

/* Wait for the waiter to finish; true when it did in time. */
static bool nvb_t_waiter_join(struct nvb_t_waiter *w)
{
	bool done = wait_for_completion_timeout(&w->done,
						msecs_to_jiffies(NVB_T_WAIT_MS));

	nvb_t_waiter_stop(w);
	return done;
}

/* Make sure the waiter is gone (interrupt it if need be); idempotent. */
static void nvb_t_waiter_stop(struct nvb_t_waiter *w)
{
	if (!w->task)
		return;
	if (!completion_done(&w->done)) {
		/* Unstick it: it holds pointers into this case. */
		send_sig(SIGUSR1, w->task, 1);
		wait_for_completion(&w->done);
	}
	put_task_struct(w->task);
	w->task = NULL;
}

static bool nvb_t_waiter_finished(struct nvb_t_waiter *w)
{
	return completion_done(&w->done);
}

/* ------------------------------------------------------------------ */
/* Helpers: a user address space for ioctl cases                      */

static void __user *nvb_t_umem(struct kunit *test, size_t len)
{
	unsigned long addr;

	if (!current->mm) {
		struct mm_struct *mm = mm_alloc();

		KUNIT_ASSERT_NOT_NULL(test, mm);
		mm->task_size = TASK_SIZE;
		arch_pick_mmap_layout(mm, &current->signal->rlim[RLIMIT_STACK]);
		/* Released by exit_mm() when the case's thread exits. */
		kthread_use_mm(mm);
	}
	addr = vm_mmap(NULL, 0, PAGE_ALIGN(len), PROT_READ | PROT_WRITE,
		       MAP_ANONYMOUS | MAP_PRIVATE, 0);
	KUNIT_ASSERT_FALSE(test, IS_ERR_VALUE(addr));
	return (void __user *)addr;
}

static int nvb_t_install_fd(struct kunit *test, struct file *filp)
{
	struct nvb_t_ctx *ctx = test->priv;
	int fd;

	KUNIT_ASSERT_LT(test, ctx->nr_fds, NVB_T_MAX_FDS);
	fd = get_unused_fd_flags(O_CLOEXEC);
	KUNIT_ASSERT_GE(test, fd, 0);
	fd_install(fd, get_file(filp));
	ctx->fds[ctx->nr_fds++] = fd;
	return fd;
}

/* An fd returned by a FETCH: closed by the exit hook. */
static void nvb_t_adopt_fd(struct kunit *test, int fd)
{
	struct nvb_t_ctx *ctx = test->priv;

	if (fd < 0)
		return;
	if (ctx->nr_fds < NVB_T_MAX_FDS)
		ctx->fds[ctx->nr_fds++] = fd;
	else
		close_fd(fd);
}

static long nvb_t_ioctl(struct file *filp, unsigned int cmd,
			const void __user *arg)
{
	return nvb_ioctl(filp, cmd, (unsigned long)arg);
}

static void nvb_t_fill_random_name(char *name, size_t len, const char *prefix)
{
	snprintf(name, len, "%s%08x", prefix, get_random_u32());
}

/* ================================================================== */
/* Suite 1: lock order.  First, before anything KASAN might report.   */

/*
 * Publish, unpublish and release with a watcher attached: nvb_lock, then
 * each watcher's ev_lock; read_mutex, then ev_lock on the reading side.
 */
static void nvb_test_lock_publish_watch_revoke(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *wat = nvb_t_open(test, NULL);
	struct nvbridge_event ev[8];
	u64 ids[3], wid;
	char name[3][NVBRIDGE_NAME_MAX];
	int i, n;

	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, "", true, &wid), 0);
	for (i = 0; i < 3; i++) {
		nvb_t_fill_random_name(name[i], sizeof(name[i]), "lock/");
		KUNIT_ASSERT_EQ(test,
				nvb_t_publish_full(pub, name[i], NULL,
						   NVBRIDGE_ACCESS_OWNER,
						   INVALID_UID, INVALID_GID,
						   NULL, 0, &ids[i]), 0);
	}
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(pub), ids[1], NULL), 0);

	n = nvb_t_read_events(wat, ev, ARRAY_SIZE(ev));
	KUNIT_ASSERT_EQ(test, n, 4);
	for (i = 0; i < 3; i++) {
		KUNIT_EXPECT_EQ(test, ev[i].type, NVBRIDGE_EVENT_PUBLISHED);
		KUNIT_EXPECT_EQ(test, ev[i].id, ids[i]);
		KUNIT_EXPECT_EQ(test, ev[i].watch_id, wid);
		KUNIT_EXPECT_EQ(test, ev[i].seq, (u64)i + 1);
		KUNIT_EXPECT_STREQ(test, ev[i].name, name[i]);
		KUNIT_EXPECT_EQ(test, ev[i].size, (u32)NVBRIDGE_EVENT_SIZE);
	}
	KUNIT_EXPECT_EQ(test, ev[3].type, NVBRIDGE_EVENT_REVOKED);
	KUNIT_EXPECT_EQ(test, ev[3].reason, NVBRIDGE_REVOKE_UNPUBLISHED);
	KUNIT_EXPECT_EQ(test, ev[3].id, ids[1]);

	nvb_t_close(test, pub);
	n = nvb_t_read_events(wat, ev, ARRAY_SIZE(ev));
	KUNIT_ASSERT_EQ(test, n, 2);
	KUNIT_EXPECT_EQ(test, ev[0].id, ids[0]);
	KUNIT_EXPECT_EQ(test, ev[1].id, ids[2]);
	for (i = 0; i < 2; i++) {
		KUNIT_EXPECT_EQ(test, ev[i].type, NVBRIDGE_EVENT_REVOKED);
		KUNIT_EXPECT_EQ(test, ev[i].reason, NVBRIDGE_REVOKE_CLOSED);
	}
	KUNIT_EXPECT_EQ(test, nvb_t_read_events(wat, ev, 1), -EAGAIN);
}

/*
 * A FETCH_WAIT sleeper wakes on the publish of its name, not another:
 * @other is chosen to share @name's wake-up bucket, so the sleeper is
 * woken, looks, and must go back to sleep.
 */
static void nvb_test_wait_woken_by_publish(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *fet = nvb_t_open(test, NULL);
	struct nvb_scope *s = nvb_t_f(fet)->scope;
	char name[NVBRIDGE_NAME_MAX], other[NVBRIDGE_NAME_MAX];
	struct nvb_publish_bucket *b;
	struct nvb_t_waiter *w;
	unsigned long seq;
	u64 id;

	nvb_t_fill_random_name(name, sizeof(name), "wait/");
	b = nvb_publish_bucket(s, name);
	do {
		nvb_t_fill_random_name(other, sizeof(other), "other/");
	} while (nvb_publish_bucket(s, other) != b);
	w = nvb_t_waiter_start(test, NVB_T_FETCH_WAIT, fet, name, -1, true);
	KUNIT_ASSERT_TRUE(test, nvb_t_sleeper(&b->wq));

	seq = READ_ONCE(b->seq);
	KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, other, NVBRIDGE_ACCESS_SCOPE), 0);
	KUNIT_EXPECT_NE(test, READ_ONCE(b->seq), seq);	/* the same bucket */
	msleep(20);
	KUNIT_EXPECT_FALSE(test, nvb_t_waiter_finished(w));
	KUNIT_EXPECT_TRUE(test, nvb_t_sleeper(&nvb_publish_bucket(s, name)->wq));

	KUNIT_ASSERT_EQ(test,
			nvb_t_publish_full(pub, name, NULL, NVBRIDGE_ACCESS_SCOPE,
					   INVALID_UID, INVALID_GID, NULL, 0,
					   &id), 0);
	KUNIT_ASSERT_TRUE(test, nvb_t_waiter_join(w));
	KUNIT_EXPECT_EQ(test, w->ret, 0);
	KUNIT_EXPECT_EQ(test, w->id, id);
}

/* A blocked read() wakes on a PUBLISHED event. */
static void nvb_test_read_woken_by_publish(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *wat = nvb_t_open_flags(test, NULL, 0);	/* blocking */
	char name[NVBRIDGE_NAME_MAX];
	struct nvb_t_waiter *w;
	u64 id;

	nvb_t_fill_random_name(name, sizeof(name), "rd/");
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, name, false, NULL), 0);
	w = nvb_t_waiter_start(test, NVB_T_READ, wat, "", 0, true);
	KUNIT_ASSERT_TRUE(test, nvb_t_sleeper(&nvb_t_f(wat)->read_wq));
	KUNIT_EXPECT_FALSE(test, nvb_t_waiter_finished(w));

	KUNIT_ASSERT_EQ(test,
			nvb_t_publish_full(pub, name, NULL, NVBRIDGE_ACCESS_OWNER,
					   INVALID_UID, INVALID_GID, NULL, 0,
					   &id), 0);
	KUNIT_ASSERT_TRUE(test, nvb_t_waiter_join(w));
	KUNIT_EXPECT_EQ(test, w->ret, (int)sizeof(struct nvbridge_event));
	KUNIT_EXPECT_EQ(test, w->ev.type, NVBRIDGE_EVENT_PUBLISHED);
	KUNIT_EXPECT_EQ(test, w->ev.id, id);
}

/* A blocked read() wakes on the REVOKED event of a released publisher. */
static void nvb_test_read_woken_by_revoke(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *wat = nvb_t_open_flags(test, NULL, 0);
	struct nvbridge_event ev;
	char name[NVBRIDGE_NAME_MAX];
	struct nvb_t_waiter *w;
	u64 id;

	nvb_t_fill_random_name(name, sizeof(name), "rv/");
	KUNIT_ASSERT_EQ(test,
			nvb_t_publish_full(pub, name, NULL, NVBRIDGE_ACCESS_OWNER,
					   INVALID_UID, INVALID_GID, NULL, 0,
					   &id), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, name, false, NULL), 0);
	w = nvb_t_waiter_start(test, NVB_T_READ, wat, "", 0, true);
	KUNIT_ASSERT_TRUE(test, nvb_t_sleeper(&nvb_t_f(wat)->read_wq));

	nvb_t_close(test, pub);
	KUNIT_ASSERT_TRUE(test, nvb_t_waiter_join(w));
	KUNIT_EXPECT_EQ(test, w->ret, (int)sizeof(ev));
	KUNIT_EXPECT_EQ(test, w->ev.type, NVBRIDGE_EVENT_REVOKED);
	KUNIT_EXPECT_EQ(test, w->ev.reason, NVBRIDGE_REVOKE_CLOSED);
	KUNIT_EXPECT_EQ(test, w->ev.id, id);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch(wat, name), -ENOENT);
}

/* FETCH_WAIT with a timeout: -ETIMEDOUT, not before the deadline. */
static void nvb_test_wait_timeout(struct kunit *test)
{
	struct file *fet = nvb_t_open(test, NULL);
	char name[NVBRIDGE_NAME_MAX];
	struct nvb_fetched r = {};
	struct nvb_t_waiter *w;

	nvb_t_fill_random_name(name, sizeof(name), "to/");
	/* timeout 0 and absent: at once */
	KUNIT_EXPECT_EQ(test, nvb_fetch_wait(nvb_t_f(fet), name, 0, true, 0, &r),
			-ETIMEDOUT);
	w = nvb_t_waiter_start(test, NVB_T_FETCH_WAIT, fet, name,
			       30 * NSEC_PER_MSEC, true);
	KUNIT_ASSERT_TRUE(test, nvb_t_waiter_join(w));
	KUNIT_EXPECT_EQ(test, w->ret, -ETIMEDOUT);
	KUNIT_EXPECT_GE(test, ktime_to_ns(w->elapsed), 30 * NSEC_PER_MSEC);
}

/*
 * A signal interrupts FETCH_WAIT: -ERESTARTSYS inside, which the ioctl
 * turns into a restart when no handler runs and -EINTR when one does.
 */
static void nvb_test_wait_signal(struct kunit *test)
{
	struct file *fet = nvb_t_open(test, NULL);
	struct nvb_scope *s = nvb_t_f(fet)->scope;
	char name[NVBRIDGE_NAME_MAX];
	struct nvb_t_waiter *w;

	nvb_t_fill_random_name(name, sizeof(name), "sig/");
	w = nvb_t_waiter_start(test, NVB_T_FETCH_WAIT, fet, name, -1, true);
	KUNIT_ASSERT_TRUE(test, nvb_t_sleeper(&nvb_publish_bucket(s, name)->wq));
	send_sig(SIGUSR1, w->task, 1);
	KUNIT_ASSERT_TRUE(test, nvb_t_waiter_join(w));
	KUNIT_EXPECT_EQ(test, w->ret, -ERESTARTSYS);
}

/*
 * Released outside an exiting task (here: a kernel thread's fput, as a
 * close() or a deferred release): the reason is CLOSED.  EXITED is what a
 * real exit gives (do_exit() runs the release with PF_EXITING set); that
 * needs a user process and is proven end to end (tests/vm/e2e.c,
 * publisher_exit_revokes and publisher_sigkill_revokes).
 */
static void nvb_test_revoke_reason_closed(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *wat = nvb_t_open(test, NULL);
	char name[NVBRIDGE_NAME_MAX];
	struct nvbridge_event ev;

	nvb_t_fill_random_name(name, sizeof(name), "exit/");
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, "exit/", true, NULL), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, name, NVBRIDGE_ACCESS_OWNER), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_read_events(wat, &ev, 1), 1);
	KUNIT_ASSERT_FALSE(test, current->flags & PF_EXITING);
	nvb_t_close(test, pub);
	KUNIT_ASSERT_EQ(test, nvb_t_read_events(wat, &ev, 1), 1);
	KUNIT_EXPECT_EQ(test, ev.type, NVBRIDGE_EVENT_REVOKED);
	KUNIT_EXPECT_EQ(test, ev.reason, NVBRIDGE_REVOKE_CLOSED);
	KUNIT_EXPECT_STREQ(test, ev.name, name);
}

static struct kunit_case nvb_lock_cases[] = {
	KUNIT_CASE(nvb_test_lock_publish_watch_revoke),
	KUNIT_CASE(nvb_test_wait_woken_by_publish),
	KUNIT_CASE(nvb_test_read_woken_by_publish),
	KUNIT_CASE(nvb_test_read_woken_by_revoke),
	KUNIT_CASE(nvb_test_wait_timeout),
	KUNIT_CASE(nvb_test_wait_signal),
	KUNIT_CASE(nvb_test_revoke_reason_closed),
	{}
};

static struct kunit_suite nvb_lock_suite = {
	.name = "nvbridge_locking",
	.init = nvb_t_init,
	.exit = nvb_t_exit,
	.test_cases = nvb_lock_cases,
};

/* ================================================================== */
/* Suite 2: names                                                     */

/* The name alphabet as Documentation/abi.rst states it, not as the code does. */
static bool nvb_t_name_char_ok(unsigned char c)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-";

	return c && memchr(abc, c, sizeof(abc) - 1);
}

static void nvb_test_name_valid(struct kunit *test)
{
	static const char * const ok[] = {
		"a", "Z", "0", "gpu0/buf.1", "job:42/rank-7_kv", "...", "/",
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
	};
	int i;

	for (i = 0; i < ARRAY_SIZE(ok); i++) {
		KUNIT_EXPECT_EQ_MSG(test, nvb_name_check(ok[i], false),
				    (int)strlen(ok[i]), "name \"%s\"", ok[i]);
		KUNIT_EXPECT_EQ_MSG(test, nvb_name_check(ok[i], true),
				    (int)strlen(ok[i]), "prefix \"%s\"", ok[i]);
	}
}

/* Every byte value, in the middle of a name: accepted iff in the set. */
static void nvb_test_name_every_byte(struct kunit *test)
{
	char name[NVBRIDGE_NAME_MAX];
	int c, expect;

	for (c = 1; c < 256; c++) {
		snprintf(name, sizeof(name), "x%cy", c);
		expect = nvb_t_name_char_ok(c) ? 3 : -EINVAL;
		KUNIT_EXPECT_EQ_MSG(test, nvb_name_check(name, false), expect,
				    "byte 0x%02x", c);
		KUNIT_EXPECT_EQ_MSG(test, nvb_name_check(name, true), expect,
				    "byte 0x%02x as prefix", c);
	}
}

static void nvb_test_name_length(struct kunit *test)
{
	char name[NVBRIDGE_NAME_MAX + 8];

	memset(name, 'n', sizeof(name));
	name[NVBRIDGE_NAME_MAX - 1] = '\0';	/* 63 bytes: the longest */
	KUNIT_EXPECT_EQ(test, nvb_name_check(name, false),
			NVBRIDGE_NAME_MAX - 1);
	name[NVBRIDGE_NAME_MAX - 1] = 'n';	/* 64 bytes: unterminated */
	name[NVBRIDGE_NAME_MAX] = '\0';
	KUNIT_EXPECT_EQ(test, nvb_name_check(name, false), -EINVAL);
	KUNIT_EXPECT_EQ(test, nvb_name_check(name, true), -EINVAL);
	/* empty: not a name, but the "everything" prefix */
	KUNIT_EXPECT_EQ(test, nvb_name_check("", false), -EINVAL);
	KUNIT_EXPECT_EQ(test, nvb_name_check("", true), 0);
}

static void nvb_test_watch_matching(struct kunit *test)
{
	struct nvb_watch w = {};

	w.flags = NVBRIDGE_WATCH_PREFIX;
	w.len = strscpy(w.name, "gpu", sizeof(w.name));
	KUNIT_EXPECT_TRUE(test, nvb_watch_matches(&w, "gpu"));
	KUNIT_EXPECT_TRUE(test, nvb_watch_matches(&w, "gpu0/buf"));
	KUNIT_EXPECT_FALSE(test, nvb_watch_matches(&w, "gp"));
	KUNIT_EXPECT_FALSE(test, nvb_watch_matches(&w, "xgpu"));
	w.flags = 0;
	KUNIT_EXPECT_TRUE(test, nvb_watch_matches(&w, "gpu"));
	KUNIT_EXPECT_FALSE(test, nvb_watch_matches(&w, "gpu0"));
	w.flags = NVBRIDGE_WATCH_PREFIX;
	w.len = strscpy(w.name, "", sizeof(w.name));
	KUNIT_EXPECT_TRUE(test, nvb_watch_matches(&w, "anything"));
}

static struct kunit_case nvb_name_cases[] = {
	KUNIT_CASE(nvb_test_name_valid),
	KUNIT_CASE(nvb_test_name_every_byte),
	KUNIT_CASE(nvb_test_name_length),
	KUNIT_CASE(nvb_test_watch_matching),
	{}
};

static struct kunit_suite nvb_name_suite = {
	.name = "nvbridge_names",
	.init = nvb_t_init,
	.exit = nvb_t_exit,
	.test_cases = nvb_name_cases,
};

/* ================================================================== */
/* Suite 3: access policy, on real kuid/kgid values                   */

/* Publish @name by (@uid, @gid) with @access; return the publisher file. */
static struct file *nvb_t_publish_as(struct kunit *test, uid_t uid, gid_t gid,
				     const char *name, u32 access,
				     kuid_t acl_uid, kgid_t acl_gid)
{
	struct file *pub = nvb_t_open(test, nvb_t_cred(test, uid, gid, NULL, 0));

	KUNIT_ASSERT_EQ(test, nvb_t_publish_full(pub, name, NULL, access,
						 acl_uid, acl_gid, NULL, 0,
						 NULL), 0);
	return pub;
}

/* May (@uid, @gid, @groups) fetch @name?  0 or -ENOENT. */
static int nvb_t_fetch_as(struct kunit *test, uid_t uid, gid_t gid,
			  const gid_t *groups, int ngroups, const char *name)
{
	const struct cred *c = nvb_t_cred(test, uid, gid, groups, ngroups);
	struct file *filp = nvb_t_open(test, c);
	int ret = nvb_t_fetch(filp, name);

	nvb_t_close(test, filp);
	return ret;
}

static void nvb_test_policy_owner(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id();
	char name[NVBRIDGE_NAME_MAX];
	struct file *root;

	nvb_t_fill_random_name(name, sizeof(name), "own/");
	nvb_t_publish_as(test, u, g, name, NVBRIDGE_ACCESS_OWNER,
			 INVALID_UID, INVALID_GID);
	/* same euid, another group: the owner */
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, u, g + 1, NULL, 0, name), 0);
	/* another user in the publisher's group: no */
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, u + 1, g, NULL, 0, name),
			-ENOENT);
	/* uid 0 without capabilities is just another user */
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, 0, 0, NULL, 0, name),
			-ENOENT);
	/* CAP_IPC_OWNER over the scope's namespace overrides, as for SysV */
	root = nvb_t_open(test, NULL);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch(root, name), 0);
}

static void nvb_test_policy_group(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id();
	gid_t with[3] = { g + 7, g, 3 }, without[2] = { g - 1, g + 1 };
	char name[NVBRIDGE_NAME_MAX];

	nvb_t_fill_random_name(name, sizeof(name), "grp/");
	nvb_t_publish_as(test, u, g, name, NVBRIDGE_ACCESS_GROUP,
			 INVALID_UID, INVALID_GID);
	/* publisher's egid as the fetcher's egid */
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, u + 1, g, NULL, 0, name), 0);
	/* ... or among its supplementary groups */
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, u + 2, g + 5, with, 3, name),
			0);
	KUNIT_EXPECT_EQ(test,
			nvb_t_fetch_as(test, u + 3, g + 5, without, 2, name),
			-ENOENT);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, u + 4, g + 6, NULL, 0, name),
			-ENOENT);
}

static void nvb_test_policy_scope(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id();
	char name[NVBRIDGE_NAME_MAX];

	nvb_t_fill_random_name(name, sizeof(name), "scope/");
	nvb_t_publish_as(test, u, g, name, NVBRIDGE_ACCESS_SCOPE,
			 INVALID_UID, INVALID_GID);
	KUNIT_EXPECT_EQ(test,
			nvb_t_fetch_as(test, u + 99, g + 99, NULL, 0, name), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, 0, 0, NULL, 0, name), 0);
}

static void nvb_test_policy_uid(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id(), peer = u + 1000;
	char name[NVBRIDGE_NAME_MAX];

	nvb_t_fill_random_name(name, sizeof(name), "uid/");
	nvb_t_publish_as(test, u, g, name, NVBRIDGE_ACCESS_UID,
			 make_kuid(&init_user_ns, peer), INVALID_GID);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, peer, g + 3, NULL, 0, name),
			0);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, u, g, NULL, 0, name), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, peer + 1, g, NULL, 0, name),
			-ENOENT);
	/* the uid as a group id means nothing */
	KUNIT_EXPECT_EQ(test,
			nvb_t_fetch_as(test, peer - 1, peer, NULL, 0, name),
			-ENOENT);
}

static void nvb_test_policy_gid(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id(), acl = g + 500;
	gid_t sup[2] = { 4, acl };
	char name[NVBRIDGE_NAME_MAX];

	nvb_t_fill_random_name(name, sizeof(name), "gid/");
	nvb_t_publish_as(test, u, g, name, NVBRIDGE_ACCESS_GID, INVALID_UID,
			 make_kgid(&init_user_ns, acl));
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, u + 1, acl, NULL, 0, name),
			0);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, u + 2, g + 1, sup, 2, name),
			0);
	/* the publisher's own group is not what GID grants */
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, u + 3, g, NULL, 0, name),
			-ENOENT);
}

/* PUBLISH's policy ids: read through the publisher's user namespace. */
static void nvb_test_policy_ids(struct kunit *test)
{
	u32 u = nvb_t_random_id();
	struct file *pub = nvb_t_open(test, nvb_t_cred(test, u, u, NULL, 0));
	struct nvbridge_publish a = {};
	kuid_t kuid;
	kgid_t kgid;

	a.access = NVBRIDGE_ACCESS_UID;
	a.uid = u + 1;
	KUNIT_EXPECT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid), 0);
	KUNIT_EXPECT_TRUE(test, uid_eq(kuid, make_kuid(&init_user_ns, u + 1)));
	a.uid = (u32)-1;			/* no such id */
	KUNIT_EXPECT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid),
			-EINVAL);
	a.uid = u + 1;
	a.gid = 5;				/* stray gid */
	KUNIT_EXPECT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid),
			-EINVAL);

	a.access = NVBRIDGE_ACCESS_GID;
	a.uid = 0;
	a.gid = u + 2;
	KUNIT_EXPECT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid), 0);
	KUNIT_EXPECT_TRUE(test, gid_eq(kgid, make_kgid(&init_user_ns, u + 2)));
	a.gid = (u32)-1;
	KUNIT_EXPECT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid),
			-EINVAL);

	a.access = NVBRIDGE_ACCESS_OWNER;
	a.gid = 0;
	KUNIT_EXPECT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid), 0);
	a.uid = 3;				/* ids only with UID/GID */
	KUNIT_EXPECT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid),
			-EINVAL);
	a.uid = 0;
	a.access = NVBRIDGE_ACCESS_MAX + 1;
	KUNIT_EXPECT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid),
			-EINVAL);
}

/* Denied is absent: -ENOENT, a wait runs out its time; LIST omits it. */
static void nvb_test_policy_denied_fetch_list(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id();
	struct nvbridge_entry_info info[4];
	char name[NVBRIDGE_NAME_MAX], open[NVBRIDGE_NAME_MAX];
	struct nvb_fetched r = {};
	struct file *other;
	ktime_t t0;

	nvb_t_fill_random_name(name, sizeof(name), "deny/");
	nvb_t_fill_random_name(open, sizeof(open), "open/");
	nvb_t_publish_as(test, u, g, name, NVBRIDGE_ACCESS_OWNER,
			 INVALID_UID, INVALID_GID);
	nvb_t_publish_as(test, u, g, open, NVBRIDGE_ACCESS_SCOPE,
			 INVALID_UID, INVALID_GID);
	other = nvb_t_open(test, nvb_t_cred(test, u + 1, g, NULL, 0));

	t0 = ktime_get();
	KUNIT_EXPECT_EQ(test, nvb_fetch_wait(nvb_t_f(other), name, 0, true,
					     100 * NSEC_PER_MSEC, &r), -ETIMEDOUT);
	KUNIT_EXPECT_GE(test, ktime_to_ms(ktime_sub(ktime_get(), t0)), 100);
	KUNIT_EXPECT_EQ(test, nvb_fetch_wait(nvb_t_f(other), name, 0, false, 0,
					     &r), -ENOENT);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch(other, "absent.name"), -ENOENT);

	KUNIT_ASSERT_EQ(test, nvb_list_collect(nvb_t_f(other), 0, info, 4), 1U);
	KUNIT_EXPECT_STREQ(test, info[0].name, open);
	KUNIT_EXPECT_EQ(test, info[0].uid, u);
	KUNIT_EXPECT_EQ(test, info[0].gid, g);
	KUNIT_EXPECT_EQ(test, info[0].access, (u32)NVBRIDGE_ACCESS_SCOPE);
	KUNIT_EXPECT_EQ(test, info[0].flags, 0U);
}

/* Watchers get events only for entries they may fetch. */
static void nvb_test_policy_events_filtered(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id();
	struct file *pub = nvb_t_open(test, nvb_t_cred(test, u, g, NULL, 0));
	struct file *mate = nvb_t_open(test, nvb_t_cred(test, u + 1, g, NULL, 0));
	struct file *stranger = nvb_t_open(test,
					   nvb_t_cred(test, u + 2, g + 2, NULL, 0));
	struct nvbridge_event ev[2];
	char name[NVBRIDGE_NAME_MAX];

	nvb_t_fill_random_name(name, sizeof(name), "ev/");
	KUNIT_ASSERT_EQ(test, nvb_t_watch(mate, "ev/", true, NULL), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_watch(stranger, "ev/", true, NULL), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, name, NVBRIDGE_ACCESS_GROUP), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_read_events(mate, ev, 2), 1);
	KUNIT_EXPECT_EQ(test, ev[0].uid, u);
	KUNIT_EXPECT_EQ(test, ev[0].gid, g);
	KUNIT_EXPECT_EQ(test, ev[0].pid, (u32)task_tgid_nr(current));
	KUNIT_EXPECT_EQ(test, nvb_t_read_events(stranger, ev, 2), -EAGAIN);
	KUNIT_EXPECT_EQ(test, nvb_poll(stranger, NULL), 0U);
}

/*
 * FETCH_EXPECT_UID addresses (name, owner): another owner's entry of the
 * name is absent for it, and without the flag two owners are -ENOTUNIQ.
 */
static void nvb_test_policy_expect_uid(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id();
	struct file *fet = nvb_t_open(test, nvb_t_cred(test, u + 1, g, NULL, 0));
	char name[NVBRIDGE_NAME_MAX];
	struct nvb_fetched r = {};

	nvb_t_fill_random_name(name, sizeof(name), "exp/");
	nvb_t_publish_as(test, u, g, name, NVBRIDGE_ACCESS_SCOPE,
			 INVALID_UID, INVALID_GID);
	KUNIT_EXPECT_EQ(test, nvb_fetch_expect(nvb_t_f(fet), name, 0,
					       make_kuid(&init_user_ns, u),
					       false, &(s64){ 0 }, &r), 0);
	KUNIT_EXPECT_EQ(test, r.uid, u);
	nvb_fetched_release(&r);
	/* another owner's entry, seen by someone who expected u + 2 */
	KUNIT_EXPECT_EQ(test, nvb_fetch_expect(nvb_t_f(fet), name, 0,
					       make_kuid(&init_user_ns, u + 2),
					       true, &(s64){ 100 * NSEC_PER_MSEC },
					       &r), -ETIMEDOUT);
	KUNIT_EXPECT_NULL(test, r.e);
	nvb_fetched_release(&r);
	/* u + 2 publishes the same name: both exist, owners tell them apart */
	nvb_t_publish_as(test, u + 2, g, name, NVBRIDGE_ACCESS_SCOPE,
			 INVALID_UID, INVALID_GID);
	KUNIT_EXPECT_EQ(test, nvb_fetch_expect(nvb_t_f(fet), name, 0,
					       make_kuid(&init_user_ns, u + 2),
					       false, &(s64){ 0 }, &r), 0);
	KUNIT_EXPECT_EQ(test, r.uid, u + 2);
	nvb_fetched_release(&r);
	KUNIT_EXPECT_EQ(test, nvb_fetch_expect(nvb_t_f(fet), name, 0,
					       INVALID_UID, true,
					       &(s64){ -1 }, &r), -ENOTUNIQ);
	/* denial by policy comes first */
	nvb_t_fill_random_name(name, sizeof(name), "exp/");
	nvb_t_publish_as(test, u, g, name, NVBRIDGE_ACCESS_OWNER,
			 INVALID_UID, INVALID_GID);
	KUNIT_EXPECT_EQ(test, nvb_fetch_expect(nvb_t_f(fet), name, 0,
					       make_kuid(&init_user_ns, u + 2),
					       false, &(s64){ 0 }, &r), -ENOENT);
}

/*
 * INFO's count (nvbridge_visible.c): what the policy admits, each entry
 * once, also to an owner in its entries' groups or a viewer holding a
 * gid twice; it follows unpublish and release (a counter left behind
 * would trip the scope's WARN_ON at its last close).
 */
static void nvb_test_policy_info_count(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id();
	gid_t pg[2] = { g + 1, g + 2 };
	static const struct { u32 access, du, dg; } pe[8] = {
		{ NVBRIDGE_ACCESS_OWNER }, { NVBRIDGE_ACCESS_GROUP },
		{ NVBRIDGE_ACCESS_SCOPE }, { NVBRIDGE_ACCESS_UID, 1 },
		{ NVBRIDGE_ACCESS_UID, 0 }, { NVBRIDGE_ACCESS_GID, 0, 1 },
		{ NVBRIDGE_ACCESS_GID, 0, 2 }, { NVBRIDGE_ACCESS_GID, 0, 10 },
	};
	struct { u32 du, dg; int ng; gid_t dgs[3]; unsigned int want, after; } v[5] = {
		{ 0, 0, 2, { 1, 2 }, 8, 7 },	/* the owner, in its groups */
		{ 1, 10, 0, { 0 }, 3, 3 },	/* scope, uid, gid g+10 (egid) */
		{ 2, 0, 3, { 1, 1, 0 }, 3, 2 },	/* scope, group, gid g+1: twice */
		{ 3, 99, 2, { 2, 10 }, 3, 3 },	/* scope, gid g+2, gid g+10 */
		{ 4, 99, 0, { 0 }, 1, 1 },	/* scope */
	};
	struct file *vf[5], *pub;
	unsigned int base[5];
	u64 ids[8];
	int i, k;

	for (i = 0; i < 5; i++) {
		gid_t gs[3];

		for (k = 0; k < v[i].ng; k++)
			gs[k] = g + v[i].dgs[k];
		vf[i] = nvb_t_open(test, nvb_t_cred(test, u + v[i].du, g + v[i].dg, gs,
						    v[i].ng));
		base[i] = nvb_visible_entries(nvb_t_f(vf[i]));
	}
	pub = nvb_t_open(test, nvb_t_cred(test, u, g, pg, 2));
	for (i = 0; i < 8; i++) {
		bool by_uid = pe[i].access == NVBRIDGE_ACCESS_UID;
		bool by_gid = pe[i].access == NVBRIDGE_ACCESS_GID;
		kuid_t au = by_uid ? make_kuid(&init_user_ns, u + pe[i].du) : INVALID_UID;
		kgid_t ag = by_gid ? make_kgid(&init_user_ns, g + pe[i].dg) : INVALID_GID;
		char name[NVBRIDGE_NAME_MAX];

		nvb_t_fill_random_name(name, sizeof(name), "cnt/");
		KUNIT_ASSERT_EQ(test, nvb_t_publish_full(pub, name, NULL, pe[i].access,
							 au, ag, NULL, 0, &ids[i]), 0);
	}
	for (i = 0; i < 5; i++)
		KUNIT_EXPECT_EQ_MSG(test, nvb_visible_entries(nvb_t_f(vf[i])) - base[i],
				    v[i].want, "viewer %d", i);
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(pub), ids[1], NULL), 0);	/* GROUP */
	for (i = 0; i < 5; i++)
		KUNIT_EXPECT_EQ_MSG(test, nvb_visible_entries(nvb_t_f(vf[i])) - base[i],
				    v[i].after, "viewer %d after UNPUBLISH", i);
	nvb_t_close(test, pub);
	for (i = 0; i < 5; i++)
		KUNIT_EXPECT_EQ_MSG(test, nvb_visible_entries(nvb_t_f(vf[i])), base[i],
				    "viewer %d after release", i);
}

/*
 * The sum over a viewer's gids from either side (nvbridge_visible.c): the
 * scope's GACL counters while fewer than the viewer's gids, the gids
 * after, the same count and LIST; and LIST's room, sized before the
 * lock, sized again when the scope gained GACL counters meanwhile.
 */
static void nvb_test_policy_gid_sides(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id();
	struct nvbridge_entry_info *info;
	unsigned int base, n, j, mine = 0;
	struct file *vf, *pub;
	struct nvb_vlist *l, *lw;
	struct nvb_scope *s;
	gid_t vg[8];
	u64 ids[12];
	int i, k;

	for (i = 0; i < 8; i++)
		vg[i] = g + 100 + i;
	vf = nvb_t_open(test, nvb_t_cred(test, u + 1, g + 99, vg, 8));
	s = nvb_t_f(vf)->scope;
	base = nvb_visible_entries(nvb_t_f(vf));
	KUNIT_ASSERT_EQ(test, READ_ONCE(s->nvgacl), 0U);	/* no test left entries */
	l = nvb_vlist_alloc(s, nvb_t_f(vf)->cred, false);	/* room for SCOPE, OWN, UACL */
	KUNIT_ASSERT_NOT_NULL(test, l);
	/* the last try's room: every gid the viewer holds, whatever comes */
	lw = nvb_vlist_alloc(s, nvb_t_f(vf)->cred, true);
	KUNIT_ASSERT_NOT_NULL(test, lw);
	pub = nvb_t_open(test, nvb_t_cred(test, u, g, NULL, 0));
	/* gids g+100..g+111: the viewer holds the first 8 (9 with its egid) */
	for (i = 0; i < 12; i++) {
		char name[NVBRIDGE_NAME_MAX];

		nvb_t_fill_random_name(name, sizeof(name), "side/");
		KUNIT_ASSERT_EQ(test, nvb_t_publish_full(pub, name, NULL, NVBRIDGE_ACCESS_GID,
							 INVALID_UID,
							 make_kgid(&init_user_ns, g + 100 + i),
							 NULL, 0, &ids[i]), 0);
		KUNIT_EXPECT_EQ_MSG(test, nvb_visible_entries(nvb_t_f(vf)) - base,
				    (unsigned int)min(i + 1, 8), "%d GACL counters", i + 1);
	}
	mutex_lock(&s->lock);
	KUNIT_EXPECT_EQ(test, nvb_vlist_start(l, s, nvb_t_f(vf)->cred, 0), -EAGAIN);
	KUNIT_EXPECT_EQ(test, nvb_vlist_start(lw, s, nvb_t_f(vf)->cred, 0), 0);
	mutex_unlock(&s->lock);
	kvfree(l);
	kvfree(lw);
	info = kunit_kcalloc(test, base + 16, sizeof(*info), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, info);
	n = nvb_list_collect(nvb_t_f(vf), 0, info, base + 16);
	KUNIT_EXPECT_EQ(test, n, base + 8);
	for (j = 0; j < n; j++)
		for (k = 0; k < 12; k++)
			if (info[j].id == ids[k]) {
				KUNIT_EXPECT_LT_MSG(test, k, 8, "listed a gid it does not hold");
				mine++;
			}
	KUNIT_EXPECT_EQ(test, mine, 8U);
	nvb_t_close(test, pub);
	KUNIT_EXPECT_EQ(test, nvb_visible_entries(nvb_t_f(vf)), base);
	KUNIT_EXPECT_EQ(test, READ_ONCE(s->nvgacl), 0U);
}

/*
 * INFO's count and LIST's pages (random sizes, from random cursors) for
 * random viewers against a brute-force policy over random entries of
 * every access, some unpublished and one publisher's all revoked: the
 * in-order walk of the gids beside the group counters' trees and the
 * heap of cursors, with its lazily looked-up heads (nvbridge_visible.c),
 * give what nvb_policy_allows() would.
 */
#define NVB_T_OR_PUBS	4
#define NVB_T_OR_ENTS	120
#define NVB_T_OR_VIEWS	8
#define NVB_T_OR_GIDS	14	/* the pool: g .. g + 13 */

struct nvb_t_or_ent { u64 id; int pub; u32 access, au, ag; bool live; };

static bool nvb_t_or_holds(const gid_t *gs, int n, gid_t eg, gid_t x)
{
	int i;

	for (i = 0; i < n; i++)
		if (gs[i] == x)
			return true;
	return eg == x;
}

/* the brute force: @x (publisher p: uid @u + p, egid @g + p) for viewer @vu, @eg, @gs */
static bool nvb_t_or_sees(const struct nvb_t_or_ent *x, u32 u, u32 g, u32 vu, gid_t eg,
			  const gid_t *gs, int ng)
{
	if (!x->live)
		return false;
	switch (x->access) {
	case NVBRIDGE_ACCESS_SCOPE:
		return true;
	case NVBRIDGE_ACCESS_UID:
		return x->au == vu || u + x->pub == vu;
	case NVBRIDGE_ACCESS_GROUP:
		return nvb_t_or_holds(gs, ng, eg, g + x->pub) || u + x->pub == vu;
	case NVBRIDGE_ACCESS_GID:
		return nvb_t_or_holds(gs, ng, eg, x->ag) || u + x->pub == vu;
	}
	return u + x->pub == vu;
}

static void nvb_test_policy_gid_oracle(struct kunit *test)
{
	u32 u = nvb_t_random_id(), g = nvb_t_random_id();
	static const u32 acc[] = { NVBRIDGE_ACCESS_OWNER, NVBRIDGE_ACCESS_GROUP,
				   NVBRIDGE_ACCESS_SCOPE, NVBRIDGE_ACCESS_UID,
				   NVBRIDGE_ACCESS_GID };
	struct nvbridge_entry_info *info;
	struct nvb_t_or_ent *e;
	struct file *pub[NVB_T_OR_PUBS];
	int i, k, v;

	e = kunit_kcalloc(test, NVB_T_OR_ENTS, sizeof(*e), GFP_KERNEL);
	info = kunit_kcalloc(test, NVB_T_OR_ENTS + 8, sizeof(*info), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, e);
	KUNIT_ASSERT_NOT_NULL(test, info);
	/* publisher p: uid u + p, egid g + p (in the viewers' pool) */
	for (i = 0; i < NVB_T_OR_PUBS; i++)
		pub[i] = nvb_t_open(test, nvb_t_cred(test, u + i, g + i, NULL, 0));
	for (i = 0; i < NVB_T_OR_ENTS; i++) {
		struct nvb_t_or_ent *x = &e[i];
		kuid_t au = INVALID_UID;
		kgid_t ag = INVALID_GID;
		char name[NVBRIDGE_NAME_MAX];

		x->pub = get_random_u32() % NVB_T_OR_PUBS;
		x->access = acc[get_random_u32() % ARRAY_SIZE(acc)];
		x->au = u + get_random_u32() % 6;
		x->ag = g + get_random_u32() % NVB_T_OR_GIDS;
		if (x->access == NVBRIDGE_ACCESS_UID)
			au = make_kuid(&init_user_ns, x->au);
		if (x->access == NVBRIDGE_ACCESS_GID)
			ag = make_kgid(&init_user_ns, x->ag);
		nvb_t_fill_random_name(name, sizeof(name), "or/");
		KUNIT_ASSERT_EQ(test, nvb_t_publish_full(pub[x->pub], name, NULL, x->access, au, ag,
							 NULL, 0, &x->id), 0);
		x->live = true;
	}
	for (i = 0; i < NVB_T_OR_ENTS; i++)	/* a third unpublished, anywhere */
		if (e[i].pub && !(get_random_u32() % 3)) {
			struct nvb_file *pf = nvb_t_f(pub[e[i].pub]);

			KUNIT_ASSERT_EQ(test, nvb_unpublish(pf, e[i].id, NULL), 0);
			e[i].live = false;
		}
	nvb_t_close(test, pub[0]);	/* all of publisher 0's, revoked */
	for (i = 0; i < NVB_T_OR_ENTS; i++)
		e[i].live &= e[i].pub != 0;
	for (v = 0; v < NVB_T_OR_VIEWS; v++) {
		gid_t gs[10], eg = g + get_random_u32() % (NVB_T_OR_GIDS + 2);
		u32 vu = u + get_random_u32() % 6, want = 0, got = 0, n;
		int ng = get_random_u32() % 11;
		u64 cursor = 0;
		struct file *vf;

		for (k = 0; k < ng; k++)	/* duplicates too */
			gs[k] = g + get_random_u32() % (NVB_T_OR_GIDS + 2);
		vf = nvb_t_open(test, nvb_t_cred(test, vu, eg, gs, ng));
		for (i = 0; i < NVB_T_OR_ENTS; i++)
			want += nvb_t_or_sees(&e[i], u, g, vu, eg, gs, ng);
		KUNIT_EXPECT_EQ_MSG(test, nvb_visible_entries(nvb_t_f(vf)), want,
				    "viewer %d: uid +%u egid +%u, %d gids", v, vu - u, eg - g, ng);
		/* pages of 1..7, each from the last id listed */
		while (got < NVB_T_OR_ENTS &&
		       (n = nvb_list_collect(nvb_t_f(vf), cursor, &info[got],
					     1 + get_random_u32() % 7)) > 0) {
			got += n;
			cursor = info[got - 1].id;
		}
		KUNIT_EXPECT_EQ_MSG(test, got, want, "viewer %d: LIST", v);
		for (i = 0, k = 0; i < NVB_T_OR_ENTS && k < (int)got; i++)
			if (nvb_t_or_sees(&e[i], u, g, vu, eg, gs, ng))
				KUNIT_EXPECT_EQ_MSG(test, info[k++].id, e[i].id, "viewer %d", v);
		nvb_t_close(test, vf);
	}
	for (i = 1; i < NVB_T_OR_PUBS; i++)
		nvb_t_close(test, pub[i]);
}

static struct kunit_case nvb_policy_cases[] = {
	KUNIT_CASE(nvb_test_policy_owner),
	KUNIT_CASE(nvb_test_policy_group),
	KUNIT_CASE(nvb_test_policy_scope),
	KUNIT_CASE(nvb_test_policy_uid),
	KUNIT_CASE(nvb_test_policy_gid),
	KUNIT_CASE(nvb_test_policy_ids),
	KUNIT_CASE(nvb_test_policy_denied_fetch_list),
	KUNIT_CASE(nvb_test_policy_events_filtered),
	KUNIT_CASE(nvb_test_policy_expect_uid),
	KUNIT_CASE(nvb_test_policy_info_count),
	KUNIT_CASE(nvb_test_policy_gid_sides),
	KUNIT_CASE(nvb_test_policy_gid_oracle),
	{}
};

static struct kunit_suite nvb_policy_suite = {
	.name = "nvbridge_policy",
	.init = nvb_t_init,
	.exit = nvb_t_exit,
	.test_cases = nvb_policy_cases,
};

/* ================================================================== */
/* Suite 4: namespaces: IPC scope, user-namespace id translation      */

/* Open an nvbridge file from a new IPC namespace (a new scope). */
static struct file *nvb_t_open_new_ipc_ns(struct kunit *test)
{
	struct nsproxy *old = current->nsproxy, *new = NULL;
	struct file *filp;
	int ret;

	ret = unshare_nsproxy_namespaces(CLONE_NEWIPC, &new, NULL, NULL);
	KUNIT_ASSERT_EQ(test, ret, 0);
	KUNIT_ASSERT_NOT_NULL(test, new);
	get_nsproxy(old);
	switch_task_namespaces(current, new);
	filp = nvb_t_open(test, NULL);
	switch_task_namespaces(current, old);
	return filp;
}

static void nvb_test_scope_ipc_ns(struct kunit *test)
{
	struct file *a = nvb_t_open(test, NULL);
	struct file *b = nvb_t_open_new_ipc_ns(test);
	struct file *wb = nvb_t_open_new_ipc_ns(test);
	struct nvbridge_entry_info info[4];
	struct nvbridge_event ev;
	char name[NVBRIDGE_NAME_MAX];
	struct nvb_fetched r = {};
	u64 ida, idb;

	KUNIT_EXPECT_PTR_NE(test, nvb_t_f(a)->scope, nvb_t_f(b)->scope);
	KUNIT_EXPECT_PTR_NE(test, nvb_t_f(b)->scope, nvb_t_f(wb)->scope);
	nvb_t_fill_random_name(name, sizeof(name), "ns/");
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wb, "", true, NULL), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_publish_full(a, name, NULL,
						 NVBRIDGE_ACCESS_SCOPE,
						 INVALID_UID, INVALID_GID,
						 NULL, 0, &ida), 0);
	/* not there in another namespace, even for root */
	KUNIT_EXPECT_EQ(test, nvb_t_fetch(b, name), -ENOENT);
	KUNIT_EXPECT_EQ(test, nvb_list_collect(nvb_t_f(b), 0, info, 4), 0U);
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(b), ida, NULL), -ENOENT);
	KUNIT_EXPECT_EQ(test, nvb_t_read_events(wb, &ev, 1), -EAGAIN);
	/* the same name is free there */
	KUNIT_ASSERT_EQ(test, nvb_t_publish_full(b, name, NULL,
						 NVBRIDGE_ACCESS_SCOPE,
						 INVALID_UID, INVALID_GID,
						 NULL, 0, &idb), 0);
	KUNIT_ASSERT_EQ(test, nvb_fetch_wait(nvb_t_f(a), name, 0, false, 0, &r),
			0);
	KUNIT_EXPECT_EQ(test, r.id, ida);
	nvb_fetched_release(&r);
	KUNIT_EXPECT_EQ(test, nvb_t_f(a)->scope->nr_entries, 1U);
	KUNIT_EXPECT_EQ(test, nvb_t_f(b)->scope->nr_entries, 1U);
}

/* A user namespace mapping 0..999 to @base..@base+999, as a tool would. */
static struct user_namespace *nvb_t_userns(struct kunit *test, u32 base)
{
	struct nvb_t_ctx *ctx = test->priv;
	struct user_namespace *ns;
	struct cred *c;
	int slot;

	for (slot = 0; slot < ARRAY_SIZE(ctx->userns); slot++)
		if (!ctx->userns[slot])
			break;
	KUNIT_ASSERT_LT(test, slot, (int)ARRAY_SIZE(ctx->userns));
	c = prepare_creds();
	KUNIT_ASSERT_NOT_NULL(test, c);
	if (create_user_ns(c)) {
		abort_creds(c);
		KUNIT_ASSERT_FAILURE(test, "create_user_ns failed");
	}
	ns = get_user_ns(c->user_ns);
	abort_creds(c);
	ctx->userns[slot] = ns;

	ns->uid_map.extent[0].first = 0;
	ns->uid_map.extent[0].lower_first = base;
	ns->uid_map.extent[0].count = 1000;
	ns->gid_map.extent[0] = ns->uid_map.extent[0];
	smp_wmb();	/* as map_write(): extents before their count */
	ns->uid_map.nr_extents = 1;
	ns->gid_map.nr_extents = 1;
	return ns;
}

/*
 * Policy ids are read in the publisher's user namespace; the publisher's
 * ids are reported in the fetcher's (overflow ids when unmapped).
 */
static void nvb_test_userns_translation(struct kunit *test)
{
	u32 base = 1000000 + 1000 * (get_random_u32() % 100000);
	u32 other_base = base + 500000000;
	struct user_namespace *ns = nvb_t_userns(test, base);
	struct user_namespace *ns2 = nvb_t_userns(test, other_base);
	struct file *pub = nvb_t_open(test, nvb_t_cred_ns(test, ns, 5, 6,
							  NULL, 0));
	struct nvbridge_publish a = {};
	char name[NVBRIDGE_NAME_MAX];
	struct nvb_fetched r = {};
	struct file *in_ns, *in_ns2;
	kuid_t kuid;
	kgid_t kgid;

	a.access = NVBRIDGE_ACCESS_UID;
	a.uid = 7;
	KUNIT_ASSERT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid), 0);
	KUNIT_EXPECT_EQ(test, __kuid_val(kuid), base + 7);
	a.uid = 1000;				/* not mapped in ns */
	KUNIT_EXPECT_EQ(test, nvb_policy_ids(nvb_t_f(pub), &a, &kuid, &kgid),
			-EINVAL);

	nvb_t_fill_random_name(name, sizeof(name), "userns/");
	KUNIT_ASSERT_EQ(test, nvb_t_publish_full(pub, name, NULL,
						 NVBRIDGE_ACCESS_UID,
						 make_kuid(ns, 7), INVALID_GID,
						 NULL, 0, NULL), 0);
	/* uid 7 of the namespace is base + 7 outside; plain 7 is someone else */
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, base + 7, 1, NULL, 0, name),
			0);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch_as(test, 7, 1, NULL, 0, name),
			-ENOENT);

	/* the init namespace sees the kernel ids */
	KUNIT_ASSERT_EQ(test, nvb_fetch_wait(nvb_t_f(pub), name, 0, false, 0, &r),
			0);
	nvb_fetched_release(&r);
	in_ns = nvb_t_open(test, nvb_t_cred_ns(test, ns, 7, 8, NULL, 0));
	KUNIT_ASSERT_EQ(test, nvb_fetch_wait(nvb_t_f(in_ns), name, 0, false, 0,
					     &r), 0);
	KUNIT_EXPECT_EQ(test, r.uid, 5U);
	KUNIT_EXPECT_EQ(test, r.gid, 6U);
	nvb_fetched_release(&r);
	in_ns2 = nvb_t_open(test, nvb_t_cred_ns(test, ns2, 0, 0, NULL, 0));
	KUNIT_EXPECT_EQ(test, nvb_t_fetch(in_ns2, name), -ENOENT);
	/* SCOPE entry: readable from ns2, which cannot map the publisher */
	nvb_t_fill_random_name(name, sizeof(name), "userns/");
	KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, name, NVBRIDGE_ACCESS_SCOPE), 0);
	KUNIT_ASSERT_EQ(test, nvb_fetch_wait(nvb_t_f(in_ns2), name, 0, false, 0,
					     &r), 0);
	KUNIT_EXPECT_EQ(test, r.uid, (u32)overflowuid);
	KUNIT_EXPECT_EQ(test, r.gid, (u32)overflowgid);
	nvb_fetched_release(&r);
	{
		struct file *root = nvb_t_open(test, NULL);

		KUNIT_ASSERT_EQ(test, nvb_fetch_wait(nvb_t_f(root), name, 0,
						     false, 0, &r), 0);
		KUNIT_EXPECT_EQ(test, r.uid, base + 5);
		KUNIT_EXPECT_EQ(test, r.gid, base + 6);
		nvb_fetched_release(&r);
	}
}

static struct kunit_case nvb_ns_cases[] = {
	KUNIT_CASE(nvb_test_scope_ipc_ns),
	KUNIT_CASE(nvb_test_userns_translation),
	{}
};

static struct kunit_suite nvb_ns_suite = {
	.name = "nvbridge_namespaces",
	.init = nvb_t_init,
	.exit = nvb_t_exit,
	.test_cases = nvb_ns_cases,
};

/* ================================================================== */
/* Suite 5: the registry: duplicates, quota, revocation, references   */

static void nvb_test_duplicate_and_ids(struct kunit *test)
{
	struct file *a = nvb_t_open(test, NULL);
	struct file *b = nvb_t_open(test, NULL);
	char name[NVBRIDGE_NAME_MAX];
	u64 id1, id2;

	nvb_t_fill_random_name(name, sizeof(name), "dup/");
	KUNIT_ASSERT_EQ(test, nvb_t_publish_full(a, name, NULL, 0, INVALID_UID,
						 INVALID_GID, NULL, 0, &id1), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_publish(a, name, 0), -EEXIST);
	KUNIT_EXPECT_EQ(test, nvb_t_publish(b, name, 0), -EEXIST);
	KUNIT_EXPECT_EQ(test, nvb_t_nr_entries(), 1U);
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(a), 0, name), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_publish_full(b, name, NULL, 0, INVALID_UID,
						 INVALID_GID, NULL, 0, &id2), 0);
	KUNIT_EXPECT_GT(test, id2, id1);	/* never reused */
}

static void nvb_test_quota(struct kunit *test)
{
	u32 u = nvb_t_random_id();
	const struct cred *c = nvb_t_cred(test, u, u, NULL, 0);
	struct file *a = nvb_t_open(test, c), *b = nvb_t_open(test, c);
	struct file *other = nvb_t_open(test, nvb_t_cred(test, u + 1, u, NULL, 0));
	char name[5][NVBRIDGE_NAME_MAX];
	int i;

	WRITE_ONCE(nvb_max_entries_per_user.val, 3);
	for (i = 0; i < 5; i++)
		nvb_t_fill_random_name(name[i], sizeof(name[i]), "quota/");
	/* the quota is per user, over all of its open files */
	KUNIT_ASSERT_EQ(test, nvb_t_publish(a, name[0], 0), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_publish(b, name[1], 0), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_publish(a, name[2], 0), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_user_entries(u), 3U);
	KUNIT_EXPECT_EQ(test, nvb_t_publish(b, name[3], 0), -ENOSPC);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch(a, name[3]), -ENOENT);
	/* another user is not charged */
	KUNIT_EXPECT_EQ(test, nvb_t_publish(other, name[4], 0), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_user_entries(u + 1), 1U);
	/* unpublishing gives the slot back; releasing a file too */
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(b), 0, name[1]), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_publish(b, name[3], 0), 0);
	nvb_t_close(test, a);
	KUNIT_EXPECT_EQ(test, nvb_t_user_entries(u), 1U);
	KUNIT_EXPECT_EQ(test, nvb_t_publish(b, name[0], 0), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_publish(b, name[2], 0), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_publish(b, name[1], 0), -ENOSPC);
}

static void nvb_test_unpublish_errors(struct kunit *test)
{
	struct file *a = nvb_t_open(test, NULL);
	struct file *b = nvb_t_open(test, NULL);
	char name[NVBRIDGE_NAME_MAX];
	u64 id;

	nvb_t_fill_random_name(name, sizeof(name), "unp/");
	KUNIT_ASSERT_EQ(test, nvb_t_publish_full(a, name, NULL, 0, INVALID_UID,
						 INVALID_GID, NULL, 0, &id), 0);
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(b), id, NULL), -EPERM);
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(b), 0, name), -EPERM);
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(a), id + 1000000, NULL),
			-ENOENT);
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(a), 0, "no.such.name"),
			-ENOENT);
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(a), id, NULL), 0);
	KUNIT_EXPECT_EQ(test, nvb_unpublish(nvb_t_f(a), id, NULL), -ENOENT);
}

/* Releasing the publisher revokes its entries and drops their files. */
static void nvb_test_revoke_on_release(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *keep = nvb_t_open(test, NULL);
	struct file *payload = nvb_t_payload(test);
	long refs = file_count(payload);
	char name[3][NVBRIDGE_NAME_MAX], mine[NVBRIDGE_NAME_MAX];
	int i;

	for (i = 0; i < 3; i++) {
		nvb_t_fill_random_name(name[i], sizeof(name[i]), "rel/");
		KUNIT_ASSERT_EQ(test,
				nvb_t_publish_full(pub, name[i], payload,
						   NVBRIDGE_ACCESS_SCOPE,
						   INVALID_UID, INVALID_GID,
						   NULL, 0, NULL), 0);
	}
	nvb_t_fill_random_name(mine, sizeof(mine), "keep/");
	KUNIT_ASSERT_EQ(test, nvb_t_publish(keep, mine, 0), 0);
	KUNIT_EXPECT_EQ(test, file_count(payload), refs + 3);
	KUNIT_EXPECT_EQ(test, nvb_t_nr_entries(), 4U);

	nvb_t_close(test, pub);
	KUNIT_EXPECT_EQ(test, file_count(payload), refs);
	KUNIT_EXPECT_EQ(test, nvb_t_nr_entries(), 1U);
	for (i = 0; i < 3; i++)
		KUNIT_EXPECT_EQ(test, nvb_t_fetch(keep, name[i]), -ENOENT);
	/* another file's entries stay */
	KUNIT_EXPECT_EQ(test, nvb_t_fetch(keep, mine), 0);
}

/*
 * FETCH pins the entry (not a copy of its blob, not a file reference of
 * its own) until released; receive_fd() takes the file reference.  The
 * entry stays published.
 */
static void nvb_test_fetch_copies(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *fet = nvb_t_open(test, NULL);
	struct file *payload = nvb_t_payload(test);
	char name[NVBRIDGE_NAME_MAX];
	struct nvb_fetched r = {};
	u8 blob[200];
	long refs;
	u64 id;

	get_random_bytes(blob, sizeof(blob));
	nvb_t_fill_random_name(name, sizeof(name), "copy/");
	KUNIT_ASSERT_EQ(test, nvb_t_publish_full(pub, name, payload,
						 NVBRIDGE_ACCESS_OWNER,
						 INVALID_UID, INVALID_GID,
						 blob, sizeof(blob), &id), 0);
	refs = file_count(payload);

	KUNIT_EXPECT_EQ(test, nvb_fetch_wait(nvb_t_f(fet), name,
					     sizeof(blob) - 1, false, 0, &r),
			-EMSGSIZE);
	KUNIT_EXPECT_EQ(test, r.blob_len, (u32)sizeof(blob));
	KUNIT_EXPECT_NULL(test, r.file);
	KUNIT_EXPECT_NULL(test, r.e);
	nvb_fetched_release(&r);

	KUNIT_ASSERT_EQ(test, nvb_fetch_wait(nvb_t_f(fet), name, sizeof(blob),
					     false, 0, &r), 0);
	KUNIT_EXPECT_PTR_EQ(test, r.file, payload);
	KUNIT_EXPECT_EQ(test, file_count(payload), refs);
	KUNIT_EXPECT_EQ(test, refcount_read(&r.e->ref), 2U);
	KUNIT_EXPECT_EQ(test, r.id, id);
	KUNIT_EXPECT_EQ(test, r.entry_flags, NVBRIDGE_ENTRY_HAS_FD);
	KUNIT_ASSERT_NOT_NULL(test, r.blob);
	KUNIT_EXPECT_EQ(test, memcmp(r.blob, blob, sizeof(blob)), 0);
	nvb_fetched_release(&r);
	KUNIT_EXPECT_EQ(test, file_count(payload), refs);
	/* not consumed; OWN seen by the publisher's file */
	KUNIT_ASSERT_EQ(test, nvb_fetch_wait(nvb_t_f(pub), name, sizeof(blob),
					     false, 0, &r), 0);
	KUNIT_EXPECT_EQ(test, r.entry_flags,
			NVBRIDGE_ENTRY_HAS_FD | NVBRIDGE_ENTRY_OWN);
	nvb_fetched_release(&r);
}

struct nvb_t_pubthread {
	struct file *filp;
	char name[NVBRIDGE_NAME_MAX];
	int ret;
	struct completion published;
	struct completion go;
};

static int nvb_t_pubthread_fn(void *data)
{
	struct nvb_t_pubthread *p = data;

	p->ret = nvb_t_publish(p->filp, p->name, NVBRIDGE_ACCESS_SCOPE);
	complete(&p->published);
	wait_for_completion(&p->go);
	return 0;
}

/*
 * The publisher's pid is the opener's, taken at open: a thread that
 * publishes through the file, and is gone since, does not show.
 */
static void nvb_test_pid_is_openers(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct nvb_t_pubthread *p;
	struct nvb_fetched r = {};
	struct task_struct *t;
	u32 alive_pid, dead_pid;
	pid_t tgid;
	int i, ret;

	p = kunit_kzalloc(test, sizeof(*p), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, p);
	p->filp = pub;
	nvb_t_fill_random_name(p->name, sizeof(p->name), "pid/");
	init_completion(&p->published);
	init_completion(&p->go);
	t = kthread_create(nvb_t_pubthread_fn, p, "nvb-publisher");
	KUNIT_ASSERT_FALSE(test, IS_ERR(t));
	get_task_struct(t);
	tgid = task_tgid_nr(t);
	wake_up_process(t);
	wait_for_completion(&p->published);
	ret = nvb_fetch_wait(nvb_t_f(pub), p->name, 0, false, 0, &r);
	alive_pid = r.pid;
	nvb_fetched_release(&r);
	complete(&p->go);
	kthread_stop(t);
	KUNIT_ASSERT_EQ(test, p->ret, 0);
	KUNIT_ASSERT_EQ(test, ret, 0);
	KUNIT_EXPECT_EQ(test, alive_pid, (u32)task_tgid_nr(current));
	KUNIT_EXPECT_NE(test, alive_pid, (u32)tgid);
	/* the publishing thread is reaped: still the opener's pid */
	for (i = 0; i < NVB_T_WAIT_MS / 2 && pid_alive(t); i++)
		usleep_range(1000, 2000);
	KUNIT_ASSERT_EQ(test, nvb_fetch_wait(nvb_t_f(pub), p->name, 0,
					     false, 0, &r), 0);
	dead_pid = r.pid;
	nvb_fetched_release(&r);
	KUNIT_EXPECT_EQ(test, dead_pid, (u32)task_tgid_nr(current));
	put_task_struct(t);
}

static struct kunit_case nvb_registry_cases[] = {
	KUNIT_CASE(nvb_test_duplicate_and_ids),
	KUNIT_CASE(nvb_test_quota),
	KUNIT_CASE(nvb_test_unpublish_errors),
	KUNIT_CASE(nvb_test_revoke_on_release),
	KUNIT_CASE(nvb_test_fetch_copies),
	KUNIT_CASE(nvb_test_pid_is_openers),
	{}
};

static struct kunit_suite nvb_registry_suite = {
	.name = "nvbridge_registry",
	.init = nvb_t_init,
	.exit = nvb_t_exit,
	.test_cases = nvb_registry_cases,
};

/* ================================================================== */
/* Suite 6: events and watches                                        */

static void nvb_test_event_overflow(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *wat = nvb_t_open(test, NULL);
	struct nvbridge_event ev[8];
	char name[NVBRIDGE_NAME_MAX];
	int i, n;

	WRITE_ONCE(nvb_max_events.val, 4);
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, "ovf/", true, NULL), 0);
	for (i = 0; i < 7; i++) {
		nvb_t_fill_random_name(name, sizeof(name), "ovf/");
		KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, name, 0), 0);
	}
	KUNIT_EXPECT_EQ(test, nvb_poll(wat, NULL), EPOLLIN | EPOLLRDNORM);
	n = nvb_t_read_events(wat, ev, ARRAY_SIZE(ev));
	KUNIT_ASSERT_EQ(test, n, 5);
	for (i = 0; i < 4; i++) {
		KUNIT_EXPECT_EQ(test, ev[i].type, NVBRIDGE_EVENT_PUBLISHED);
		KUNIT_EXPECT_EQ(test, ev[i].seq, (u64)i + 1);
	}
	KUNIT_EXPECT_EQ(test, ev[4].type, NVBRIDGE_EVENT_OVERFLOW);
	KUNIT_EXPECT_EQ(test, ev[4].lost, 3U);
	KUNIT_EXPECT_EQ(test, ev[4].seq, 7ULL);
	KUNIT_EXPECT_EQ(test, ev[4].id, 0ULL);
	KUNIT_EXPECT_EQ(test, nvb_poll(wat, NULL), 0U);

	/* the next event comes after the overflow record, seq continues */
	nvb_t_fill_random_name(name, sizeof(name), "ovf/");
	KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, name, 0), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_read_events(wat, ev, ARRAY_SIZE(ev)), 1);
	KUNIT_EXPECT_EQ(test, ev[0].type, NVBRIDGE_EVENT_PUBLISHED);
	KUNIT_EXPECT_EQ(test, ev[0].seq, 8ULL);
	KUNIT_EXPECT_STREQ(test, ev[0].name, name);
}

/* Records drop while a loss is unreported; it is read before newer ones. */
static void nvb_test_event_overflow_order(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *wat = nvb_t_open(test, NULL);
	struct nvbridge_event ev[4];
	char name[NVBRIDGE_NAME_MAX];
	int i;

	WRITE_ONCE(nvb_max_events.val, 2);
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, "ord/", true, NULL), 0);
	for (i = 0; i < 3; i++) {
		nvb_t_fill_random_name(name, sizeof(name), "ord/");
		KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, name, 0), 0);
	}
	/* read one: room again, but the loss must still come first */
	KUNIT_ASSERT_EQ(test, nvb_t_read_events(wat, ev, 1), 1);
	nvb_t_fill_random_name(name, sizeof(name), "ord/");
	KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, name, 0), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_read_events(wat, ev, 4), 2);
	KUNIT_EXPECT_EQ(test, ev[0].type, NVBRIDGE_EVENT_PUBLISHED);
	KUNIT_EXPECT_EQ(test, ev[0].seq, 2ULL);
	KUNIT_EXPECT_EQ(test, ev[1].type, NVBRIDGE_EVENT_OVERFLOW);
	KUNIT_EXPECT_EQ(test, ev[1].lost, 2U);
	KUNIT_EXPECT_EQ(test, ev[1].seq, 4ULL);
}

static void nvb_test_event_read_errors(struct kunit *test)
{
	struct file *wat = nvb_t_open(test, NULL);
	struct nvbridge_event ev[2];
	loff_t pos = 0;

	KUNIT_EXPECT_EQ(test, kernel_read(wat, ev, sizeof(ev[0]) - 1, &pos),
			(ssize_t)-EINVAL);
	KUNIT_EXPECT_EQ(test, kernel_read(wat, ev, sizeof(ev), &pos),
			(ssize_t)-EAGAIN);
	KUNIT_EXPECT_EQ(test, nvb_poll(wat, NULL), 0U);
}

static void nvb_test_watch_limits(struct kunit *test)
{
	struct file *wat = nvb_t_open(test, NULL);
	u64 id1, id2, id3;

	WRITE_ONCE(nvb_max_watches.val, 2);
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, "a", false, &id1), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_watch(wat, "a", false, &id3), -EEXIST);
	/* same text as a prefix is another watch */
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, "a", true, &id2), 0);
	KUNIT_EXPECT_NE(test, id1, id2);
	KUNIT_EXPECT_EQ(test, nvb_t_watch(wat, "b", false, &id3), -ENOSPC);
	KUNIT_EXPECT_EQ(test, nvb_watch_del(nvb_t_f(wat), id2 + 100), -ENOENT);
	KUNIT_EXPECT_EQ(test, nvb_watch_del(nvb_t_f(wat), id1), 0);
	KUNIT_EXPECT_EQ(test, nvb_watch_del(nvb_t_f(wat), id1), -ENOENT);
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, "b", false, &id3), 0);
	KUNIT_EXPECT_GT(test, id3, id2);
}

/* One event per matching watch, carrying that watch's id. */
static void nvb_test_watch_one_event_per_watch(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *wat = nvb_t_open(test, NULL);
	struct nvbridge_event ev[4];
	char job[NVBRIDGE_NAME_MAX], name[NVBRIDGE_NAME_MAX];
	u64 wp, we;

	nvb_t_fill_random_name(job, sizeof(job), "job");
	snprintf(name, sizeof(name), "%s/kv", job);
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, job, true, &wp), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_watch(wat, name, false, &we), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, "unrelated.name", 0), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, name, 0), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_read_events(wat, ev, 4), 2);
	KUNIT_EXPECT_EQ(test, ev[0].watch_id, wp);
	KUNIT_EXPECT_EQ(test, ev[1].watch_id, we);
	KUNIT_EXPECT_EQ(test, ev[0].id, ev[1].id);
	/* a dropped watch matches nothing any more */
	KUNIT_ASSERT_EQ(test, nvb_watch_del(nvb_t_f(wat), wp), 0);
	KUNIT_ASSERT_EQ(test, nvb_unpublish(nvb_t_f(pub), 0, name), 0);
	KUNIT_ASSERT_EQ(test, nvb_t_read_events(wat, ev, 4), 1);
	KUNIT_EXPECT_EQ(test, ev[0].watch_id, we);
	KUNIT_EXPECT_EQ(test, ev[0].type, NVBRIDGE_EVENT_REVOKED);
}

static struct kunit_case nvb_event_cases[] = {
	KUNIT_CASE(nvb_test_event_overflow),
	KUNIT_CASE(nvb_test_event_overflow_order),
	KUNIT_CASE(nvb_test_event_read_errors),
	KUNIT_CASE(nvb_test_watch_limits),
	KUNIT_CASE(nvb_test_watch_one_event_per_watch),
	{}
};

static struct kunit_suite nvb_event_suite = {
	.name = "nvbridge_events",
	.init = nvb_t_init,
	.exit = nvb_t_exit,
	.test_cases = nvb_event_cases,
};

/* ================================================================== */
/* Suite 7: the ioctl ABI, with user memory                           */

/* PUBLISH at older, equal and newer struct sizes. */
static void nvb_test_uapi_publish_sizes(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	size_t big = sizeof(struct nvbridge_publish) + 24;
	u8 __user *u = nvb_t_umem(test, PAGE_SIZE * 2);
	struct nvbridge_publish a = {};
	u8 one = 0x5a;
	u64 id;

	a.fd = NVBRIDGE_NO_FD;
	nvb_t_fill_random_name(a.name, sizeof(a.name), "size/");

	a.size = NVBRIDGE_PUBLISH_SIZE_VER0 - 8;	/* older than VER0 */
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &a, sizeof(a)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_PUBLISH, u),
			-EINVAL);
	a.size = PAGE_SIZE + 8;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &a, sizeof(a)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_PUBLISH, u), -E2BIG);
	/* newer caller, non-zero byte the kernel does not know */
	a.size = big;
	KUNIT_ASSERT_EQ(test, clear_user(u, big), 0UL);
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &a, sizeof(a)), 0UL);
	KUNIT_ASSERT_EQ(test, copy_to_user(u + big - 1, &one, 1), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_PUBLISH, u), -E2BIG);
	KUNIT_EXPECT_EQ(test, nvb_t_nr_entries(), 0U);
	/* newer caller, zero tail: fine */
	KUNIT_ASSERT_EQ(test, clear_user(u + big - 1, 1), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_PUBLISH, u), 0);
	KUNIT_ASSERT_EQ(test, copy_from_user(&a, u, sizeof(a)), 0UL);
	id = a.id;
	KUNIT_EXPECT_GT(test, id, 0ULL);
	/* exactly VER0 */
	nvb_t_fill_random_name(a.name, sizeof(a.name), "size/");
	a.size = NVBRIDGE_PUBLISH_SIZE_VER0;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &a, sizeof(a)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_PUBLISH, u), 0);
	KUNIT_ASSERT_EQ(test, copy_from_user(&a, u, sizeof(a)), 0UL);
	KUNIT_EXPECT_GT(test, a.id, id);
	KUNIT_EXPECT_EQ(test, nvb_t_nr_entries(), 2U);
}

/* Output is written back only up to the caller's size. */
static void nvb_test_uapi_copy_out_bounded(struct kunit *test)
{
	struct file *filp = nvb_t_open(test, NULL);
	u8 __user *u = nvb_t_umem(test, PAGE_SIZE);
	struct nvbridge_info info = {};
	u8 canary[16], after[16];

	get_random_bytes(canary, sizeof(canary));
	info.size = NVBRIDGE_INFO_SIZE_VER0;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &info, sizeof(info)), 0UL);
	KUNIT_ASSERT_EQ(test, copy_to_user(u + NVBRIDGE_INFO_SIZE_VER0, canary,
					   sizeof(canary)), 0UL);
	KUNIT_ASSERT_EQ(test, nvb_t_ioctl(filp, NVBRIDGE_IOC_INFO, u), 0);
	KUNIT_ASSERT_EQ(test, copy_from_user(&info, u, sizeof(info)), 0UL);
	KUNIT_ASSERT_EQ(test, copy_from_user(after, u + NVBRIDGE_INFO_SIZE_VER0,
					     sizeof(after)), 0UL);
	KUNIT_EXPECT_EQ(test, memcmp(canary, after, sizeof(after)), 0);
	KUNIT_EXPECT_EQ(test, info.abi_version, (u32)NVBRIDGE_ABI_VERSION);
	KUNIT_EXPECT_EQ(test, info.name_max, (u32)NVBRIDGE_NAME_MAX);
	KUNIT_EXPECT_EQ(test, info.max_blob_size, nvb_limit(&nvb_max_blob_size));
	KUNIT_EXPECT_EQ(test, info.max_events, nvb_limit(&nvb_max_events));
	KUNIT_EXPECT_EQ(test, info.entries, 0U);
}

/* Unknown flags, reserved fields and commands; dispatch ignores size. */
static void nvb_test_uapi_flags_and_commands(struct kunit *test)
{
	struct file *filp = nvb_t_open(test, NULL);
	u8 __user *u = nvb_t_umem(test, PAGE_SIZE);
	struct nvbridge_publish p = {};
	struct nvbridge_fetch f = {};
	struct nvbridge_watch w = {};
	unsigned int cmd;

	p.size = sizeof(p);
	p.fd = NVBRIDGE_NO_FD;
	nvb_t_fill_random_name(p.name, sizeof(p.name), "flags/");
	p.flags = 1;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &p, sizeof(p)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, NVBRIDGE_IOC_PUBLISH, u), -EINVAL);
	p.flags = 0;
	p.__reserved = 1;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &p, sizeof(p)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, NVBRIDGE_IOC_PUBLISH, u), -EINVAL);
	p.__reserved = 0;
	p.access = NVBRIDGE_ACCESS_MAX + 1;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &p, sizeof(p)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, NVBRIDGE_IOC_PUBLISH, u), -EINVAL);

	f.size = sizeof(f);
	f.flags = NVBRIDGE_FETCH_FLAGS_ALL + 1;
	strscpy(f.name, p.name, sizeof(f.name));
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &f, sizeof(f)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, NVBRIDGE_IOC_FETCH, u), -EINVAL);

	w.size = sizeof(w);
	w.flags = NVBRIDGE_WATCH_FLAGS_ALL + 1;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &w, sizeof(w)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, NVBRIDGE_IOC_WATCH, u), -EINVAL);

	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, _IO(NVBRIDGE_IOC_MAGIC, 0x7f), u),
			-ENOTTY);
	cmd = _IOWR('x', 0x01, struct nvbridge_publish);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, cmd, u), -ENOTTY);
	/* a bad pointer is -EFAULT */
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, NVBRIDGE_IOC_INFO,
					  (void __user *)16), -EFAULT);

	/*
	 * The whole command number is matched: another size or direction is
	 * -ENOTTY; a newer struct keeps the VER0 number and grows .size.
	 */
	p.access = NVBRIDGE_ACCESS_OWNER;
	p.size = sizeof(p) + 8;
	KUNIT_ASSERT_EQ(test, clear_user(u, sizeof(p) + 8), 0UL);
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &p, sizeof(p)), 0UL);
	cmd = _IOC(_IOC_READ | _IOC_WRITE, NVBRIDGE_IOC_MAGIC, 0x01,
		   sizeof(p) + 8);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, cmd, u), -ENOTTY);
	cmd = _IOC(_IOC_WRITE, NVBRIDGE_IOC_MAGIC, 0x01, sizeof(p));
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, cmd, u), -ENOTTY);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(filp, NVBRIDGE_IOC_PUBLISH, u), 0);
	KUNIT_EXPECT_EQ(test, nvb_t_fetch(filp, p.name), 0);
}

static long nvb_t_publish_fd(struct file *filp, void __user *u, int fd,
			     const char *name)
{
	struct nvbridge_publish p = {};

	p.size = sizeof(p);
	p.fd = fd;
	p.access = NVBRIDGE_ACCESS_SCOPE;
	strscpy(p.name, name, sizeof(p.name));
	if (copy_to_user(u, &p, sizeof(p)))
		return -EFAULT;
	return nvb_t_ioctl(filp, NVBRIDGE_IOC_PUBLISH, u);
}

/* An nvbridge file cannot be published, through itself or another. */
static void nvb_test_uapi_self_publish_refused(struct kunit *test)
{
	struct file *a = nvb_t_open(test, NULL);
	struct file *b = nvb_t_open(test, NULL);
	void __user *u = nvb_t_umem(test, PAGE_SIZE);
	long ra = file_count(a), rb = file_count(b);
	int fda = nvb_t_install_fd(test, a);
	int fdb = nvb_t_install_fd(test, b);

	KUNIT_EXPECT_EQ(test, nvb_t_publish_fd(a, u, fda, "self"), -EINVAL);
	KUNIT_EXPECT_EQ(test, nvb_t_publish_fd(a, u, fdb, "other"), -EINVAL);
	KUNIT_EXPECT_EQ(test, nvb_t_nr_entries(), 0U);
	/* the references taken to look at them were dropped */
	KUNIT_EXPECT_EQ(test, file_count(a), ra + 1);
	KUNIT_EXPECT_EQ(test, file_count(b), rb + 1);
}

struct nvb_t_ring {
	int fd;
	struct completion done;
};

static int nvb_t_ring_fn(void *data)
{
	struct nvb_t_ring *ring = data;
	struct mm_struct *mm = mm_alloc();
	unsigned long addr;

	ring->fd = -ENOMEM;
	if (mm) {
		mm->task_size = TASK_SIZE;
		arch_pick_mmap_layout(mm, &current->signal->rlim[RLIMIT_STACK]);
		kthread_use_mm(mm);
		addr = vm_mmap(NULL, 0, PAGE_SIZE, PROT_READ | PROT_WRITE,
			       MAP_ANONYMOUS | MAP_PRIVATE, 0);
		if (IS_ERR_VALUE(addr))
			ring->fd = (int)addr;
		else
			ring->fd = sys_io_uring_setup(4, (void __user *)addr);
	}
	complete(&ring->done);
	return 0;
}

/*
 * The publish allowlist: a shmem file (what a memfd is) is admitted; an
 * anonymous-inode file and an AF_UNIX socket (which could carry the
 * publishing file in flight) are -EINVAL, as is any file type not listed.
 */
static const struct file_operations nvb_t_anon_fops = {
	.owner	= THIS_MODULE,
};

static void nvb_test_uapi_allowlist(struct kunit *test)
{
	struct file *a = nvb_t_open(test, NULL);
	void __user *u = nvb_t_umem(test, PAGE_SIZE);
	struct file *anon, *sockf;
	struct socket *sock;

	KUNIT_EXPECT_EQ(test, nvb_t_publish_fd(a, u,
					       nvb_t_install_fd(test, nvb_t_payload(test)),
					       "al/shmem"), 0);

	anon = anon_inode_getfile("[nvbridge-test]", &nvb_t_anon_fops, NULL,
				  O_RDWR);
	KUNIT_ASSERT_FALSE(test, IS_ERR(anon));
	nvb_t_track(test, anon);
	KUNIT_EXPECT_EQ(test, nvb_t_publish_fd(a, u, nvb_t_install_fd(test, anon),
					       "al/anon"), -EINVAL);

	KUNIT_ASSERT_EQ(test, sock_create_kern(&init_net, AF_UNIX, SOCK_STREAM,
					       0, &sock), 0);
	sockf = sock_alloc_file(sock, O_RDWR, NULL);
	KUNIT_ASSERT_FALSE(test, IS_ERR(sockf));
	nvb_t_track(test, sockf);
	KUNIT_EXPECT_EQ(test, nvb_t_publish_fd(a, u, nvb_t_install_fd(test, sockf),
					       "al/unix"), -EINVAL);
	KUNIT_EXPECT_EQ(test, nvb_t_nr_entries(), 1U);
}

/* An io_uring file cannot be published (it can hold registered files). */
static void nvb_test_uapi_io_uring_refused(struct kunit *test)
{
	struct file *a = nvb_t_open(test, NULL);
	void __user *u = nvb_t_umem(test, PAGE_SIZE);
	struct nvb_t_ring *ring;
	struct task_struct *t;
	struct nvb_t_ctx *ctx = test->priv;

	ring = kunit_kzalloc(test, sizeof(*ring), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, ring);
	init_completion(&ring->done);
	/* A thread of its own: an io_uring user is cleaned up at its exit. */
	t = kthread_run(nvb_t_ring_fn, ring, "nvb-ring");
	KUNIT_ASSERT_FALSE(test, IS_ERR(t));
	KUNIT_ASSERT_NE(test, wait_for_completion_timeout(&ring->done,
							  msecs_to_jiffies(NVB_T_WAIT_MS)),
			0UL);
	KUNIT_ASSERT_GE_MSG(test, ring->fd, 0, "io_uring_setup failed");
	if (ctx->nr_fds < NVB_T_MAX_FDS)
		ctx->fds[ctx->nr_fds++] = ring->fd;
	KUNIT_EXPECT_EQ(test, nvb_t_publish_fd(a, u, ring->fd, "ring"), -EINVAL);
	KUNIT_EXPECT_EQ(test, nvb_t_nr_entries(), 0U);
}

/* Bad fds, oversized and unreadable blobs. */
static void nvb_test_uapi_publish_errors(struct kunit *test)
{
	struct file *a = nvb_t_open(test, NULL);
	u8 __user *u = nvb_t_umem(test, PAGE_SIZE);
	struct nvbridge_publish p = {};

	KUNIT_EXPECT_EQ(test, nvb_t_publish_fd(a, u, -2, "badfd"), -EBADF);
	KUNIT_EXPECT_EQ(test, nvb_t_publish_fd(a, u, 1000000, "badfd"), -EBADF);

	p.size = sizeof(p);
	p.fd = NVBRIDGE_NO_FD;
	strscpy(p.name, "blob", sizeof(p.name));
	p.blob_len = nvb_limit(&nvb_max_blob_size) + 1;
	p.blob = (u64)(uintptr_t)(u + 512);
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &p, sizeof(p)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(a, NVBRIDGE_IOC_PUBLISH, u), -EMSGSIZE);
	p.blob_len = 16;
	p.blob = 0;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &p, sizeof(p)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(a, NVBRIDGE_IOC_PUBLISH, u), -EFAULT);
	/* unterminated name */
	p.blob_len = 0;
	memset(p.name, 'q', sizeof(p.name));
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &p, sizeof(p)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(a, NVBRIDGE_IOC_PUBLISH, u), -EINVAL);
	KUNIT_EXPECT_EQ(test, nvb_t_nr_entries(), 0U);
}

/* FETCH installs the published file, close-on-exec unless asked not to. */
static void nvb_test_uapi_fetch_installs_fd(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	struct file *fet = nvb_t_open(test, NULL);
	struct file *payload = nvb_t_payload(test);
	u8 __user *u = nvb_t_umem(test, PAGE_SIZE * 2);
	u8 __user *ublob = u + PAGE_SIZE;
	struct nvbridge_publish p = {};
	struct nvbridge_fetch f = {};
	u8 blob[96], got[96];
	struct file *seen;
	long refs;
	int fd;

	get_random_bytes(blob, sizeof(blob));
	KUNIT_ASSERT_EQ(test, copy_to_user(ublob, blob, sizeof(blob)), 0UL);
	p.size = sizeof(p);
	p.fd = nvb_t_install_fd(test, payload);
	p.access = NVBRIDGE_ACCESS_OWNER;
	p.blob = (u64)(uintptr_t)ublob;
	p.blob_len = sizeof(blob);
	nvb_t_fill_random_name(p.name, sizeof(p.name), "fd/");
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &p, sizeof(p)), 0UL);
	KUNIT_ASSERT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_PUBLISH, u), 0);
	KUNIT_ASSERT_EQ(test, copy_from_user(&p, u, sizeof(p)), 0UL);
	refs = file_count(payload);

	/* blob buffer too small: -EMSGSIZE, the length reported, no fd */
	KUNIT_ASSERT_EQ(test, clear_user(ublob, sizeof(blob)), 0UL);
	f.size = sizeof(f);
	f.blob = (u64)(uintptr_t)ublob;
	f.blob_cap = sizeof(blob) - 1;
	strscpy(f.name, p.name, sizeof(f.name));
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &f, sizeof(f)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(fet, NVBRIDGE_IOC_FETCH, u), -EMSGSIZE);
	KUNIT_ASSERT_EQ(test, copy_from_user(&f, u, sizeof(f)), 0UL);
	KUNIT_EXPECT_EQ(test, f.blob_len, (u32)sizeof(blob));
	KUNIT_EXPECT_EQ(test, file_count(payload), refs);

	f.blob_cap = sizeof(blob);
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &f, sizeof(f)), 0UL);
	fd = nvb_t_ioctl(fet, NVBRIDGE_IOC_FETCH, u);
	nvb_t_adopt_fd(test, fd);
	KUNIT_ASSERT_GE(test, fd, 0);
	KUNIT_ASSERT_EQ(test, copy_from_user(&f, u, sizeof(f)), 0UL);
	KUNIT_ASSERT_EQ(test, copy_from_user(got, ublob, sizeof(got)), 0UL);
	KUNIT_EXPECT_EQ(test, memcmp(got, blob, sizeof(blob)), 0);
	KUNIT_EXPECT_EQ(test, f.id, p.id);
	KUNIT_EXPECT_EQ(test, f.entry_flags, NVBRIDGE_ENTRY_HAS_FD);
	KUNIT_EXPECT_EQ(test, f.pid, (u32)task_tgid_nr(current));
	KUNIT_EXPECT_EQ(test, f.uid, 0U);
	KUNIT_EXPECT_TRUE(test, get_close_on_exec(fd));
	seen = fget(fd);
	KUNIT_EXPECT_PTR_EQ(test, seen, payload);
	if (seen)
		fput(seen);

	f.flags = NVBRIDGE_FETCH_NO_CLOEXEC;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &f, sizeof(f)), 0UL);
	fd = nvb_t_ioctl(fet, NVBRIDGE_IOC_FETCH, u);
	nvb_t_adopt_fd(test, fd);
	KUNIT_ASSERT_GE(test, fd, 0);
	KUNIT_EXPECT_FALSE(test, get_close_on_exec(fd));
}

/* LIST: records at the caller's stride, tails zeroed, cursor advances. */
static void nvb_test_uapi_list_stride(struct kunit *test)
{
	struct file *pub = nvb_t_open(test, NULL);
	size_t stride = sizeof(struct nvbridge_entry_info) + 40;
	u8 __user *u = nvb_t_umem(test, PAGE_SIZE * 2);
	u8 __user *recs = u + PAGE_SIZE;
	struct nvbridge_entry_info info;
	struct nvbridge_list l = {};
	u64 ids[3];
	u8 tail[40];
	char name[NVBRIDGE_NAME_MAX];
	int i;

	for (i = 0; i < 3; i++) {
		nvb_t_fill_random_name(name, sizeof(name), "list/");
		KUNIT_ASSERT_EQ(test, nvb_t_publish_full(pub, name, NULL, 0,
							 INVALID_UID,
							 INVALID_GID, NULL, 0,
							 &ids[i]), 0);
	}
	memset(tail, 0xee, sizeof(tail));
	for (i = 0; i < 3; i++)
		KUNIT_ASSERT_EQ(test, copy_to_user(recs + i * stride +
						   sizeof(info), tail,
						   sizeof(tail)), 0UL);
	l.size = sizeof(l);
	l.entries = (u64)(uintptr_t)recs;
	l.entry_size = stride;
	l.count = 2;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &l, sizeof(l)), 0UL);
	KUNIT_ASSERT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_LIST, u), 2);
	KUNIT_ASSERT_EQ(test, copy_from_user(&l, u, sizeof(l)), 0UL);
	KUNIT_EXPECT_EQ(test, l.count, 2U);
	KUNIT_EXPECT_EQ(test, l.cursor, ids[1]);
	for (i = 0; i < 2; i++) {
		KUNIT_ASSERT_EQ(test, copy_from_user(&info, recs + i * stride,
						     sizeof(info)), 0UL);
		KUNIT_EXPECT_EQ(test, info.id, ids[i]);
		KUNIT_EXPECT_EQ(test, info.flags, NVBRIDGE_ENTRY_OWN);
		KUNIT_ASSERT_EQ(test, copy_from_user(tail, recs + i * stride +
						     sizeof(info),
						     sizeof(tail)), 0UL);
		KUNIT_EXPECT_NULL(test, memchr_inv(tail, 0, sizeof(tail)));
	}
	/* the third record's slot was not touched */
	KUNIT_ASSERT_EQ(test, copy_from_user(tail, recs + 2 * stride +
					     sizeof(info), sizeof(tail)), 0UL);
	KUNIT_EXPECT_NULL(test, memchr_inv(tail, 0xee, sizeof(tail)));

	/* from the cursor: the rest, then nothing */
	KUNIT_ASSERT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_LIST, u), 1);
	KUNIT_ASSERT_EQ(test, copy_from_user(&l, u, sizeof(l)), 0UL);
	KUNIT_EXPECT_EQ(test, l.cursor, ids[2]);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_LIST, u), 0);
	/* records smaller than VER0 are refused */
	l.entry_size = NVBRIDGE_ENTRY_INFO_SIZE_VER0 - 8;
	KUNIT_ASSERT_EQ(test, copy_to_user(u, &l, sizeof(l)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(pub, NVBRIDGE_IOC_LIST, u), -EINVAL);
}

/* FETCH_EXPECT_UID through the ioctl: the id is read in the caller's ns. */
static void nvb_test_uapi_fetch_expect_uid(struct kunit *test)
{
	u32 u = nvb_t_random_id();
	struct file *pub = nvb_t_open(test, nvb_t_cred(test, u, u, NULL, 0));
	struct file *fet = nvb_t_open(test, NULL);
	u8 __user *uf = nvb_t_umem(test, PAGE_SIZE);
	struct nvbridge_fetch f = {};

	nvb_t_fill_random_name(f.name, sizeof(f.name), "uexp/");
	KUNIT_ASSERT_EQ(test, nvb_t_publish(pub, f.name, NVBRIDGE_ACCESS_SCOPE),
			0);
	f.size = sizeof(f);
	f.flags = NVBRIDGE_FETCH_EXPECT_UID;
	f.expect_uid = u;
	KUNIT_ASSERT_EQ(test, copy_to_user(uf, &f, sizeof(f)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(fet, NVBRIDGE_IOC_FETCH, uf), 0);
	f.expect_uid = u + 1;
	KUNIT_ASSERT_EQ(test, copy_to_user(uf, &f, sizeof(f)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(fet, NVBRIDGE_IOC_FETCH, uf), -ENOENT);
	f.expect_uid = (u32)-1;			/* not a uid */
	KUNIT_ASSERT_EQ(test, copy_to_user(uf, &f, sizeof(f)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(fet, NVBRIDGE_IOC_FETCH, uf), -EINVAL);
	f.flags = 0;				/* expect_uid without the flag */
	f.expect_uid = u;
	KUNIT_ASSERT_EQ(test, copy_to_user(uf, &f, sizeof(f)), 0UL);
	KUNIT_EXPECT_EQ(test, nvb_t_ioctl(fet, NVBRIDGE_IOC_FETCH, uf), -EINVAL);
}

static struct kunit_case nvb_uapi_cases[] = {
	KUNIT_CASE(nvb_test_uapi_publish_sizes),
	KUNIT_CASE(nvb_test_uapi_copy_out_bounded),
	KUNIT_CASE(nvb_test_uapi_flags_and_commands),
	KUNIT_CASE(nvb_test_uapi_self_publish_refused),
	KUNIT_CASE(nvb_test_uapi_allowlist),
	KUNIT_CASE(nvb_test_uapi_io_uring_refused),
	KUNIT_CASE(nvb_test_uapi_publish_errors),
	KUNIT_CASE(nvb_test_uapi_fetch_installs_fd),
	KUNIT_CASE(nvb_test_uapi_list_stride),
	KUNIT_CASE(nvb_test_uapi_fetch_expect_uid),
	{}
};

static struct kunit_suite nvb_uapi_suite = {
	.name = "nvbridge_uapi",
	.init = nvb_t_init,
	.exit = nvb_t_exit,
	.test_cases = nvb_uapi_cases,
};

kunit_test_suites(&nvb_lock_suite, &nvb_name_suite, &nvb_policy_suite,
		  &nvb_ns_suite, &nvb_registry_suite, &nvb_event_suite, &nvb_uapi_suite);
