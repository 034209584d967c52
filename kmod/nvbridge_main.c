// SPDX-License-Identifier: GPL-2.0
/*
 * nvbridge: /dev/nvbridge, a credential-checked, namespace-aware
 * rendezvous for file descriptors and small opaque blobs.
 *
 * A process publishes a file and/or a blob under a name with an access
 * policy; others in the same IPC namespace fetch it by name and owner.
 * An entry belongs to the open file that published it and is revoked when
 * that file is released.  Watchers read fixed-size event records.
 *
 * See Documentation/abi.rst, Documentation/security-model.rst and
 * include/uapi/linux/nvbridge.h; nvbridge_internal.h has the locking.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/device.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hash.h>
#include <linux/hrtimer.h>
#include <linux/hugetlb.h>
#include <linux/ipc_namespace.h>
#include <linux/kdev_t.h>
#include <linux/memcontrol.h>
#include <linux/kernel.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/nsproxy.h>
#include <linux/pid_namespace.h>
#include <linux/poll.h>
#include <linux/proc_ns.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/stringhash.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <uapi/linux/magic.h>

#include "nvbridge_internal.h"

#define CREATE_TRACE_POINTS
#include "nvbridge_trace.h"

/* Largest argument struct accepted, on every architecture and backend. */
#define NVB_ARG_MAX	4096

VISIBLE_IF_KUNIT const struct file_operations nvb_fops;

/* ------------------------------------------------------------------ */
/* Limits                                                             */

static int nvb_limit_set(const char *val, const struct kernel_param *kp)
{
	struct nvb_limit *l = kp->arg;
	unsigned int v;
	int ret;

	ret = kstrtouint(val, 0, &v);
	if (ret)
		return ret;
	if (v < l->min || v > l->max)
		return -ERANGE;
	WRITE_ONCE(l->val, v);
	return 0;
}

static int nvb_limit_get(char *buf, const struct kernel_param *kp)
{
	const struct nvb_limit *l = kp->arg;

	return scnprintf(buf, PAGE_SIZE, "%u\n", READ_ONCE(l->val));
}

static const struct kernel_param_ops nvb_limit_ops = {
	.set = nvb_limit_set,
	.get = nvb_limit_get,
};

struct nvb_limit nvb_max_entries_per_user = { 1024, 1, 1048576 };
struct nvb_limit nvb_max_bytes_per_user = { 1048576, 0, 1073741824 };
struct nvb_limit nvb_max_blob_size = { 4096, 0, NVBRIDGE_BLOB_MAX };
struct nvb_limit nvb_max_events = { 1024, 1, 65536 };
struct nvb_limit nvb_max_watches = { 64, 1, 4096 };
struct nvb_limit nvb_max_watches_per_user = { 65536, 1, 1048576 };

module_param_cb(max_entries_per_user, &nvb_limit_ops,
		&nvb_max_entries_per_user, 0644);
MODULE_PARM_DESC(max_entries_per_user,
		 "Entries one user may own, over all scopes (default 1024)");
module_param_cb(max_bytes_per_user, &nvb_limit_ops,
		&nvb_max_bytes_per_user, 0644);
MODULE_PARM_DESC(max_bytes_per_user,
		 "Blob bytes one user may own, over all scopes (default 1 MiB)");
module_param_cb(max_blob_size, &nvb_limit_ops, &nvb_max_blob_size, 0644);
MODULE_PARM_DESC(max_blob_size, "Largest blob in bytes (default 4096, max 65536)");
module_param_cb(max_events, &nvb_limit_ops, &nvb_max_events, 0644);
MODULE_PARM_DESC(max_events, "Event queue depth per open file (default 1024)");
module_param_cb(max_watches, &nvb_limit_ops, &nvb_max_watches, 0644);
MODULE_PARM_DESC(max_watches, "Watches per open file (default 64)");
module_param_cb(max_watches_per_user, &nvb_limit_ops,
		&nvb_max_watches_per_user, 0644);
