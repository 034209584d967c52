// SPDX-License-Identifier: MIT
/*
 * Conformance cases for contract v2 (/work/contract.md, summarised in
 * Documentation/semantics.md): both backends, errno for errno.  Included
 * by conformance.c, whose helpers (EXPECT, nm, spawn, become...) they use.
 */
#include <linux/capability.h>
#include <sys/eventfd.h>

/* C1: dispatch on the full command number */
static int t_cmd_full_number(void)
{
	unsigned char buf[256];
	struct nvbridge_info *in = (void *)buf;
	struct nvb *h;

	OPEN(h);
	memset(buf, 0, sizeof(buf));
	in->size = sizeof(*in);
	/* INFO's number with another size, another direction, no direction */
	EXPECT(nvb__xfer(h, _IOWR(NVBRIDGE_IOC_MAGIC, 0x07, char[48]), in), -ENOTTY);
	EXPECT(nvb__xfer(h, _IOR(NVBRIDGE_IOC_MAGIC, 0x07, struct nvbridge_info), in), -ENOTTY);
	EXPECT(nvb__xfer(h, _IO(NVBRIDGE_IOC_MAGIC, 0x07), in), -ENOTTY);
	EXPECT(nvb__xfer(h, _IOWR(NVBRIDGE_IOC_MAGIC, 0x02, char[100]), in), -ENOTTY);
	OK(nvb__xfer(h, NVBRIDGE_IOC_INFO, in));
	nvb_close(h);
	return 0;
}

/* C4: the per-user byte quota, -ENOSPC like the entry quota */
static int bytes_child(void *p)
{
	struct nvb_info i = { .sz = sizeof(i) };
	static unsigned char blob[NVBRIDGE_BLOB_MAX];
	uint32_t n, k;
	struct nvb *h;
	char name[40];

	(void)p;
	if (become(2040, 2040, 0, NULL))
		FAIL("become");
	OPEN(h);
	OK(nvb_info(h, &i));
	if (i.max_blob_size == 0)
		SKIP("blobs are disabled here");
	n = (1u << 20) / i.max_blob_size;	/* the default max_bytes_per_user: 1 MiB */
	if (n >= i.max_entries_per_user)
		SKIP("the entry quota (%u) comes before 1 MiB of %u-byte blobs",
		     i.max_entries_per_user, i.max_blob_size);
	for (k = 0; k < n; k++) {
		snprintf(name, sizeof(name), "%s%u", nm("by"), k);
		EXPECT(nvb_publish(h, name, -1, blob, i.max_blob_size, NULL, NULL), 0);
	}
	snprintf(name, sizeof(name), "%s%u", nm("by"), k);
	EXPECT(nvb_publish(h, name, -1, blob, i.max_blob_size, NULL, NULL), -ENOSPC);
	OK(nvb_publish(h, name, -1, NULL, 0, NULL, NULL));	/* no bytes: fine */
	snprintf(name, sizeof(name), "%s0", nm("by"));
	OK(nvb_unpublish(h, 0, name));
	OK(nvb_publish(h, name, -1, blob, i.max_blob_size, NULL, NULL));
	nvb_close(h);
	return 0;
}

static int t_quota_bytes(void)
{
	return reap(spawn(bytes_child, NULL));
}

/* C5: inputs an operation would ignore are refused before any lookup */
static int t_fetch_rejects(void)
{
	struct nvbridge_fetch f;
	unsigned char b[8];
	struct nvb *h;

	OPEN(h);
	OK(nvb_publish(h, nm("nb"), -1, NULL, 0, NULL, NULL));	/* an entry without a blob */
	for (int exists = 0; exists < 2; exists++) {
		memset(&f, 0, sizeof(f));
		f.size = sizeof(f);
		snprintf(f.name, sizeof(f.name), "%s", exists ? nm("nb") : nm("absent"));
		f.timeout_ns = 5;	/* without FETCH_WAIT */
		EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), -EINVAL);
		f.timeout_ns = 0;
		f.blob_cap = 8;		/* capacity, no buffer */
		EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), -EFAULT);
		f.blob_cap = 0;
		f.blob = (uintptr_t)b;	/* a buffer, no capacity */
		EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), -EINVAL);
		f.blob = 0;
		EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), exists ? 0 : -ENOENT);
	}
	nvb_close(h);
	return 0;
}

