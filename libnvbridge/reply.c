// SPDX-License-Identifier: MIT
/*
 * libnvbridge broker backend: checking what the broker sends against what
 * was asked, without a socket (tests/fuzz feeds it bytes and fds).
 *
 * The broker is not trusted to be well-behaved: anything that listens on
 * the socket path can answer.  A reply must frame exactly (header, arg_size,
 * data_len add up to the datagram), answer a request in flight with the
 * same command, write back no more than the request's struct, return no
 * more records or blob bytes than the caller's buffer holds, and carry an
 * fd only where a FETCH says it does.  Anything else breaks the connection
 * and every fd that came with it is closed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include "nvb_internal.h"
#include "nvb_wire.h"

#define ERRNO_MAX 4095	/* results below -ERRNO_MAX are not errnos */

void nvb_rx_close(struct nvb_rx *rx)
{
	for (unsigned int i = 0; i < rx->nfds; i++)
		if (rx->fds[i] >= 0)
			close(rx->fds[i]);
	rx->nfds = 0;
}

static int bad(struct nvb_rx *rx, int err, char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int bad(struct nvb_rx *rx, int err, char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	nvb_rx_close(rx);
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return err;
}

/* Framing shared by HELLO and REPLY: -EBADMSG unless it adds up. */
static int frame(struct nvb_rx *rx, uint16_t type, const struct nvbridge_wire_hdr **hp,
		 char *why, size_t whylen)
{
	const struct nvbridge_wire_hdr *rh = rx->buf;

	if (rx->trunc)
		return bad(rx, -EBADMSG, why, whylen,
			   "broker sent a message longer than %zu bytes", rx->len);
	if (rx->len < NVBRIDGE_WIRE_HDR_SIZE)
		return bad(rx, -EBADMSG, why, whylen,
			   "broker sent a truncated message (%zu bytes)", rx->len);
	if (rh->magic != NVBRIDGE_WIRE_MAGIC || rh->type != type || rh->__reserved)
		return bad(rx, -EBADMSG, why, whylen,
			   "broker sent a message of type %u (wanted %u) or a bad magic",
			   rh->type, type);
	if (rh->arg_size > NVBRIDGE_WIRE_ARG_MAX || rh->data_len > NVBRIDGE_WIRE_DATA_MAX ||
	    rx->len != NVBRIDGE_WIRE_HDR_SIZE + (size_t)rh->arg_size + rh->data_len)
		return bad(rx, -EBADMSG, why, whylen,
			   "broker message of %zu bytes does not match its header (%d + %u + %u)",
			   rx->len, NVBRIDGE_WIRE_HDR_SIZE, rh->arg_size, rh->data_len);
	if (rh->result < -ERRNO_MAX)
		return bad(rx, -EBADMSG, why, whylen, "broker sent result %d", rh->result);
	*hp = rh;
	return 0;
}

int nvb_hello_parse(struct nvb_rx *rx, struct nvbridge_info *info, int *evfd,
		    char *why, size_t whylen)
{
	const struct nvbridge_wire_hdr *rh;
	int type = 0, ret;
	socklen_t tl = sizeof(type);

	*evfd = -1;
	ret = frame(rx, NVBRIDGE_WIRE_HELLO, &rh, why, whylen);
	if (ret == -EBADMSG && rx->len >= NVBRIDGE_WIRE_HDR_SIZE &&
	    ((const struct nvbridge_wire_hdr *)rx->buf)->magic != NVBRIDGE_WIRE_MAGIC)
		snprintf(why, whylen, "not an nvbridged socket (bad HELLO)");
	if (ret)
		return ret == -EBADMSG ? -EPROTO : ret;
	if (rh->version != NVBRIDGE_WIRE_VERSION || rh->result == -EPROTO) {
		nvb_rx_close(rx);
		snprintf(why, whylen,
			 "nvbridged speaks wire version %u, this libnvbridge speaks ABI version %d wire version %d",
			 rh->version, NVBRIDGE_ABI_VERSION, NVBRIDGE_WIRE_VERSION);
		return -EPROTO;
	}
	if (rh->result < 0) {
		nvb_rx_close(rx);
		snprintf(why, whylen, "HELLO refused: %s", strerror(-rh->result));
		return rh->result;
	}
	if (rh->arg_size < NVBRIDGE_INFO_SIZE_VER0 || rh->data_len)
		return bad(rx, -EPROTO, why, whylen,
			   "HELLO answer has a %u-byte struct and %u bytes of data",
			   rh->arg_size, rh->data_len);
	memset(info, 0, sizeof(*info));
	memcpy(info, (const char *)rx->buf + NVBRIDGE_WIRE_HDR_SIZE,
	       rh->arg_size < sizeof(*info) ? rh->arg_size : sizeof(*info));
	if (info->abi_version != NVBRIDGE_ABI_VERSION) {
		nvb_rx_close(rx);
		snprintf(why, whylen,
			 "nvbridged speaks ABI version %u, this libnvbridge was built for ABI version %d",
			 info->abi_version, NVBRIDGE_ABI_VERSION);
		return -EPROTO;
	}
	/* exactly one fd, and it must be the event socket (nothing a read could block on) */
	if (rx->nfds != 1 || rx->ctrunc)
		return bad(rx, -EPROTO, why, whylen, "HELLO answer carries %u fds, not 1", rx->nfds);
	if (getsockopt(rx->fds[0], SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_SEQPACKET)
		return bad(rx, -EPROTO, why, whylen,
			   "HELLO answer's event fd is not a SOCK_SEQPACKET socket");
	*evfd = rx->fds[0];
	rx->nfds = 0;
	return 0;
}

/* Restores the fields of the caller's struct that the broker must not change. */
static void keep_inputs(struct nvb_pending *p, const void *saved)
{
	switch (p->cmd) {
	case NVBRIDGE_IOC_FETCH: {
		const struct nvbridge_fetch *o = saved;
		struct nvbridge_fetch *f = p->arg;

		f->size = o->size;
		f->blob = o->blob;
		f->blob_cap = o->blob_cap;
		break;
	}
	case NVBRIDGE_IOC_LIST: {
		const struct nvbridge_list *o = saved;
		struct nvbridge_list *l = p->arg;

		l->size = o->size;
		l->entries = o->entries;
		l->entry_size = o->entry_size;
		break;
	}
	default:
		memcpy(p->arg, saved, sizeof(uint32_t));	/* .size */
	}
}

int nvb_reply_dispatch(struct nvb_pending *list, struct nvb_rx *rx, struct nvb_pending **out,
		       char *why, size_t whylen)
{
	const struct nvbridge_wire_hdr *rh;
	const char *arg;
	struct nvb_pending *p;
	unsigned char saved[sizeof(struct nvbridge_fetch) > sizeof(struct nvbridge_list) ?
			    sizeof(struct nvbridge_fetch) : sizeof(struct nvbridge_list)];
	int ret;

	*out = NULL;
	ret = frame(rx, NVBRIDGE_WIRE_REPLY, &rh, why, whylen);
	if (ret)
		return ret;
	arg = (const char *)rx->buf + NVBRIDGE_WIRE_HDR_SIZE;
	for (p = list; p; p = p->next)
		if (p->seq == rh->seq && !p->done)
			break;
	if (!p)
		return bad(rx, -EPROTO, why, whylen,
			   "broker answered seq %u, which no request in flight has",
			   rh->seq);
	*out = p;
	if (rh->cmd != p->cmd)
		return bad(rx, -EPROTO, why, whylen,
			   "broker answered command 0x%x to request 0x%x", rh->cmd, p->cmd);
	if (rh->arg_size > p->arg_size || rh->data_len > p->data_cap)
		return bad(rx, -EOVERFLOW, why, whylen,
			   "broker answered %u + %u bytes, more than the request's buffers hold",
			   rh->arg_size, rh->data_len);
	if (rh->result > 0 && p->cmd != NVBRIDGE_IOC_LIST)
		return bad(rx, -EPROTO, why, whylen, "broker answered result %d to command 0x%x",
			   rh->result, p->cmd);
	if (p->cmd == NVBRIDGE_IOC_LIST && rh->result >= 0 &&
	    ((uint32_t)rh->result > p->list_count ||
	     rh->data_len != (uint64_t)(uint32_t)rh->result * p->entry_size))
		return bad(rx, -EOVERFLOW, why, whylen,
			   "broker listed %d entries (%u bytes) for a buffer of %u",
			   rh->result, rh->data_len, p->list_count);
	if (rx->nfds > 1 || (rx->nfds && (p->cmd != NVBRIDGE_IOC_FETCH || rh->result < 0)))
		return bad(rx, -EPROTO, why, whylen,
			   "broker sent %u fds with a reply to command 0x%x", rx->nfds, p->cmd);

	memcpy(saved, p->arg, p->arg_size < sizeof(saved) ? p->arg_size : sizeof(saved));
	if (rh->arg_size)
		memcpy(p->arg, arg, rh->arg_size);
	keep_inputs(p, saved);
	if (rh->data_len)
		memcpy(p->data, arg + rh->arg_size, rh->data_len);
	p->result = rh->result;
	if (p->cmd == NVBRIDGE_IOC_FETCH && p->result >= 0) {
		const struct nvbridge_fetch *f = p->arg;
		bool has_fd = rh->arg_size >= offsetof(struct nvbridge_fetch, entry_flags) + 4 &&
			      (f->entry_flags & NVBRIDGE_ENTRY_HAS_FD);

		if (has_fd != (rx->nfds == 1)) {
			if (has_fd && rx->ctrunc) {
				p->result = -EMFILE;	/* ours: no room for the fd */
			} else {
				return bad(rx, -EPROTO, why, whylen,
					   "broker FETCH reply says %d fd, carries %u",
					   has_fd, rx->nfds);
			}
		} else if (has_fd) {
			if (!p->cloexec)
				fcntl(rx->fds[0], F_SETFD, 0);
			p->result = rx->fds[0];
			rx->nfds = 0;
		}
	}
	nvb_rx_close(rx);
	p->done = true;
	return 0;
}