MODULE_PARM_DESC(max_watches_per_user,
		 "Watches one user may hold, over all files and scopes (default 65536)");

unsigned int nvb_limit(const struct nvb_limit *l)
{
	return READ_ONCE(l->val);
}

/*
 * Character-device majors whose files may be published.  Readers test
 * single bits without a lock; a write replaces the set bit by bit, so a
 * publish racing it sees each major either before or after the change.
 */
#define NVB_MAJORS	4096	/* MAJOR() of a 32-bit dev_t is 12 bits */
#define NVB_NVIDIA_MAJOR	195
static unsigned long nvb_chrdev_majors[BITS_TO_LONGS(NVB_MAJORS)] = {
	[NVB_NVIDIA_MAJOR / BITS_PER_LONG] = BIT(NVB_NVIDIA_MAJOR % BITS_PER_LONG),
};

static DEFINE_MUTEX(nvb_majors_lock);

static int nvb_majors_set(const char *val, const struct kernel_param *kp)
{
	DECLARE_BITMAP(set, NVB_MAJORS);
	char *buf, *p, *tok;
	unsigned int m;
	int ret = 0;

	buf = kstrdup(val, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	bitmap_zero(set, NVB_MAJORS);
	p = strim(buf);
	while ((tok = strsep(&p, ",")) != NULL) {
		if (!*tok)
			continue;
		ret = kstrtouint(tok, 10, &m);
		if (!ret && m >= NVB_MAJORS)
			ret = -ERANGE;
		if (ret)
			break;
		__set_bit(m, set);
	}
	kfree(buf);
	if (ret)
		return ret;
	mutex_lock(&nvb_majors_lock);
	for (m = 0; m < NVB_MAJORS; m++)
		assign_bit(m, nvb_chrdev_majors, test_bit(m, set));
	mutex_unlock(&nvb_majors_lock);
	return 0;
}

static int nvb_majors_get(char *buf, const struct kernel_param *kp)
{
	unsigned int m;
	int n = 0;

	mutex_lock(&nvb_majors_lock);
	for_each_set_bit(m, nvb_chrdev_majors, NVB_MAJORS)
		n += scnprintf(buf + n, PAGE_SIZE - n, "%s%u", n ? "," : "", m);
	mutex_unlock(&nvb_majors_lock);
	n += scnprintf(buf + n, PAGE_SIZE - n, "\n");
	return n;
}

static const struct kernel_param_ops nvb_majors_ops = {
	.set = nvb_majors_set,
	.get = nvb_majors_get,
};

module_param_cb(publish_chrdev_majors, &nvb_majors_ops, NULL, 0644);
MODULE_PARM_DESC(publish_chrdev_majors,
		 "Character-device majors whose files may be published, comma-separated (default 195: NVIDIA)");

/* ------------------------------------------------------------------ */
/* Argument copying and file checks                                   */

/*
 * Read an extensible argument: its leading size must be at least @ver0
 * and at most NVB_ARG_MAX; bytes beyond @ksize must be zero (-E2BIG).
 */
static int nvb_copy_in(void *karg, size_t ksize, size_t ver0,
		       const void __user *uarg, u32 *usize)
{
	u32 size;
	int ret;

	if (get_user(size, (const u32 __user *)uarg))
		return -EFAULT;
	if (size < ver0)
		return -EINVAL;
	if (size > NVB_ARG_MAX)
		return -E2BIG;
	ret = copy_struct_from_user(karg, ksize, uarg, size);
	if (ret)
		return ret;
	*usize = size;
	return 0;
}

/* Write back no more than the caller's struct holds. */
static int nvb_copy_out(void __user *uarg, const void *karg, size_t ksize,
			u32 usize)
{
	if (copy_to_user(uarg, karg, min_t(size_t, ksize, usize)))
		return -EFAULT;
	return 0;
}

/*
 * A regular file of hugetlbfs (a MFD_HUGETLB memfd or a file on a hugetlbfs
 * mount).  is_file_hugepages() tests FOP_HUGE_PAGES where the kernel has
 * it; before (6.1) it compares f_op with hugetlbfs_file_operations, which
 * is not exported, so there the superblock's magic answers: every regular
 * file of a hugetlbfs superblock has those f_ops (SysV shm's huge files,
 * the other case is_file_hugepages() knows, never reach a file table).
 */
static bool nvb_file_hugetlb(struct file *file)
{
#ifdef FOP_HUGE_PAGES
	return is_file_hugepages(file);
#else
	return file_inode(file)->i_sb->s_magic == HUGETLBFS_MAGIC;
#endif
}

/*
 * May @file be published?  An allowlist of what exporters hand out, none
 * of which can hold an nvbridge file (so no reference cycle can form):
 * memory-backed regular files, dma-bufs (found by their pseudo filesystem,
 * since is_dma_buf_file() is not exported), and character devices whose
 * major is in publish_chrdev_majors.  An nvbridge file is refused even if
 * an admin lists the misc major.
 *
 * Memory-backed means shmem (memfd, tmpfs, devtmpfs, SysV shm) or
 * hugetlbfs (MFD_HUGETLB memfds included): the test memfd_fcntl() uses
 * for F_GET_SEALS, which is how nvbridged asks the same question.  Every
 * other regular file is refused: a file of FUSE (or NFS, 9p...) can make
 * whoever closes it wait for its server, so an importer handed an
 * attacker's FUSE file would hang, unkillable, on its last close; a file
 * of a disk is not device memory.  This also refuses the anonymous
 * inodes (eventfd, epoll, io_uring...) that are S_IFREG inside the kernel
 * since Linux 6.15: an io_uring can hold files.
 */
static bool nvb_file_publishable(struct file *file)
{
	struct inode *inode = file_inode(file);

	if (file->f_op == &nvb_fops)
		return false;
	if (S_ISREG(inode->i_mode))
		return shmem_mapping(file->f_mapping) || nvb_file_hugetlb(file);
	if (S_ISCHR(inode->i_mode))
		return test_bit(imajor(inode), nvb_chrdev_majors);
	return inode->i_sb->s_magic == DMA_BUF_MAGIC;
}

static int nvb_receive_fd(struct file *file, unsigned int o_flags)
{
#ifdef NVB_HAVE_RECEIVE_FD_UFD
	return receive_fd(file, NULL, o_flags);
#else
	return receive_fd(file, o_flags);
#endif
}

/* ------------------------------------------------------------------ */
/* ioctls                                                             */

VISIBLE_IF_KUNIT int nvb_policy_ids(const struct nvb_file *f,
				    const struct nvbridge_publish *arg,
				    kuid_t *uid, kgid_t *gid)
{
	*uid = INVALID_UID;
	*gid = INVALID_GID;
	switch (arg->access) {
	case NVBRIDGE_ACCESS_UID:
		*uid = make_kuid(f->cred->user_ns, arg->uid);
		if (!uid_valid(*uid) || arg->gid)
			return -EINVAL;
		return 0;
	case NVBRIDGE_ACCESS_GID:
		*gid = make_kgid(f->cred->user_ns, arg->gid);
		if (!gid_valid(*gid) || arg->uid)
			return -EINVAL;
		return 0;
	case NVBRIDGE_ACCESS_OWNER:
	case NVBRIDGE_ACCESS_GROUP:
	case NVBRIDGE_ACCESS_SCOPE:
		return (arg->uid || arg->gid) ? -EINVAL : 0;
	default:
		return -EINVAL;
	}
}

/* The blob of a PUBLISH, exactly @len bytes, or NULL/ERR_PTR. */
static void *nvb_blob_copy_in(u64 uptr, u32 len)
{
	void *blob;

	if (!len)
		return NULL;
	blob = kvmalloc(len, GFP_KERNEL_ACCOUNT);
	if (!blob)
		return ERR_PTR(-ENOMEM);
	if (copy_from_user(blob, u64_to_user_ptr(uptr), len)) {
		kvfree(blob);
		return ERR_PTR(-EFAULT);
	}
	return blob;
}

static long nvb_ioctl_publish(struct nvb_file *f,
			      struct nvbridge_publish __user *uarg)
{
	struct nvbridge_publish arg;
	struct file *file = NULL;
	struct nvb_entry *e;
	kuid_t acl_uid;
	kgid_t acl_gid;
	void *blob;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_PUBLISH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	/* .id is 0 unless the publish succeeds; a read-only struct fails here. */
	if (put_user(0, &uarg->id))
		return -EFAULT;
	if (arg.flags || arg.__reserved)
		return -EINVAL;
	ret = nvb_name_check(arg.name, false);
	if (ret < 0)
		return ret;
	ret = nvb_policy_ids(f, &arg, &acl_uid, &acl_gid);
	if (ret)
		return ret;
	if (arg.blob_len > nvb_limit(&nvb_max_blob_size))
		return -EMSGSIZE;

	blob = nvb_blob_copy_in(arg.blob, arg.blob_len);
	if (IS_ERR(blob))
		return PTR_ERR(blob);
	if (arg.fd != NVBRIDGE_NO_FD) {
		file = arg.fd >= 0 ? fget(arg.fd) : NULL;
		if (!file) {
			ret = -EBADF;
			goto err_free_blob;
		}
		if (!nvb_file_publishable(file)) {
			ret = -EINVAL;
			goto err_put_file;
		}
	}
	e = nvb_entry_new(f, arg.name, file, blob, arg.blob_len, arg.access,
			  acl_uid, acl_gid);
	if (!e) {
		ret = -ENOMEM;
		goto err_put_file;
	}
	ret = nvb_entry_reserve(f, e);
	if (ret) {
		nvb_entry_put(e);	/* drops @file and @blob too */
		return ret;
	}
	/* Every copy-out before the entry becomes visible. */
	if (put_user(e->id, &uarg->id)) {
		nvb_entry_abort(f, e);
		return -EFAULT;
	}
	nvb_entry_commit(f, e);
	return 0;

err_put_file:
	if (file)
		fput(file);
err_free_blob:
	kvfree(blob);
	return ret;
}

static long nvb_ioctl_fetch(struct nvb_file *f,
			    struct nvbridge_fetch __user *uarg)
{
	struct nvbridge_fetch arg;
	struct nvb_fetched r = {};
	kuid_t expect = INVALID_UID;
	unsigned int o_flags;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_FETCH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags & ~NVBRIDGE_FETCH_FLAGS_ALL)
		return -EINVAL;
	if (!(arg.flags & NVBRIDGE_FETCH_WAIT) && arg.timeout_ns)
		return -EINVAL;
	if (arg.flags & NVBRIDGE_FETCH_EXPECT_UID) {
		expect = make_kuid(f->cred->user_ns, arg.expect_uid);
		if (!uid_valid(expect))
			return -EINVAL;
	} else if (arg.expect_uid) {
		return -EINVAL;
	}
	ret = nvb_name_check(arg.name, false);
	if (ret < 0)
		return ret;
	if (arg.blob && !arg.blob_cap)
		return -EINVAL;
	/* Every value is checked before the pointer, as the broker does. */
	if (!arg.blob && arg.blob_cap)
		return -EFAULT;

	ret = nvb_fetch_expect(f, arg.name, arg.blob_cap, expect,
			       arg.flags & NVBRIDGE_FETCH_WAIT, &arg.timeout_ns,
			       &r);
	if (ret == -ERESTARTSYS) {
		/*
		 * Restarted only when no handler ran (SIGSTOP, SIGCONT...),
		 * with the time left; a handled signal gives -EINTR.
		 */
		if (put_user(arg.timeout_ns, &uarg->timeout_ns))
			return -EINTR;
		return -ERESTARTNOHAND;
	}
	if (ret && ret != -EMSGSIZE)
		return ret;

	arg.blob_len = r.blob_len;
	arg.id = r.id;
	arg.pid = r.pid;
	arg.uid = r.uid;
	arg.gid = r.gid;
	arg.access = r.access;
	arg.entry_flags = r.entry_flags;
	if (!ret && r.blob &&
	    copy_to_user(u64_to_user_ptr(arg.blob), r.blob, r.blob_len))
		ret = -EFAULT;
	if (ret != -EFAULT && nvb_copy_out(uarg, &arg, sizeof(arg), usize))
		ret = -EFAULT;
	if (ret || !r.file)
		goto out_release;

	/* The last step: nothing can fail after the fd is installed. */
	o_flags = (arg.flags & NVBRIDGE_FETCH_NO_CLOEXEC) ? 0 : O_CLOEXEC;
	ret = nvb_receive_fd(r.file, o_flags);
out_release:
	if (ret >= 0)
		nvb_trace(fetch, f, r.e, ret > 0);
	nvb_fetched_release(&r);
	return ret;
}