static int t_unpublish_rejects(void)
{
	struct nvbridge_unpublish u;
	uint64_t id;
	struct nvb *h;

	OPEN(h);
	OK(nvb_publish(h, nm("ux"), -1, NULL, 0, NULL, &id));
	memset(&u, 0, sizeof(u));
	u.size = sizeof(u);
	u.id = id;
	snprintf(u.name, sizeof(u.name), "%s", nm("ux"));	/* both: which one? */
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_UNPUBLISH, &u), -EINVAL);
	memset(u.name, 0, sizeof(u.name));
	OK(nvb__xfer(h, NVBRIDGE_IOC_UNPUBLISH, &u));
	nvb_close(h);
	return 0;
}

static int t_list_rejects(void)
{
	struct nvbridge_list l;
	struct nvbridge_entry_info e[2];
	struct nvb *h;

	OPEN(h);
	memset(&l, 0, sizeof(l));
	l.size = sizeof(l);
	l.entry_size = sizeof(e[0]);
	l.count = 4;	/* no buffer: -EFAULT even with nothing to list */
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_LIST, &l), -EFAULT);
	l.entries = (uintptr_t)e;
	l.count = 2;
	l.entry_size = 100000;	/* never "listing complete" */
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_LIST, &l), -E2BIG);
	l.entry_size = 4097;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_LIST, &l), -E2BIG);
	l.entry_size = NVBRIDGE_ENTRY_INFO_SIZE_VER0 - 1;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_LIST, &l), -EINVAL);
	l.entry_size = sizeof(e[0]);
	CHECK(nvb__xfer(h, NVBRIDGE_IOC_LIST, &l) >= 0, "a good LIST fails");
	nvb_close(h);
	return 0;
}

/* a struct of 4097 bytes with a zero tail: -E2BIG as an answer, the handle still works */
static int t_struct_page_plus_one(void)
{
	static unsigned char big[4200];
	struct nvbridge_publish *p = (void *)big;
	struct nvb *h;

	OPEN(h);
	memset(big, 0, sizeof(big));
	p->size = 4097;
	p->fd = -1;
	snprintf(p->name, sizeof(p->name), "%s", nm("pg"));
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, p), -E2BIG);
	p->size = 4096;
	OK(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, p));
	OK(nvb_fetch(h, nm("pg"), NULL, NULL, 0, NULL, NULL));
	nvb_close(h);
	return 0;
}

/* C2: what a user may not fetch is not counted, listed or announced to it */
struct absent { struct sync s; };

