/* SPDX-License-Identifier: MIT */
#ifndef NVB_WIRE_H
#define NVB_WIRE_H

#include <string.h>
#include <sys/socket.h>
#include <linux/nvbridge.h>

/*
 * Broker wire framing (nvbridged, the user-space backend): the one
 * definition, included by daemon/ and libnvbridge/broker.c.  A user-space
 * protocol, so it lives here and not in the UAPI header.
 *
 * nvbridged speaks the ioctl structs above over a SOCK_SEQPACKET Unix
 * socket; this section only adds the framing around them.  Every message
 * is exactly one datagram:
 *
 *	struct nvbridge_wire_hdr | arg_size bytes | data_len bytes
 *
 * HELLO (client -> broker, the first message on a connection):
 *	arg = struct nvbridge_wire_hello; SCM_RIGHTS carries one fd, a pidfd
 *	of the sending process (pidfd_open(getpid())), and the kernel attaches
 *	SCM_CREDENTIALS.  The broker answers HELLO with result 0 or -errno,
 *	arg = struct nvbridge_info (the limits) and SCM_RIGHTS carrying the
 *	connection's event socket (see EVENTS below).
 * REQUEST (client -> broker): cmd = the NVBRIDGE_IOC_* number, seq chosen
 *	by the client, arg = the ioctl struct exactly as it would be passed to
 *	ioctl() (arg_size = its .size), then:
 *	  PUBLISH: data = the blob_len blob bytes (data_len = blob_len; 0 when
 *	           blob_len exceeds the broker's max_blob_size, which is then
 *	           answered -EMSGSIZE).  When .fd >= 0 the file travels as the
 *	           only SCM_RIGHTS fd; the number in .fd is otherwise ignored.
 *	           .blob must be non-zero when blob_len > 0 (else -EFAULT), its
 *	           value is otherwise ignored.
 *	  others:  data_len = 0.  Pointer fields are ignored.
 * REPLY (broker -> client): cmd and seq echoed, result = what ioctl()
 *	would have returned (>= 0) or -errno, arg = the struct written back
 *	(arg_size = min(request size, broker's size); omitted on errors that
 *	copy nothing out), then:
 *	  FETCH: data = the blob; the file as the only SCM_RIGHTS fd, result 0
 *	         (entry_flags & NVBRIDGE_ENTRY_HAS_FD says whether one came).
 *	  LIST:  data = result * entry_size bytes of struct nvbridge_entry_info.
 *	Replies come in request order, except that a waiting FETCH answers
 *	when it completes; match them by seq.
 * CANCEL (client -> broker): abandon the waiting FETCH with this seq; it is
 *	answered (once) with -EINTR if it was still waiting.
 * EVENTS: the event socket from HELLO is the read side of a SOCK_SEQPACKET
 *	pair.  Each datagram on it is exactly one struct nvbridge_event record
 *	(no header), so read()/recv()/io_uring reads see the same records as
 *	read() on /dev/nvbridge; it never carries anything else, so reading it
 *	(e.g. from an application's io_uring) cannot steal a REPLY.
 *
 * A message that is shorter than its header says, has a bad magic or type,
 * arg_size > NVBRIDGE_WIRE_ARG_MAX, data_len > NVBRIDGE_WIRE_DATA_MAX, was
 * truncated, or carries unexpected fds makes the broker drop that client
 * (logged).  An ioctl-level error (bad size, flags, name...) is a REPLY with
 * the same errno as the kernel module gives, never a drop.
 */
#define NVBRIDGE_WIRE_MAGIC	0x5742564eU	/* "NVBW" little-endian */
#define NVBRIDGE_WIRE_VERSION	1
#define NVBRIDGE_WIRE_ARG_MAX	4096		/* = the kernel's PAGE_SIZE bound */
#define NVBRIDGE_WIRE_DATA_MAX	(NVBRIDGE_BLOB_MAX + 4096)	/* blob, or LIST records */

enum nvbridge_wire_type {
	NVBRIDGE_WIRE_HELLO	= 1,
	NVBRIDGE_WIRE_REQUEST	= 2,
	NVBRIDGE_WIRE_REPLY	= 3,
	NVBRIDGE_WIRE_CANCEL	= 4,
};

struct nvbridge_wire_hdr {
	__u32 magic;		/* NVBRIDGE_WIRE_MAGIC */
	__u16 version;		/* NVBRIDGE_WIRE_VERSION */
	__u16 type;		/* enum nvbridge_wire_type */
	__u32 cmd;		/* REQUEST/REPLY: NVBRIDGE_IOC_*; else 0 */
	__u32 seq;		/* REQUEST/CANCEL: client's; REPLY: echoed */
	__s32 result;		/* REPLY/HELLO answer: >= 0 or -errno; else 0 */
	__u32 arg_size;		/* bytes of the struct after the header */
	__u32 data_len;		/* bytes of payload after the struct */
	__u32 __reserved;	/* must be 0 */
};

#define NVBRIDGE_WIRE_HDR_SIZE	32

struct nvbridge_wire_hello {
	__u32 abi_version;	/* NVBRIDGE_ABI_VERSION the client was built for */
	__u32 flags;		/* must be 0 */
};

#define NVBRIDGE_WIRE_HELLO_SIZE	8

/* Control buffer for the one fd a framed message may carry. */
union nvb_wire_cmsg {
	struct cmsghdr c;
	char buf[CMSG_SPACE(sizeof(int))];
};

/* Makes fd the only SCM_RIGHTS fd of m, in the caller's buffer cm. */
static inline void nvb_wire_attach_fd(struct msghdr *m, union nvb_wire_cmsg *cm, int fd)
{
	memset(cm, 0, sizeof(*cm));
	m->msg_control = cm->buf;
	m->msg_controllen = sizeof(cm->buf);
	cm->c.cmsg_level = SOL_SOCKET;
	cm->c.cmsg_type = SCM_RIGHTS;
	cm->c.cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(&cm->c), &fd, sizeof(int));
}


#endif /* NVB_WIRE_H */