static long nvb_ioctl_unpublish(struct nvb_file *f,
				struct nvbridge_unpublish __user *uarg)
{
	struct nvbridge_unpublish arg;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_UNPUBLISH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags)
		return -EINVAL;
	if (arg.id) {
		if (memchr_inv(arg.name, 0, sizeof(arg.name)))
			return -EINVAL;
	} else {
		ret = nvb_name_check(arg.name, false);
		if (ret < 0)
			return ret;
	}
	return nvb_unpublish(f, arg.id, arg.name);
}

static long nvb_ioctl_watch(struct nvb_file *f,
			    struct nvbridge_watch __user *uarg)
{
	struct nvbridge_watch arg;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_WATCH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags & ~NVBRIDGE_WATCH_FLAGS_ALL)
		return -EINVAL;
	ret = nvb_name_check(arg.name, arg.flags & NVBRIDGE_WATCH_PREFIX);
	if (ret < 0)
		return ret;
	ret = nvb_watch_add(f, arg.flags, arg.name, &arg.id);
	if (ret)
		return ret;
	if (nvb_copy_out(uarg, &arg, sizeof(arg), usize)) {
		nvb_watch_del(f, arg.id);
		return -EFAULT;
	}
	return 0;
}

static long nvb_ioctl_unwatch(struct nvb_file *f,
			      struct nvbridge_watch __user *uarg)
{
	struct nvbridge_watch arg;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_WATCH_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags || memchr_inv(arg.name, 0, sizeof(arg.name)))
		return -EINVAL;
	return nvb_watch_del(f, arg.id);
}