static int absent_publisher(void *p)
{
	struct absent *a = p;
	struct nvb *h;

	if (become(2051, 2051, 0, NULL))
		FAIL("become");
	OPEN(h);
	CHECK(sync_wait(a->s.a[0]) == 0, "parent gone");
	OK(nvb_publish(h, nm("hidden"), -1, NULL, 0, NULL, NULL));	/* OWNER */
	OK(nvb_publish(h, nm("shown"), -1, NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	sync_post(a->s.b[1]);
	CHECK(sync_wait(a->s.a[0]) == 0, "parent gone");
	nvb_close(h);
	return 0;
}

static int t_denied_is_absent(void)
{
	struct nvb_info i0 = { .sz = sizeof(i0) }, i1 = { .sz = sizeof(i1) };
	struct nvb_entry l[64];
	struct nvb_event ev;
	struct absent a;
	uint64_t cur = 0;
	struct nvb *h;
	pid_t p;
	int n, seen = 0;

	sync_init(&a.s);
	p = spawn(absent_publisher, &a);
	if (become(2050, 2050, 0, NULL))
		FAIL("become");
	OPEN(h);
	OK(nvb_watch(h, pfx, NVB_WATCH_PREFIX, NULL));
	OK(nvb_info(h, &i0));
	sync_post(a.s.a[1]);
	CHECK(sync_wait(a.s.b[0]) == 0, "publisher failed");
	OK(nvb_info(h, &i1));
	EXPECT(i1.entries, i0.entries + 1);	/* "shown" only */
	EXPECT(nvb_fetch(h, nm("hidden"), NULL, NULL, 0, NULL, NULL), -ENOENT);
	OK(nvb_fetch(h, nm("shown"), NULL, NULL, 0, NULL, NULL));
	while ((n = nvb_list(h, &cur, l, 64)) > 0)
		for (int k = 0; k < n; k++) {
			CHECK(strcmp(l[k].name, nm("hidden")), "LIST shows a denied entry");
			seen += !strcmp(l[k].name, nm("shown"));
		}
	EXPECT(seen, 1);
	CHECK(ev1(h, &ev) == 1, "no event for the entry it may use");
	CHECK(!strcmp(ev.name, nm("shown")), "first event is for %s", ev.name);
	EXPECT(nvb_event_read(h, &ev, 1, 100000000LL), -ETIMEDOUT);	/* nothing about "hidden" */
	sync_post(a.s.a[1]);
	EXPECT(reap(p), 0);
	nvb_close(h);
	return 0;
}

/*
 * C2, INFO's count: exactly the entries the caller may fetch, whatever the
 * policy, counted once although an owner is also in an entry's group, a
 * group is both egid and supplementary, or appears twice.  The publisher
 * (uid 2070, egid 3070, groups 3071 3072) publishes one entry of each
 * kind; each viewer's INFO must say its expected count and agree with its
 * LIST, which lists the same a record at a time, in id order.
 */
#define CNT_N 8
struct cnt_viewer { uid_t uid; gid_t gid; int ng; gid_t g[3]; uint32_t want; };

static int cnt_publisher(void *p)
{
	struct sync *s = p;
	gid_t g[2] = { 3071, 3072 };
	static const struct { const char *n; uint32_t access, u, g; } e[CNT_N] = {
		{ "c.owner", NVB_ACCESS_OWNER, 0, 0 }, { "c.group", NVB_ACCESS_GROUP, 0, 0 },
		{ "c.scope", NVB_ACCESS_SCOPE, 0, 0 }, { "c.uid", NVB_ACCESS_UID, 2071, 0 },
		{ "c.uidself", NVB_ACCESS_UID, 2070, 0 }, { "c.gid1", NVB_ACCESS_GID, 0, 3071 },
		{ "c.gid2", NVB_ACCESS_GID, 0, 3072 }, { "c.gid3", NVB_ACCESS_GID, 0, 3080 },
	};
	struct nvb *h;

	if (become(2070, 3070, 2, g))
		FAIL("become");
	OPEN(h);
	for (int i = 0; i < CNT_N; i++)
		OK(nvb_publish(h, nm(e[i].n), -1, NULL, 0, pol(e[i].access, e[i].u, e[i].g), NULL));
	sync_post(s->b[1]);
	CHECK(sync_wait(s->a[0]) == 0, "parent gone");
	nvb_close(h);
	return 0;
}

static int cnt_viewer(void *p)
{
	struct cnt_viewer *v = p;
	struct nvb_info i = { .sz = sizeof(i) };
	struct nvb_entry l[64];
	uint64_t cur = 0, last = 0;
	struct nvb *h;
	int n, listed = 0, one = 0;

	if (become(v->uid, v->gid, v->ng, v->g))
		FAIL("become %u", v->uid);
	OPEN(h);
	OK(nvb_info(h, &i));
	while ((n = nvb_list(h, &cur, l, 64)) > 0)
		listed += n;
	EXPECT(n, 0);
	EXPECT(i.entries, v->want);
	EXPECT(i.entries, listed);
	/* a record a call: the same entries, each once, in id order */
	cur = 0;
	while ((n = nvb_list(h, &cur, l, 1)) > 0) {
		CHECK(l[0].id > last && cur == l[0].id, "LIST went from id %llu to %llu (cursor %llu)",
		      (unsigned long long)last, (unsigned long long)l[0].id, (unsigned long long)cur);
		last = l[0].id;
		one += n;
	}
	EXPECT(n, 0);
	EXPECT(one, listed);
	nvb_close(h);
	return 0;
}

static int t_info_counts_policies(void)
{
	static const struct cnt_viewer v[] = {
		{ 2070, 3070, 2, { 3071, 3072 }, CNT_N },	/* the owner, in its entries' groups */
		{ 2071, 3080, 0, { 0 }, 3 },			/* scope, uid, gid3 (egid) */
		{ 2072, 3070, 3, { 3071, 3071, 3070 }, 3 },	/* scope, group, gid1: duplicates */
		{ 2073, 3999, 2, { 3072, 3080 }, 3 },		/* scope, gid2, gid3 */
		{ 2074, 3999, 0, { 0 }, 1 },			/* scope only */
	};
	struct sync s;
	pid_t p;

	sync_init(&s);
	p = spawn(cnt_publisher, &s);
	CHECK(sync_wait(s.b[0]) == 0, "publisher failed");
	for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++)
		EXPECT(reap(spawn(cnt_viewer, (void *)&v[k])), 0);
	sync_post(s.a[1]);
	EXPECT(reap(p), 0);
	return 0;
}

/* C3: names are owned; UNPUBLISH addresses the caller's own */
static int owned_other(void *p)
{
	struct sync *s = p;
	struct nvb *h;

	if (become(2061, 2061, 0, NULL))
		FAIL("become");
	OPEN(h);
	OK(nvb_publish(h, nm("same"), -1, NULL, 0, pol(NVB_ACCESS_SCOPE, 0, 0), NULL));
	OK(nvb_publish(h, nm("mine"), -1, NULL, 0, NULL, NULL));	/* OWNER: invisible */
	sync_post(s->b[1]);
	CHECK(sync_wait(s->a[0]) == 0, "parent gone");
	nvb_close(h);
	return 0;
}

static int t_names_owned(void)
{
	struct nvb_entry e, l[64];
	struct sync s;
	struct nvb *h, *h2;
	uint64_t mine_id = 0, cur = 0;
	pid_t p;
	int n;

	sync_init(&s);
	p = spawn(owned_other, &s);
	CHECK(sync_wait(s.b[0]) == 0, "the other user did not publish");
	OPEN(h);
	OPEN(h2);
	OK(nvb_publish(h, nm("same"), -1, NULL, 0, NULL, NULL));	/* another owner: fine */
	EXPECT(nvb_publish(h2, nm("same"), -1, NULL, 0, NULL, NULL), -EEXIST);	/* same euid */
	OK(nvb_fetch(h, nm("same"), fexp(0, geteuid(), 0), NULL, 0, &e, NULL));
	EXPECT(e.uid, geteuid());
	/* ours and the other's SCOPE entry: two candidates without EXPECT_UID */
	EXPECT(nvb_fetch(h, nm("same"), NULL, NULL, 0, NULL, NULL), -ENOTUNIQ);
	/* UNPUBLISH by name: own only, and only through the publishing handle */
	EXPECT(nvb_unpublish(h2, 0, nm("same")), -EPERM);
	EXPECT(nvb_unpublish(h, 0, nm("mine")), -ENOENT);	/* only the other owner has one */
	/* by id: another's entry: -EPERM where visible, -ENOENT where not */
	while ((n = nvb_list(h2, &cur, l, 64)) > 0)
		for (int k = 0; k < n; k++)
			if (!strcmp(l[k].name, nm("mine")))
				mine_id = l[k].id;
	CHECK(mine_id, "root does not list the other's OWNER entry");
	EXPECT(nvb_unpublish(h2, mine_id, NULL), -EPERM);
	OK(nvb_unpublish(h, 0, nm("same")));
	OK(nvb_fetch(h, nm("same"), NULL, NULL, 0, &e, NULL));	/* one left: the other's */
	EXPECT(e.uid, 2061);
	sync_post(s.a[1]);
	EXPECT(reap(p), 0);
	nvb_close(h2);
	nvb_close(h);
	return 0;
}

static int invisible_unpublish(void *p)
{
	uint64_t id = *(uint64_t *)p;
	struct nvb *h;

	if (become(2062, 2062, 0, NULL))
		FAIL("become");
	OPEN(h);
	EXPECT(nvb_unpublish(h, id, NULL), -ENOENT);	/* root's OWNER entry: not there for us */
	nvb_close(h);
	return 0;
}

static int t_unpublish_invisible_id(void)
{
	uint64_t id;
	struct nvb *h;

	OPEN(h);
	OK(nvb_publish(h, nm("own"), -1, NULL, 0, NULL, &id));
	EXPECT(reap(spawn(invisible_unpublish, &id)), 0);
	OK(nvb_fetch(h, nm("own"), NULL, NULL, 0, NULL, NULL));
	nvb_close(h);
	return 0;
}

/* C7: publishable files are an allowlist */
static int t_publish_allowlist(void)
{
	char dir[] = "/tmp/nvb-cf-allow.XXXXXX";
	int fd, ep, efd;
	struct nvb *h;

	OPEN(h);
	fd = memfd_rand(16, NULL);
	OK(nvb_publish(h, nm("memfd"), fd, NULL, 0, NULL, NULL));
	close(fd);
	/* which regular files: memfiles.c */
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);	/* chrdev 1:3, not allowed */
	EXPECT(nvb_publish(h, nm("null"), fd, NULL, 0, NULL, NULL), -EINVAL);
	close(fd);
	efd = eventfd(0, EFD_CLOEXEC);
	EXPECT(nvb_publish(h, nm("eventfd"), efd, NULL, 0, NULL, NULL), -EINVAL);
	ep = epoll_create1(EPOLL_CLOEXEC);
	EXPECT(nvb_publish(h, nm("epoll"), ep, NULL, 0, NULL, NULL), -EINVAL);
	close(ep);
	close(efd);
	fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (fd >= 0) {
		EXPECT(nvb_publish(h, nm("pidfd"), fd, NULL, 0, NULL, NULL), -EINVAL);
		close(fd);
	}
	fd = open(mkdtemp(dir) ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	EXPECT(nvb_publish(h, nm("dir"), fd, NULL, 0, NULL, NULL), -EINVAL);
	close(fd);
	rmdir(dir);
	nvb_close(h);
	return 0;
}

/* C8: ids are counted per scope, from 1 */
static int scope_ids_child(void *p)
{
	uint64_t id;
	struct nvb *h;

	(void)p;
	if (unshare(CLONE_NEWIPC))
		SKIP("unshare(CLONE_NEWIPC): %s", strerror(errno));
	OPEN(h);
	OK(nvb_publish(h, nm("first"), -1, NULL, 0, NULL, &id));
	EXPECT(id, 1);
	OK(nvb_publish(h, nm("second"), -1, NULL, 0, NULL, &id));
	EXPECT(id, 2);
	nvb_close(h);
	return 0;
}

static int t_ids_per_scope(void)
{
	struct nvb *h;
	int r;

	OPEN(h);
	OK(nvb_publish(h, nm("outer"), -1, NULL, 0, NULL, NULL));	/* moves only our scope */
	r = reap(spawn(scope_ids_child, NULL));
	nvb_close(h);
	return r;
}

/* C6: the override of every policy: the module honours CAP_IPC_OWNER, the broker euid 0 */
static int cap_child(void *p)
{
	struct __user_cap_header_struct hd = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	struct nvb *h;
	int fd = -1;

	(void)p;
	if (prctl(PR_SET_KEEPCAPS, 1) || become(2070, 2070, 0, NULL))
		FAIL("become");
	memset(d, 0, sizeof(d));
	d[0].effective = d[0].permitted = 1u << CAP_IPC_OWNER;
	if (syscall(SYS_capset, &hd, d))
		FAIL("capset: %s", strerror(errno));
	OPEN(h);
	OK(nvb_fetch(h, nm("capown"), NULL, NULL, 0, NULL, &fd));
	CHECK(fd >= 0, "no fd");
	nvb_close(h);
	return 0;
}

static int t_override_by_capability(void)
{
	struct nvb *h;
	int r;

	if (backend == NVB_BACKEND_BROKER)
		SKIP("the broker's override is SO_PEERCRED euid 0 only, no capability is read "
		     "(Documentation/security-model.rst)");
	OPEN(h);
	OK(nvb_publish(h, nm("capown"), memfd_rand(8, NULL), NULL, 0, NULL, NULL));	/* OWNER */
	r = reap(spawn(cap_child, NULL));
	nvb_close(h);
	return r;
}

/*
 * Check order, where one call has several faults: the size first (-E2BIG),
 * then every value (-EINVAL, -EMSGSIZE), then the pointers (-EFAULT), then
 * the fd (-EBADF, what may be published), then the registry (-EEXIST
 * before -ENOSPC): what a kernel engineer expects of an ioctl, whose
 * -EFAULT comes from the copy that follows validation.
 */
static int t_check_order(void)
{
	static unsigned char big[4200];
	struct nvbridge_publish *bp = (void *)big;
	struct nvbridge_publish p;
	struct nvbridge_fetch f;
	struct nvb_info i = { .sz = sizeof(i) };
	struct nvb *h;
	int nul;

	OPEN(h);
	OK(nvb_info(h, &i));
	OK(nvb_publish(h, nm("co"), -1, NULL, 0, NULL, NULL));
	/* FETCH: a NULL blob with a capacity is -EFAULT only when all else is valid */
	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.blob_cap = 8;
	snprintf(f.name, sizeof(f.name), "bad name");
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), -EINVAL);
	snprintf(f.name, sizeof(f.name), "%s", nm("co"));
	f.timeout_ns = 5;				/* without WAIT */
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), -EINVAL);
	f.timeout_ns = 0;
	f.expect_uid = 1;				/* without EXPECT_UID */
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), -EINVAL);
	f.expect_uid = 0;
	f.flags = 1u << 31;				/* unknown flag */
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), -EINVAL);
	f.flags = 0;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f), -EFAULT);
	/* PUBLISH: size, then values, then the blob pointer, then the fd, then the name's owner */
	memset(big, 0, sizeof(big));
	bp->size = 4097;
	bp->flags = 1;
	snprintf(bp->name, sizeof(bp->name), "bad name");
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, bp), -E2BIG);
	memset(&p, 0, sizeof(p));
	p.size = sizeof(p);
	p.fd = 1 << 30;					/* not an open fd */
	p.blob_len = i.max_blob_size + 1;		/* too large, and no pointer */
	snprintf(p.name, sizeof(p.name), "bad name");
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p), -EINVAL);
	snprintf(p.name, sizeof(p.name), "%s", nm("co"));	/* ours already */
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p), -EMSGSIZE);
	p.blob_len = 1;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p), -EFAULT);
	p.blob_len = 0;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p), -EBADF);
	nul = open("/dev/null", O_RDWR | O_CLOEXEC);	/* not publishable */
	p.fd = nul;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p), -EINVAL);
	close(nul);
	p.fd = NVBRIDGE_NO_FD;
	EXPECT(nvb__xfer(h, NVBRIDGE_IOC_PUBLISH, &p), -EEXIST);
	nvb_close(h);
	return 0;
}

