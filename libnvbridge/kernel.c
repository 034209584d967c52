// SPDX-License-Identifier: MIT
/*
 * libnvbridge kernel backend: /dev/nvbridge, located with libudev.
 *
 * libudev is loaded at run time (dlopen("libudev.so.1")) so that static
 * binaries (the VM tests) and hosts without it still work: without libudev
 * the device is found through sysfs (/sys/class/misc/nvbridge/dev) and
 * /dev/nvbridge checked against that device number.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <libudev.h>
#include "nvb_internal.h"

#define SYSFS_DIR "/sys/class/misc/nvbridge"

struct udev_api {
	struct udev *(*new_)(void);
	struct udev *(*unref)(struct udev *);
	struct udev_device *(*dev_new)(struct udev *, const char *, const char *);
	struct udev_device *(*dev_unref)(struct udev_device *);
	const char *(*devnode)(struct udev_device *);
	const char *(*sysattr)(struct udev_device *, const char *);
};

/*
 * Finds the device node and reads its ABI version.  Returns 0, -ENOENT (no
 * such device) or another -errno.
 */
static int locate(char *node, size_t nodelen, char *abi, size_t abilen)
{
	struct udev_api u;
	void *lib;
	int ret = -ENOENT;

	abi[0] = 0;
#ifndef NVB_NO_DLOPEN
	lib = dlopen("libudev.so.1", RTLD_NOW | RTLD_LOCAL);
#else
	lib = NULL;
#endif
	if (lib) {
		*(void **)&u.new_ = dlsym(lib, "udev_new");
		*(void **)&u.unref = dlsym(lib, "udev_unref");
		*(void **)&u.dev_new = dlsym(lib, "udev_device_new_from_subsystem_sysname");
		*(void **)&u.dev_unref = dlsym(lib, "udev_device_unref");
		*(void **)&u.devnode = dlsym(lib, "udev_device_get_devnode");
		*(void **)&u.sysattr = dlsym(lib, "udev_device_get_sysattr_value");
		if (u.new_ && u.unref && u.dev_new && u.dev_unref && u.devnode && u.sysattr) {
			struct udev *udev = u.new_();
			struct udev_device *d = udev ? u.dev_new(udev, "misc", "nvbridge") : NULL;

			if (d) {
				const char *n = u.devnode(d), *a = u.sysattr(d, "abi_version");

				if (n) {
					snprintf(node, nodelen, "%s", n);
					ret = 0;
				}
				if (a)
					snprintf(abi, abilen, "%s", a);
				u.dev_unref(d);
			}
			if (udev)
				u.unref(udev);
		}
		dlclose(lib);
		if (ret == 0)
			return 0;
	}
	/* sysfs fallback */
	{
		char buf[64];
		unsigned int maj, min;
		struct stat st;
		FILE *f = fopen(SYSFS_DIR "/dev", "re");

		if (!f)
			return -ENOENT;
		if (!fgets(buf, sizeof(buf), f) || sscanf(buf, "%u:%u", &maj, &min) != 2) {
			fclose(f);
			return -EIO;
		}
		fclose(f);
		snprintf(node, nodelen, "/dev/nvbridge");
		if (stat(node, &st) || !S_ISCHR(st.st_mode) ||
		    st.st_rdev != makedev(maj, min))
			return -ENOENT;
		f = fopen(SYSFS_DIR "/abi_version", "re");
		if (f) {
			if (fgets(buf, sizeof(buf), f)) {
				buf[strcspn(buf, "\n")] = 0;
				snprintf(abi, abilen, "%s", buf);
			}
			fclose(f);
		}
	}
	return 0;
}

int nvb_kernel_open(struct nvb *h, const char *devpath, char *why, size_t whylen)
{
	char node[256], abi[32] = "";
	struct nvbridge_info info;
	int fd, ret;

	if (devpath) {
		snprintf(node, sizeof(node), "%s", devpath);
		FILE *f = fopen(SYSFS_DIR "/abi_version", "re");

		if (f) {
			if (fgets(abi, sizeof(abi), f))
				abi[strcspn(abi, "\n")] = 0;
			fclose(f);
		}
	} else {
		ret = locate(node, sizeof(node), abi, sizeof(abi));
		if (ret) {
			snprintf(why, whylen, "kernel backend: no nvbridge device (module not loaded?): %s",
				 strerror(-ret));
			return ret;
		}
	}
	if (abi[0]) {
		char *end;
		unsigned long v = strtoul(abi, &end, 10);

		if (*end || v != NVBRIDGE_ABI_VERSION) {
			snprintf(why, whylen,
				 "kernel backend: nvbridge module speaks ABI version %s, this libnvbridge was built for ABI version %d",
				 abi, NVBRIDGE_ABI_VERSION);
			return -EPROTO;
		}
	}
	fd = open(node, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		snprintf(why, whylen, "kernel backend: open %s: %s", node, strerror(errno));
		return ret;
	}
	memset(&info, 0, sizeof(info));
	info.size = sizeof(info);
	if (ioctl(fd, NVBRIDGE_IOC_INFO, &info) < 0) {
		ret = -errno;
		snprintf(why, whylen, "kernel backend: %s: INFO failed: %s", node, strerror(errno));
		close(fd);
		return ret == -ENOTTY ? -EPROTO : ret;
	}
	if (info.abi_version != NVBRIDGE_ABI_VERSION) {
		snprintf(why, whylen,
			 "kernel backend: nvbridge module speaks ABI version %u, this libnvbridge was built for ABI version %d",
			 info.abi_version, NVBRIDGE_ABI_VERSION);
		close(fd);
		return -EPROTO;
	}
	h->fd = fd;
	h->evfd = fd;
	snprintf(h->path, sizeof(h->path), "%s", node);
	return 0;
}

int nvb_kernel_xfer(struct nvb *h, unsigned long cmd, void *arg)
{
	int ret = ioctl(h->fd, cmd, arg);

	return ret < 0 ? -errno : ret;
}
