// SPDX-License-Identifier: GPL-2.0
/* Builds when receive_fd() takes (file, int __user *ufd, o_flags). */
#include <linux/file.h>

int nvb_probe(struct file *file);
int nvb_probe(struct file *file)
{
	return receive_fd(file, NULL, 0);
}