/*
 * C8: a scope lives while a file (module) or connection (broker) is open in
 * its IPC namespace; ids are never reused while it lives, and a new scope
 * counts from 1 again (nobody is left who could hold an old id).
 */
static int scope_restart_child(void *p)
{
	uint64_t id;
	struct nvb *h, *keep;

	(void)p;
	if (unshare(CLONE_NEWIPC))
		SKIP("unshare(CLONE_NEWIPC): %s", strerror(errno));
	OPEN(keep);
	OPEN(h);
	OK(nvb_publish(h, nm("r1"), -1, NULL, 0, NULL, &id));
	EXPECT(id, 1);
	nvb_close(h);			/* the scope lives on: "keep" is open */
	OPEN(h);
	OK(nvb_publish(h, nm("r1"), -1, NULL, 0, NULL, &id));
	EXPECT(id, 2);			/* not reused */
	nvb_close(h);
	nvb_close(keep);		/* the last one: the scope goes */
	OPEN(h);
	OK(nvb_publish(h, nm("r1"), -1, NULL, 0, NULL, &id));
	EXPECT(id, 1);
	nvb_close(h);
	return 0;
}

static int t_ids_restart_with_scope(void)
{
	return reap(spawn(scope_restart_child, NULL));
}

/*
 * C10: a handled signal ends a waiting FETCH with -EINTR even under
 * SA_RESTART (as select() and poll() do; the ioctl gives -ERESTARTNOHAND),
 * with the time left written back to timeout_ns; a stop and continue with
 * no handler does not end it.
 */