#define NVB_LIST_BATCH	64

static long nvb_ioctl_list(struct nvb_file *f,
			   struct nvbridge_list __user *uarg)
{
	struct nvbridge_entry_info *buf;
	struct nvbridge_list arg;
	unsigned int n, i;
	size_t rec;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_LIST_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags)
		return -EINVAL;
	if (arg.entry_size < NVBRIDGE_ENTRY_INFO_SIZE_VER0)
		return -EINVAL;
	if (arg.entry_size > NVB_ARG_MAX)
		return -E2BIG;
	if (!arg.entries && arg.count)
		return -EFAULT;
	if (!arg.count)
		return 0;

	buf = kcalloc(NVB_LIST_BATCH, sizeof(*buf), GFP_KERNEL_ACCOUNT);
	if (!buf)
		return -ENOMEM;
	n = nvb_list_collect(f, arg.cursor, buf,
			     min_t(u32, arg.count, NVB_LIST_BATCH));
	rec = min_t(size_t, arg.entry_size, sizeof(*buf));
	for (i = 0; i < n; i++) {
		void __user *dst = u64_to_user_ptr(arg.entries +
						   (u64)i * arg.entry_size);

		if (copy_to_user(dst, &buf[i], rec) ||
		    clear_user(dst + rec, arg.entry_size - rec)) {
			ret = -EFAULT;
			goto out_free;
		}
	}
	if (n)
		arg.cursor = buf[n - 1].id;
	arg.count = n;
	ret = nvb_copy_out(uarg, &arg, sizeof(arg), usize);
	if (!ret)
		ret = n;
