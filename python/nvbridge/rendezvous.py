# SPDX-License-Identifier: MIT
"""The rendezvous: publish and fetch file descriptors and blobs by name."""
from __future__ import annotations

import asyncio
import ctypes
import enum
import errno as _errno
import os
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Tuple, Union

from . import _lib
from ._lib import NvbridgeError

if TYPE_CHECKING:
    from .tensor import SharedTensor

__all__ = ["Access", "Backend", "EventType", "RevokeReason", "Entry", "Fetched",
           "Event", "Info", "Handle", "open"]


class Backend(enum.IntEnum):
    AUTO = 0
    KERNEL = 1
    BROKER = 2


class Access(enum.IntEnum):
    """Who may fetch an entry (enum nvb_access)."""
    OWNER = 0   #: the publisher's euid only
    GROUP = 1   #: plus holders of the publisher's egid
    SCOPE = 2   #: everyone in the same IPC namespace (scope)
    UID = 3     #: plus the given uid
    GID = 4     #: plus members of the given gid


class EventType(enum.IntEnum):
    PUBLISHED = 1
    REVOKED = 2
    OVERFLOW = 3


class RevokeReason(enum.IntEnum):
    NONE = 0
    UNPUBLISHED = 1
    CLOSED = 2
    EXITED = 3


ENTRY_HAS_FD = 1
ENTRY_OWN = 2
_FETCH_WAIT = 1
_FETCH_NO_CLOEXEC = 2
_FETCH_EXPECT_UID = 4
_WATCH_PREFIX = 1

_BACKENDS = {"auto": Backend.AUTO, "kernel": Backend.KERNEL, "device": Backend.KERNEL,
             "broker": Backend.BROKER}


@dataclass(frozen=True)
class Entry:
    """An entry as nvb_list() and nvb_fetch() report it."""
    id: int
    name: str
    pid: int          #: publisher's pid in our pid namespace (0: not visible / exited)
    uid: int          #: publisher's euid in our user namespace
    gid: int
    access: int       #: an Access value (a plain int for one this package does not know)
    has_fd: bool
    own: bool         #: published through this handle
    blob_len: int

    @classmethod
    def _from_c(cls, e: _lib.CEntry) -> "Entry":
        acc: int = e.access
        try:
            acc = Access(e.access)
        except ValueError:
            pass
        return cls(id=e.id, name=e.name.decode(errors="replace"), pid=e.pid, uid=e.uid,
                   gid=e.gid, access=acc, has_fd=bool(e.flags & ENTRY_HAS_FD),
                   own=bool(e.flags & ENTRY_OWN), blob_len=e.blob_len)


class Fetched:
    """What nvb_fetch() returned: the entry, its blob and its file descriptor.

    The descriptor (``fd``, -1 when the entry has none) belongs to this
    object: ``close()`` (or leaving a ``with`` block, or garbage collection)
    closes it; ``detach()`` hands it over to the caller.
    """

    def __init__(self, entry: Entry, blob: bytes, fd: int) -> None:
        self.entry = entry
        self.blob = blob
        self._fd = fd

    # the entry's fields, flattened for convenience
    id = property(lambda self: self.entry.id)
    name = property(lambda self: self.entry.name)
    pid = property(lambda self: self.entry.pid)
    uid = property(lambda self: self.entry.uid)
    gid = property(lambda self: self.entry.gid)
    access = property(lambda self: self.entry.access)

    @property
    def fd(self) -> int:
        return self._fd

    def detach(self) -> int:
        """Returns the descriptor; the caller now owns (and closes) it."""
        fd, self._fd = self._fd, -1
        return fd

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> "Fetched":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"Fetched({self.entry!r}, blob={len(self.blob)} bytes, fd={self._fd})"


@dataclass(frozen=True)
class Event:
    """One event record (struct nvb_event)."""
    type: EventType
    reason: RevokeReason
    seq: int
    id: int
    watch_id: int
    pid: int
    uid: int
    gid: int
    lost: int
    name: str

    @classmethod
    def _from_c(cls, e: _lib.CEvent) -> "Event":
        return cls(type=EventType(e.type), reason=RevokeReason(e.reason), seq=e.seq, id=e.id,
                   watch_id=e.watch_id, pid=e.pid, uid=e.uid, gid=e.gid, lost=e.lost,
                   name=e.name.decode(errors="replace"))