static int sig_sender(void *p)
{
	pid_t parent = getppid();

	(void)p;
	usleep(200000);
	kill(parent, SIGUSR1);
	return 0;
}

static int stop_cont_publisher(void *p)
{
	pid_t parent = getppid();
	struct nvb *h;

	(void)p;
	OPEN(h);
	usleep(150000);
	kill(parent, SIGSTOP);
	usleep(150000);
	kill(parent, SIGCONT);
	usleep(150000);
	OK(nvb_publish(h, nm("sc"), -1, NULL, 0, NULL, NULL));
	usleep(500000);		/* the entry lives until the fetch has it */
	nvb_close(h);
	return 0;
}

static int t_wait_signal_restart(void)
{
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_RESTART }, old;
	struct nvbridge_fetch f;
	struct nvb *h;
	int64_t t0;
	pid_t p;
	int r;

	sigaction(SIGUSR1, &sa, &old);
	OPEN(h);
	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.flags = NVBRIDGE_FETCH_WAIT;
	f.timeout_ns = 10000000000LL;
	snprintf(f.name, sizeof(f.name), "%s", nm("sr"));
	p = spawn(sig_sender, NULL);
	t0 = now_ns();
	r = nvb__xfer(h, NVBRIDGE_IOC_FETCH, &f);
	reap(p);
	EXPECT(r, -EINTR);
	CHECK(now_ns() - t0 < 5000000000LL, "a handled SA_RESTART signal did not end the wait");
	CHECK(f.timeout_ns > 5000000000LL && f.timeout_ns < 10000000000LL,
	      "time left not written back: %lld", (long long)f.timeout_ns);
	/* no handler: stopped and continued, the wait goes on and gets the entry */
	p = spawn(stop_cont_publisher, NULL);
	EXPECT(nvb_fetch(h, nm("sc"), fwait(5000000000LL, 0), NULL, 0, NULL, NULL), 0);
	EXPECT(reap(p), 0);
	sigaction(SIGUSR1, &old, NULL);
	nvb_close(h);
	return 0;
}