out_free:
	kfree(buf);
	return ret;
}

static long nvb_ioctl_info(struct nvb_file *f,
			   struct nvbridge_info __user *uarg)
{
	struct nvbridge_info arg;
	u32 usize;
	int ret;

	ret = nvb_copy_in(&arg, sizeof(arg), NVBRIDGE_INFO_SIZE_VER0,
			  uarg, &usize);
	if (ret)
		return ret;
	if (arg.flags)
		return -EINVAL;
	arg.abi_version = NVBRIDGE_ABI_VERSION;
	arg.name_max = NVBRIDGE_NAME_MAX;
	arg.max_blob_size = nvb_limit(&nvb_max_blob_size);
	arg.max_entries_per_user = nvb_limit(&nvb_max_entries_per_user);
	arg.max_events = nvb_limit(&nvb_max_events);
	arg.max_watches = nvb_limit(&nvb_max_watches);
	arg.entries = nvb_visible_entries(f);
	arg.user_entries = atomic_read(&f->user->entries);
	return nvb_copy_out(uarg, &arg, sizeof(arg), usize);
}

/*
 * The whole command number is matched, size and direction included; the
 * struct's own .size field is the extension mechanism.  Changing the
 * registry needs a file opened for writing.
 */
VISIBLE_IF_KUNIT long nvb_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct nvb_file *f = filp->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case NVBRIDGE_IOC_PUBLISH:
		if (!(filp->f_mode & FMODE_WRITE))
			return -EBADF;
		return nvb_ioctl_publish(f, uarg);
	case NVBRIDGE_IOC_FETCH:
		return nvb_ioctl_fetch(f, uarg);
	case NVBRIDGE_IOC_UNPUBLISH:
		if (!(filp->f_mode & FMODE_WRITE))
			return -EBADF;
		return nvb_ioctl_unpublish(f, uarg);
	case NVBRIDGE_IOC_WATCH:
		return nvb_ioctl_watch(f, uarg);
	case NVBRIDGE_IOC_UNWATCH:
		return nvb_ioctl_unwatch(f, uarg);
	case NVBRIDGE_IOC_LIST:
		return nvb_ioctl_list(f, uarg);
	case NVBRIDGE_IOC_INFO:
		return nvb_ioctl_info(f, uarg);
	default:
		return -ENOTTY;
	}
}