@dataclass(frozen=True)
class Info:
    """Limits and counts (struct nvb_info)."""
    backend: Backend
    abi_version: int
    name_max: int
    max_blob_size: int
    max_entries_per_user: int
    max_events: int
    max_watches: int
    entries: int        #: entries the caller may fetch in its scope
    user_entries: int   #: entries owned by the caller's euid


def _name(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"name must be str, not {type(name).__name__}")
    b = name.encode()
    if b"\0" in b:
        raise NvbridgeError(_errno.EINVAL, "name", "name contains a NUL byte")
    return b


def _timeout_ns(timeout: Optional[float]) -> int:
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError("timeout must be >= 0 seconds, or None for no limit")
    return int(timeout * 1e9)


class Handle:
    """One open nvbridge handle (struct nvb): a /dev/nvbridge file or a broker
    connection.  Entries published through it live until unpublished or until
    the handle is closed (or the process exits).  Safe to share between
    threads, as the C handle is.
    """

    def __init__(self, backend: Union[str, Backend] = "auto", socket: Optional[str] = None,
                 device: Optional[str] = None) -> None:
        l = _lib.lib()
        if isinstance(backend, str):
            try:
                b = _BACKENDS[backend]
            except KeyError:
                raise ValueError(f"backend must be one of {sorted(_BACKENDS)}") from None
        else:
            b = Backend(backend)
        self._sock = os.fsencode(socket) if socket is not None else None
        self._dev = os.fsencode(device) if device is not None else None
        o = _lib.Opts(ctypes.sizeof(_lib.Opts), int(b), 0, self._sock, self._dev)
        h = ctypes.c_void_p()
        ret = l.nvb_open(ctypes.byref(o), ctypes.byref(h))
        _lib.check(ret, "nvb_open", l.nvb_open_error)
        self._h: Optional[int] = h.value
        self._l = l
        self._hooks: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._max_blob: Optional[int] = None
        self._lock = threading.Lock()
        self._busy = 0          # C calls in flight on this handle
        self._closing = False
        # registered ranges published through nvb_gpu_publish(): entry id ->
        # (the Gpu, the id of its descriptor entry, name), for unpublish()
        self._gpu_pubs: Dict[int, Tuple[Any, int, str]] = {}

    # ---- plumbing ----
    def _pin(self, fn: str) -> int:
        """The struct nvb, counted as in use until _unpin(): a close() from
        another thread takes effect when the last call in flight returns,
        never under it."""
        with self._lock:
            if self._closing or self._h is None:
                raise NvbridgeError(_errno.EBADF, fn, "handle is closed")
            self._busy += 1
            return self._h

    def _unpin(self) -> None:
        with self._lock:
            self._busy -= 1
            h = self._h if self._closing and self._busy == 0 else None
            if h is not None:
                self._h = None
        if h is not None:
            self._l.nvb_close(h)

    def _call(self, fn: str, *args: Any, quiet: Tuple[int, ...] = ()) -> int:
        """fn(handle, *args), the handle pinned; -errno raises NvbridgeError
        with the library's detail, unless errno is in quiet (then -errno is
        returned)."""
        h = self._pin(fn)
        try:
            ret: int = getattr(self._l, fn)(h, *args)
            detail: Optional[bytes] = None
            if ret < 0 and -ret not in quiet:
                detail = self._l.nvb_last_error(h)
        finally:
            self._unpin()
        if ret < 0 and -ret in quiet:
            return ret
        return _lib.check(ret, fn, lambda: detail)

    def _call_gpu(self, call: Callable[[int], Any], fn: str) -> int:
        """call(struct nvb *) for a GPU-layer function that takes the handle
        (not first), pinned as _call pins; errors carry nvb_gpu_last_error()."""
        h = self._pin(fn)
        try:
            ret = int(call(h))
            detail: Optional[bytes] = self._l.nvb_gpu_last_error() if ret < 0 else None
        finally:
            self._unpin()
        return _lib.check(ret, fn, lambda: detail)

    def close(self) -> None:
        """Closes the handle: every entry published through it is revoked.
        With calls in flight in other threads (a blocking read_events, say)
        it takes effect when the last of them returns."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            h = self._h if self._busy == 0 else None
            if h is not None:
                self._h = None
        if h is not None:
            self._l.nvb_close(h)

    @property
    def closed(self) -> bool:
        return self._closing

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_h", None) is not None:
            self.close()

    @property
    def backend(self) -> Backend:
        """The backend in use (never AUTO)."""
        return Backend(self._call("nvb_backend"))

    def __repr__(self) -> str:
        if self._h is None:
            return "<nvbridge.Handle closed>"
        return f"<nvbridge.Handle {self.backend.name.lower()}>"

    # ---- entries ----
    def publish(self, name: str, fd: Optional[int] = None, blob: Union[bytes, bytearray, memoryview] = b"",
                access: Union[Access, int] = Access.OWNER, uid: Optional[int] = None,
                gid: Optional[int] = None) -> int:
        """Publishes ``fd`` (its file, not the number: the caller may close it
        afterwards) and/or ``blob`` under ``name``; returns the entry id.

        ``uid`` goes with ``Access.UID``, ``gid`` with ``Access.GID``.
        """
        acc = int(access)
        if acc == Access.UID and uid is None:
            raise ValueError("Access.UID needs uid=")
        if acc == Access.GID and gid is None:
            raise ValueError("Access.GID needs gid=")
        po = _lib.PublishOpts(ctypes.sizeof(_lib.PublishOpts), acc,
                              0 if uid is None else uid, 0 if gid is None else gid, 0)
        data = bytes(blob)
        eid = ctypes.c_uint64()
        self._call("nvb_publish", _name(name), -1 if fd is None else int(fd),
                   data if data else None, len(data), ctypes.byref(po), ctypes.byref(eid))
        return eid.value

    def _blob_cap(self) -> int:
        if self._max_blob is None:
            self._max_blob = self.info().max_blob_size
        return self._max_blob

    def fetch(self, name: str, wait: bool = False, timeout: Optional[float] = None,
              expect_uid: Optional[int] = None, cloexec: bool = True) -> Fetched:
        """Fetches ``name``: its blob, its publisher and a new descriptor for
        its file.  With ``wait``, a name not (yet) published is waited for, at
        most ``timeout`` seconds (None: no limit).  With ``expect_uid``, only an
        entry published by that euid is considered (name squatting guard).
        """
        flags = (_FETCH_WAIT if wait else 0) | (0 if cloexec else _FETCH_NO_CLOEXEC)
        if expect_uid is not None:
            flags |= _FETCH_EXPECT_UID
        if timeout is not None and not wait:
            raise ValueError("timeout needs wait=True")
        fo = _lib.FetchOpts(ctypes.sizeof(_lib.FetchOpts), flags, 0,
                            _timeout_ns(timeout) if wait else 0,
                            0 if expect_uid is None else expect_uid, 0)
        cap = self._blob_cap()
        buf = ctypes.create_string_buffer(cap) if cap else None  # no buffer with no capacity
        ent = _lib.CEntry()
        fd = ctypes.c_int(-1)
        self._call("nvb_fetch", _name(name), ctypes.byref(fo), buf, cap, ctypes.byref(ent),
                   ctypes.byref(fd))
        blob = buf.raw[:ent.blob_len] if buf is not None else b""
        return Fetched(Entry._from_c(ent), blob, fd.value)

    def unpublish(self, id: Optional[int] = None, name: Optional[str] = None) -> None:
        """Withdraws an entry published through this handle, by id or by name
        (a registered range with the entries that went with it)."""
        if (id is None) == (name is None):
            raise ValueError("give exactly one of id and name")
        if name is not None:
            id = next((e for e, p in self._gpu_pubs.items() if p[2] == name), None)
        if id is not None and id in self._gpu_pubs:
            gpu, did, _ = self._gpu_pubs.pop(id)
            try:
                self._call_gpu(lambda h: self._l.nvb_gpu_unpublish(gpu._ptr, h, id), "nvb_gpu_unpublish")
            finally:
                self._call("nvb_unpublish", did, None, quiet=(_errno.ENOENT,))
            return
        self._call("nvb_unpublish", id or 0, None if name is None else _name(name))

    def list(self, batch: int = 64) -> List[Entry]:
        """Every entry the caller may fetch, in id order."""
        cur = ctypes.c_uint64(0)
        arr = (_lib.CEntry * batch)()
        out: List[Entry] = []
        while True:
            n = self._call("nvb_list", ctypes.byref(cur), arr, batch)
            if n == 0:
                return out
            out.extend(Entry._from_c(arr[i]) for i in range(n))

    def info(self) -> Info:
        ci = _lib.CInfo()
        ci.sz = ctypes.sizeof(ci)
        self._call("nvb_info", ctypes.byref(ci))
        return Info(backend=Backend(ci.backend), abi_version=ci.abi_version, name_max=ci.name_max,
                    max_blob_size=ci.max_blob_size, max_entries_per_user=ci.max_entries_per_user,
                    max_events=ci.max_events, max_watches=ci.max_watches, entries=ci.entries,
                    user_entries=ci.user_entries)

    # ---- tensors (nvbridge.tensor) ----
    def publish_tensor(self, name: str, t: "SharedTensor", access: Union[Access, int] = Access.OWNER,
                       uid: Optional[int] = None, gid: Optional[int] = None) -> int:
        """Publishes a SharedTensor's memory and descriptor (see
        nvbridge.publish_tensor)."""
        from .tensor import publish_tensor
        return publish_tensor(self, name, t, access, uid, gid)

    def import_tensor(self, name: str, **kw: Any) -> "SharedTensor":
        """Fetches and maps a tensor (see nvbridge.import_tensor for the options)."""
        from .tensor import import_tensor
        return import_tensor(self, name, **kw)

    # ---- events ----
    def watch(self, name: str, prefix: bool = False) -> int:
        """Subscribes to events for ``name`` (or every name starting with it
        when ``prefix``; "" is all); returns the watch id.  Entries that exist
        already are not reported: call list() after watch()."""
        wid = ctypes.c_uint64()
        self._call("nvb_watch", _name(name), _WATCH_PREFIX if prefix else 0, ctypes.byref(wid))
        return wid.value

    def unwatch(self, watch_id: int) -> None:
        self._call("nvb_unwatch", watch_id)

    def fileno(self) -> int:
        """The non-blocking descriptor events arrive on: poll it for POLLIN (or
        hand it to asyncio's add_reader), then call read_events(timeout=0)."""
        return self._call("nvb_event_fd")

    def _add_hook(self, obj: Any) -> None:
        """Calls obj._on_event(event, handle) for every event read through this handle
        (imported tensors and the GPU layer follow revocations this way);
        held weakly."""
        self._hooks.add(obj)

    def read_events(self, max: int = 64, timeout: Optional[float] = 0) -> List[Event]:
        """Reads up to ``max`` events, waiting at most ``timeout`` seconds (0:
        not at all, None: forever).  Returns [] when none came in time."""
        if max <= 0:
            raise ValueError("max must be > 0")
        arr = (_lib.CEvent * max)()
        n = self._call("nvb_event_read", arr, max, _timeout_ns(timeout),
                       quiet=(_errno.EAGAIN, _errno.ETIMEDOUT))
        if n < 0:
            return []
        evs = [Event._from_c(arr[i]) for i in range(n)]
        for ev in evs:
            self._deliver(ev)
        return evs

    def _deliver(self, ev: Event) -> None:
        for obj in list(self._hooks):
            obj._on_event(ev, self)

    def events(self, timeout: Optional[float] = None) -> Iterator[Event]:
        """Yields events as they come; ends when none arrives within
        ``timeout`` seconds (None: never ends by itself)."""
        while True:
            evs = self.read_events(64, timeout)
            if not evs:
                return
            yield from evs

    async def aevents(self) -> AsyncIterator[Event]:
        """``async for ev in handle.aevents()``: events through the running
        loop's add_reader on fileno(); no thread, no blocking read."""
        loop = asyncio.get_running_loop()
        fd = self.fileno()
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        try:
            while True:
                evs = self.read_events(64, 0)
                if not evs:
                    ready.clear()
                    # recheck after clear: a record that came in between still wakes us
                    evs = self.read_events(64, 0)
                    if not evs:
                        await ready.wait()
                        continue
                for ev in evs:
                    yield ev
        finally:
            loop.remove_reader(fd)


def open(backend: Union[str, Backend] = "auto", socket: Optional[str] = None,
         device: Optional[str] = None) -> Handle:
    """Opens a handle.  ``backend``: "auto" (NVBRIDGE_BACKEND, else the device
    when present, else the broker), "kernel"/"device" or "broker"; ``socket``:
    the broker's socket (default NVBRIDGE_SOCKET or /run/nvbridge/nvbridged.sock);
    ``device``: the device node (default: found through udev)."""
    return Handle(backend, socket, device)