/*
 * Watches per user: max_watches_per_user (module parameter, broker
 * --max-watches-per-user; default 65536 on both) over all of a euid's
 * files or connections, -ENOSPC beyond, as the per-file max_watches.
 * Run as root: the broker bounds connections per non-root uid first.
 */
static int t_watches_per_user(void)
{
	struct rlimit rl = { 8192, 8192 };
	struct nvb_info i = { .sz = sizeof(i) };
	unsigned int max = 65536, total = 0, nh = 0, k;
	struct nvb **hs;
	char n[NVB_NAME_MAX];
	FILE *f;
	int r = 0;

	f = fopen("/sys/module/nvbridge/parameters/max_watches_per_user", "r");
	if (f) {
		if (backend == NVB_BACKEND_KERNEL && fscanf(f, "%u", &max) != 1)
			max = 65536;
		fclose(f);
	}
	if (setrlimit(RLIMIT_NOFILE, &rl))
		SKIP("RLIMIT_NOFILE %u: %s", (unsigned int)rl.rlim_cur, strerror(errno));
	hs = calloc(max / 8 + 2, sizeof(*hs));
	CHECK(hs, "calloc");
	OPEN(hs[0]);
	OK(nvb_info(hs[0], &i));
	CHECK(max / i.max_watches + 2 <= max / 8 + 2, "max_watches %u too small", i.max_watches);
	for (nh = 1; r == 0; nh++) {
		for (k = 0; k < i.max_watches && r == 0; k++) {
			snprintf(n, sizeof(n), "%su%u", pfx, k);
			r = nvb_watch(hs[nh - 1], n, 0, NULL);
			total += r == 0;
		}
		if (r == 0)
			OPEN(hs[nh]);
	}
	nh--;
	EXPECT(r, -ENOSPC);
	EXPECT(total, max);		/* the file's own bound was not the one reached */
	nvb_close(hs[0]);		/* frees max_watches of them */
	OPEN(hs[0]);
	OK(nvb_watch(hs[0], nm("again"), 0, NULL));
	for (k = 0; k < nh; k++)
		nvb_close(hs[k]);
	free(hs);
	return 0;
}