/* ------------------------------------------------------------------ */
/* File operations                                                    */

static ssize_t nvb_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct nvb_file *f = iocb->ki_filp->private_data;
	bool nonblock = (iocb->ki_flags & IOCB_NOWAIT) ||
			(iocb->ki_filp->f_flags & O_NONBLOCK);
	struct nvbridge_event ev;
	struct nvb_event_node *n;
	ssize_t done = 0;
	int ret = 0;

	if (iov_iter_count(to) < sizeof(ev))
		return -EINVAL;
	if (nonblock) {
		if (!mutex_trylock(&f->read_mutex))
			return -EAGAIN;
	} else if (mutex_lock_interruptible(&f->read_mutex)) {
		return -ERESTARTSYS;
	}
	while (iov_iter_count(to) >= sizeof(ev)) {
		n = nvb_event_take(f, &ev);
		if (IS_ERR(n)) {
			if (done)
				break;
			if (nonblock) {
				ret = -EAGAIN;
				break;
			}
			ret = wait_event_interruptible(f->read_wq,
						       nvb_events_ready(f));
			if (ret)
				break;
			continue;
		}
		if (copy_to_iter(&ev, sizeof(ev), to) != sizeof(ev)) {
			if (n)
				nvb_event_put_back(f, n);
			ret = -EFAULT;
			break;
		}
		if (!n)
			nvb_event_commit_overflow(f, ev.lost);
		kfree(n);
		done += sizeof(ev);
	}
	mutex_unlock(&f->read_mutex);
	return done ? done : ret;
}

