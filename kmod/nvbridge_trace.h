/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nvbridge tracepoints: the kernel's own way to observe the exchange
 * (perf, ftrace, bpftrace; root only).  Ids are in the initial
 * namespaces; scope is the IPC namespace's inode number, as in
 * /proc/<pid>/ns/ipc.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM nvbridge

#if !defined(_NVBRIDGE_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _NVBRIDGE_TRACE_H

#include <linux/tracepoint.h>
#include <linux/nvbridge.h>

DECLARE_EVENT_CLASS(nvbridge_entry_class,
		    TP_PROTO(unsigned int scope, u64 id, const char *name,
			     u32 owner, u32 actor, u32 pid, u32 arg),
		    TP_ARGS(scope, id, name, owner, actor, pid, arg),
		    TP_STRUCT__entry(__field(unsigned int, scope)
				     __field(u64, id)
				     __array(char, name, NVBRIDGE_NAME_MAX)
				     __field(u32, owner)
				     __field(u32, actor)
				     __field(u32, pid)
				     __field(u32, arg)),
		    TP_fast_assign(__entry->scope = scope;
				   __entry->id = id;
				   strscpy(__entry->name, name, NVBRIDGE_NAME_MAX);
				   __entry->owner = owner;
				   __entry->actor = actor;
				   __entry->pid = pid;
				   __entry->arg = arg;),
		    TP_printk("scope=%u id=%llu name=%s owner=%u uid=%u pid=%u arg=%u",
			      __entry->scope, __entry->id, __entry->name,
			      __entry->owner, __entry->actor, __entry->pid,
			      __entry->arg));

/* arg: the access policy */
DEFINE_EVENT(nvbridge_entry_class, nvbridge_publish,
	     TP_PROTO(unsigned int scope, u64 id, const char *name, u32 owner,
		      u32 actor, u32 pid, u32 arg),
	     TP_ARGS(scope, id, name, owner, actor, pid, arg));

/* arg: 1 when a file is handed over */
DEFINE_EVENT(nvbridge_entry_class, nvbridge_fetch,
	     TP_PROTO(unsigned int scope, u64 id, const char *name, u32 owner,
		      u32 actor, u32 pid, u32 arg),
	     TP_ARGS(scope, id, name, owner, actor, pid, arg));

/* arg: the access policy that refused the actor */
DEFINE_EVENT(nvbridge_entry_class, nvbridge_denial,
	     TP_PROTO(unsigned int scope, u64 id, const char *name, u32 owner,
		      u32 actor, u32 pid, u32 arg),
	     TP_ARGS(scope, id, name, owner, actor, pid, arg));

/* arg: enum nvbridge_revoke_reason */
DEFINE_EVENT(nvbridge_entry_class, nvbridge_revoke,
	     TP_PROTO(unsigned int scope, u64 id, const char *name, u32 owner,
		      u32 actor, u32 pid, u32 arg),
	     TP_ARGS(scope, id, name, owner, actor, pid, arg));

#endif /* _NVBRIDGE_TRACE_H */

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE nvbridge_trace
#include <trace/define_trace.h>