VISIBLE_IF_KUNIT __poll_t nvb_poll(struct file *filp, poll_table *wait)
{
	struct nvb_file *f = filp->private_data;

	poll_wait(filp, &f->read_wq, wait);
	return nvb_events_ready(f) ? EPOLLIN | EPOLLRDNORM : 0;
}

VISIBLE_IF_KUNIT int nvb_open(struct inode *inode, struct file *filp)
{
	struct nvb_file *f;
	int ret;

	ret = stream_open(inode, filp);
	if (ret)
		return ret;
	f = nvb_file_create(filp);
	if (!f)
		return -ENOMEM;
	filp->private_data = f;
	filp->f_mode |= FMODE_NOWAIT;
	return 0;
}

static int nvb_release(struct inode *inode, struct file *filp)
{
	nvb_file_destroy(filp->private_data);
	return 0;
}

VISIBLE_IF_KUNIT const struct file_operations nvb_fops = {
	.owner		= THIS_MODULE,
	.open		= nvb_open,
	.release	= nvb_release,
	.read_iter	= nvb_read_iter,
	.poll		= nvb_poll,
	.unlocked_ioctl	= nvb_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

/* ------------------------------------------------------------------ */
/* sysfs: /sys/class/misc/nvbridge/ (Documentation/ABI/testing/)       */

static ssize_t abi_version_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", NVBRIDGE_ABI_VERSION);
}
static DEVICE_ATTR_RO(abi_version);

/* Every scope's entries: root only, it would tell of other containers. */
static ssize_t entries_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	return sysfs_emit(buf, "%d\n", atomic_read(&nvb_nr_entries));
}
static DEVICE_ATTR_ADMIN_RO(entries);

#define NVB_LIMIT_ATTR(name)						\
static ssize_t name##_show(struct device *dev,				\
			   struct device_attribute *attr, char *buf)	\
{									\
	return sysfs_emit(buf, "%u\n", nvb_limit(&nvb_##name));		\
}									\
static DEVICE_ATTR_RO(name)

NVB_LIMIT_ATTR(max_entries_per_user);
NVB_LIMIT_ATTR(max_bytes_per_user);
NVB_LIMIT_ATTR(max_blob_size);
NVB_LIMIT_ATTR(max_events);
NVB_LIMIT_ATTR(max_watches);
NVB_LIMIT_ATTR(max_watches_per_user);

static struct attribute *nvb_attrs[] = {
	&dev_attr_abi_version.attr,
	&dev_attr_entries.attr,
	&dev_attr_max_entries_per_user.attr,
	&dev_attr_max_bytes_per_user.attr,
	&dev_attr_max_blob_size.attr,
	&dev_attr_max_events.attr,
	&dev_attr_max_watches.attr,
	&dev_attr_max_watches_per_user.attr,
	NULL
};
ATTRIBUTE_GROUPS(nvb);

static struct miscdevice nvb_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "nvbridge",
	.fops	= &nvb_fops,
	.groups	= nvb_groups,
	.mode	= 0666,
};

static int __init nvb_init(void)
{
	return misc_register(&nvb_misc);
}

static void __exit nvb_exit(void)
{
	misc_deregister(&nvb_misc);
}

module_init(nvb_init);
module_exit(nvb_exit);

MODULE_DESCRIPTION("nvbridge: namespace-aware fd and blob rendezvous");
MODULE_AUTHOR("The nvbridge authors");
MODULE_LICENSE("GPL");
