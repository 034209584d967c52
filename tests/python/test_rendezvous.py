# SPDX-License-Identifier: MIT
"""The rendezvous through the Python package, across real processes and uids,
against the broker the runner started (NVBRIDGE_SOCKET)."""
from __future__ import annotations

import asyncio
import errno
import os
import pickle
import select
import socket
import time
import unittest
from typing import Any, Optional

from helpers import NEED_ROOT, UID0, Broker, Child, Sync, errno_of, handle, is_root, run_as, sock, uniq

import nvbridge
from nvbridge import Access, EventType, NvbridgeError, RevokeReason

DENIED = (errno.ENOENT, errno.EACCES)  # contract v2: ENOENT; before it: EACCES


def memfd_with(data: bytes) -> int:
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def read_fd(fd: int) -> bytes:
    return os.pread(fd, 4096, 0)


class OpenInfo(unittest.TestCase):
    def test_open_broker_info(self) -> None:
        with handle() as h:
            self.assertEqual(h.backend, nvbridge.Backend.BROKER)
            i = h.info()
            self.assertEqual(i.backend, nvbridge.Backend.BROKER)
            self.assertGreaterEqual(i.abi_version, 1)
            self.assertEqual(i.name_max, 64)
            self.assertGreater(i.max_blob_size, 0)
            self.assertGreater(i.max_watches, 0)
            self.assertIn("broker", repr(h))
        self.assertTrue(h.closed)
        self.assertEqual(errno_of(h.info), errno.EBADF)

    def test_open_errors(self) -> None:
        with self.assertRaises(ValueError):
            nvbridge.open("nonsense")
        with self.assertRaises(NvbridgeError) as cm:
            nvbridge.open("broker", socket="/nonexistent/nvb.sock")
        e = cm.exception
        self.assertIsInstance(e, OSError)
        self.assertEqual(e.errno, errno.ENOENT)
        self.assertEqual(e.function, "nvb_open")
        self.assertIn("/nonexistent/nvb.sock", e.detail)  # the library's message
        e2 = pickle.loads(pickle.dumps(e))
        self.assertEqual((e2.errno, e2.function, e2.detail), (e.errno, e.function, e.detail))

    def test_env_socket(self) -> None:
        old = os.environ.get("NVBRIDGE_SOCKET")
        try:
            os.environ["NVBRIDGE_SOCKET"] = sock()
            with nvbridge.open("broker") as h:
                self.assertEqual(h.backend, nvbridge.Backend.BROKER)
        finally:
            if old is not None:
                os.environ["NVBRIDGE_SOCKET"] = old


class PublishFetch(unittest.TestCase):
    def test_cross_process_fd_and_blob(self) -> None:
        name = uniq("xfer")
        ready, done = Sync(), Sync()

        def publisher() -> int:
            with handle() as h:
                fd = memfd_with(b"payload-from-child")
                eid = h.publish(name, fd=fd, blob=b"\x00meta\xff", access=Access.SCOPE)
                os.close(fd)  # the entry holds the file, not the number
                ready.post()
                done.wait()
                return eid

        c = Child(publisher)
        ready.wait()
        with handle() as h:
            with h.fetch(name) as f:
                self.assertEqual(f.blob, b"\x00meta\xff")
                self.assertEqual(read_fd(f.fd), b"payload-from-child")
                self.assertEqual(f.pid, c.pid)
                self.assertEqual(f.uid, os.geteuid())
                self.assertTrue(f.entry.has_fd)
                self.assertFalse(f.entry.own)
                self.assertEqual(f.access, Access.SCOPE)
                fd = f.fd
            self.assertEqual(f.fd, -1)
            with self.assertRaises(OSError):
                os.fstat(fd)  # closed with the Fetched
        done.post()
        self.assertEqual(c.result(), f.id)

    def test_blob_only_and_detach(self) -> None:
        name = uniq("blob")
        with handle() as h:
            eid = h.publish(name, blob=bytearray(b"abc"))
            f = h.fetch(name)
            self.assertEqual((f.fd, f.blob, f.id), (-1, b"abc", eid))
            self.assertTrue(f.entry.own)
            self.assertFalse(f.entry.has_fd)
            fd2 = memfd_with(b"z")
            n2 = uniq("fd")
            h.publish(n2, fd=fd2)
            os.close(fd2)
            g = h.fetch(n2)
            fd = g.detach()
            g.close()
            self.assertEqual(read_fd(fd), b"z")  # still ours
            os.close(fd)

    def test_publish_errors(self) -> None:
        with handle() as h:
            big = h.info().max_blob_size + 1
            name = uniq("dup")
            h.publish(name, blob=b"1")
            s1, s2 = socket.socketpair()
            cases = {
                "bad char": (lambda: h.publish("bad name!", blob=b"x"), errno.EINVAL),
                "too long": (lambda: h.publish("a" * 64, blob=b"x"), errno.EINVAL),
                "empty": (lambda: h.publish("", blob=b"x"), errno.EINVAL),
                "NUL": (lambda: h.publish("a\0b", blob=b"x"), errno.EINVAL),
                "duplicate": (lambda: h.publish(name, blob=b"2"), errno.EEXIST),
                "blob too big": (lambda: h.publish(uniq("big"), blob=b"x" * big), errno.EMSGSIZE),
                "bad access": (lambda: h.publish(uniq("acc"), blob=b"x", access=99), errno.EINVAL),
                "socket fd": (lambda: h.publish(uniq("sock"), fd=s1.fileno()), errno.EINVAL),
                "closed fd": (lambda: h.publish(uniq("badf"), fd=999), errno.EBADF),
            }
            for what, (fn, want) in cases.items():
                with self.subTest(what):
                    self.assertEqual(errno_of(fn), want)
            s1.close()
            s2.close()
            with self.assertRaises(TypeError):
                h.publish(b"bytes-name", blob=b"x")  # type: ignore[arg-type]
            with self.assertRaises(ValueError):
                h.publish(uniq("nouid"), blob=b"x", access=Access.UID)  # not silently uid 0
            with self.assertRaises(ValueError):
                h.publish(uniq("nogid"), blob=b"x", access=Access.GID)
            self.assertEqual(errno_of(lambda: h.publish(uniq("uid-owner"), blob=b"x", uid=5)),
                             errno.EINVAL)  # a uid the policy would ignore
            self.assertEqual(h.fetch(name).blob, b"1")  # the duplicate changed nothing

    def test_fetch_errors_and_wait(self) -> None:
        with handle() as h:
            self.assertEqual(errno_of(lambda: h.fetch(uniq("missing"))), errno.ENOENT)
            self.assertEqual(errno_of(lambda: h.fetch("bad name!")), errno.EINVAL)
            t0 = time.monotonic()
            self.assertEqual(errno_of(lambda: h.fetch(uniq("late"), wait=True, timeout=0.2)),
                             errno.ETIMEDOUT)
            self.assertGreaterEqual(time.monotonic() - t0, 0.19)
            with self.assertRaises(ValueError):
                h.fetch("x", timeout=1)
            with self.assertRaises(ValueError):
                h.fetch("x", wait=True, timeout=-1)
            name = uniq("wait")

            def late() -> None:
                time.sleep(0.3)
                with handle() as h2:
                    h2.publish(name, blob=b"late", access=Access.SCOPE)
                    time.sleep(1)

            c = Child(late)
            t0 = time.monotonic()
            f = h.fetch(name, wait=True, timeout=10)
            self.assertEqual(f.blob, b"late")
            self.assertGreaterEqual(time.monotonic() - t0, 0.25)
            c.result()

    def test_unpublish(self) -> None:
        with handle() as h, handle() as other:
            a, b = uniq("un-a"), uniq("un-b")
            ida = h.publish(a, blob=b"a")
            h.publish(b, blob=b"b")
            h.unpublish(id=ida)
            h.unpublish(name=b)
            for n in (a, b):
                self.assertEqual(errno_of(lambda: h.fetch(n)), errno.ENOENT)
            self.assertEqual(errno_of(lambda: h.unpublish(name=a)), errno.ENOENT)
            with self.assertRaises(ValueError):
                h.unpublish()
            with self.assertRaises(ValueError):
                h.unpublish(id=1, name="x")
            c = uniq("un-c")
            idc = other.publish(c, blob=b"c")
            # same user, another connection: not ours to withdraw
            self.assertEqual(errno_of(lambda: h.unpublish(name=c)), errno.EPERM)
            self.assertEqual(errno_of(lambda: h.unpublish(id=idc)), errno.EPERM)
            self.assertEqual(h.fetch(c).blob, b"c")

    def test_list_paged(self) -> None:
        with handle() as h:
            names = {uniq("list") for _ in range(70)}
            ids = {h.publish(n, blob=b"x") for n in names}
            got = [e for e in h.list(batch=16) if e.id in ids]
            self.assertEqual({e.name for e in got}, names)
            self.assertEqual([e.id for e in got], sorted(e.id for e in got))
            self.assertTrue(all(e.own and e.blob_len == 1 for e in got))
            self.assertGreaterEqual(h.info().user_entries, 70)
        with handle() as h:
            self.assertFalse(names & {e.name for e in h.list()})  # revoked with the handle


class Events(unittest.TestCase):
    def test_watch_publish_exit(self) -> None:
        prefix = uniq("ev") + "/"
        with handle() as h:
            wid = h.watch(prefix, prefix=True)
            self.assertEqual(errno_of(lambda: h.watch(prefix, prefix=True)), errno.EEXIST)

            def pub() -> int:
                with handle() as h2:
                    return h2.publish(prefix + "a", blob=b"x", access=Access.SCOPE)
            eid = run_as(pub)
            evs = list(h.events(timeout=2))
            self.assertEqual([(e.type, e.id) for e in evs],
                             [(EventType.PUBLISHED, eid), (EventType.REVOKED, eid)])
            self.assertEqual(evs[1].reason, RevokeReason.CLOSED)  # the child closed its handle
            self.assertTrue(all(e.watch_id == wid and e.name == prefix + "a" for e in evs))
            self.assertLess(evs[0].seq, evs[1].seq)
            own = h.publish(prefix + "b", blob=b"y")
            h.unpublish(id=own)
            evs = h.read_events(16, timeout=2)
            while len(evs) < 2:
                more = h.read_events(16, timeout=2)
                self.assertTrue(more, "events missing")
                evs += more
            self.assertEqual(evs[1].reason, RevokeReason.UNPUBLISHED)
            h.unwatch(wid)
            self.assertEqual(errno_of(lambda: h.unwatch(wid)), errno.ENOENT)
            self.assertEqual(h.read_events(timeout=0), [])
            with self.assertRaises(ValueError):
                h.read_events(0)

    def test_exit_reason(self) -> None:
        name = uniq("exit")
        with handle() as h:
            h.watch(name)

            def pub_and_die() -> None:
                h2 = handle()
                h2.publish(name, blob=b"x", access=Access.SCOPE)
                os._exit(0)  # no close: the process is gone
            c = Child(pub_and_die)
            c.wait()
            evs = list(h.events(timeout=2))
            self.assertEqual([e.type for e in evs], [EventType.PUBLISHED, EventType.REVOKED])
            self.assertIn(evs[1].reason, (RevokeReason.EXITED, RevokeReason.CLOSED))

    def test_fileno_poll(self) -> None:
        name = uniq("poll")
        with handle() as h, handle() as p:
            h.watch(name)
            fd = h.fileno()
            self.assertEqual(select.select([fd], [], [], 0)[0], [])
            self.assertEqual(h.read_events(timeout=0), [])
            p.publish(name, blob=b"1", access=Access.SCOPE)
            self.assertEqual(select.select([fd], [], [], 5)[0], [fd])
            evs = h.read_events(timeout=0)
            self.assertEqual([e.type for e in evs], [EventType.PUBLISHED])

    def test_asyncio(self) -> None:
        prefix = uniq("aio") + "/"

        async def main() -> list:
            with handle() as h:
                h.watch(prefix, prefix=True)

                def pub() -> None:
                    time.sleep(0.2)
                    with handle() as h2:
                        for i in range(3):
                            h2.publish(f"{prefix}{i}", blob=b"x", access=Access.SCOPE)
                c = Child(pub)
                got = []
                tick = 0

                async def ticker() -> None:  # the loop stays free while we wait
                    nonlocal tick
                    while True:
                        await asyncio.sleep(0.01)
                        tick += 1

                tt = asyncio.ensure_future(ticker())

                async def collect() -> None:
                    async for ev in h.aevents():
                        got.append(ev)
                        if len(got) == 6:
                            return
                await asyncio.wait_for(collect(), 10)
                tt.cancel()
                c.result()
                self.assertGreater(tick, 5)
                return got

        evs = asyncio.run(main())
        self.assertEqual([e.type for e in evs], [EventType.PUBLISHED] * 3 + [EventType.REVOKED] * 3)

    def test_close_while_another_thread_reads(self) -> None:
        """close() under a blocked read_events() must not free the C handle
        beneath it: the close waits for the read, which a publish ends."""
        import threading
        name = uniq("busy")
        h = handle()
        own = uniq("busy-own")
        h.publish(own, blob=b"x", access=Access.SCOPE)
        h.watch(name)
        got: list = []
        t = threading.Thread(target=lambda: got.extend(h.read_events(8, timeout=None)))
        t.start()
        for _ in range(500):  # until the reader is inside the C call
            if h._busy:
                break
            time.sleep(0.01)
        time.sleep(0.05)
        h.close()
        self.assertTrue(h.closed)
        self.assertEqual(errno_of(h.info), errno.EBADF)
        with handle() as p:
            self.assertEqual(p.fetch(own).blob, b"x")  # not closed yet: the read pins it
            p.publish(name, blob=b"wake", access=Access.SCOPE)
            t.join(10)
            self.assertFalse(t.is_alive())
            self.assertEqual([e.name for e in got], [name])
            self.assertEqual(errno_of(lambda: p.fetch(own)), errno.ENOENT)  # closed now

    def test_broker_without_blobs(self) -> None:
        """max_blob_size 0: fetches pass no buffer (contract C5: a buffer
        with no capacity is EINVAL)."""
        b = Broker("--max-blob-size", "0")
        try:
            with b.open() as h:
                self.assertEqual(h.info().max_blob_size, 0)
                fd = memfd_with(b"only a file")
                h.publish("noblob", fd=fd)
                os.close(fd)
                with h.fetch("noblob") as f:
                    self.assertEqual((f.blob, read_fd(f.fd)), (b"", b"only a file"))
                self.assertEqual(errno_of(lambda: h.publish("b", blob=b"x")), errno.EMSGSIZE)
        finally:
            self.assertEqual(b.stop(), 0)

    def test_entry_quota(self) -> None:
        b = Broker("--max-entries-per-user", "2")
        try:
            with b.open() as h:
                h.publish("q/1", blob=b"x")
                h.publish("q/2", blob=b"x")
                with self.assertRaises(NvbridgeError) as cm:
                    h.publish("q/3", blob=b"x")
                # contract v2: ENOSPC; before it: EDQUOT
                self.assertIn(cm.exception.errno, (errno.ENOSPC, errno.EDQUOT))
                self.assertTrue(cm.exception.detail)
                h.unpublish(name="q/1")
                h.publish("q/3", blob=b"x")
        finally:
            self.assertEqual(b.stop(), 0)

    def test_broker_gone(self) -> None:
        b = Broker()
        try:
            h = b.open()
            h.watch("", prefix=True)
            h.publish("x", blob=b"x")
        finally:
            self.assertEqual(b.stop(), 0)
        # the PUBLISHED event queued before the broker died comes first, then
        # the end: ECONNRESET whichever of send or read finds out (nvb_open(3))
        self.assertEqual(errno_of(lambda: [h.read_events(timeout=2) for _ in range(4)]),
                         errno.ECONNRESET)
        self.assertEqual(errno_of(lambda: h.fetch("x")), errno.ECONNRESET)
        h.close()


@unittest.skipUnless(is_root(), NEED_ROOT)
class AccessPolicies(unittest.TestCase):
    """Entries published by root (or a test uid), fetched by test uids."""

    def setUp(self) -> None:
        self.h = handle()

    def tearDown(self) -> None:
        self.h.close()

    @staticmethod
    def fetch_as(name: str, uid: int, gid: Optional[int] = None, groups=(), **kw: Any) -> Any:
        """("ok", publisher uid) or the errno of the fetch as uid."""
        def f() -> Any:
            with handle() as h:
                try:
                    with h.fetch(name, **kw) as r:
                        return ("ok", r.uid)
                except NvbridgeError as e:
                    return e.errno
        return run_as(f, uid=uid, gid=gid, groups=groups)

    def test_owner(self) -> None:
        name = uniq("own")
        fd = memfd_with(b"secret")
        self.h.publish(name, fd=fd)
        os.close(fd)
        self.assertIn(self.fetch_as(name, UID0 + 1), DENIED)
        self.assertIn(self.fetch_as(name, UID0 + 1, wait=True, timeout=0.2),
                      DENIED + (errno.ETIMEDOUT,))

    def test_scope(self) -> None:
        name = uniq("scope")
        self.h.publish(name, blob=b"x", access=Access.SCOPE)
        self.assertEqual(self.fetch_as(name, UID0 + 1), ("ok", 0))  # ok, publisher uid 0

    def test_uid(self) -> None:
        name = uniq("uid")
        self.h.publish(name, blob=b"x", access=Access.UID, uid=UID0 + 2)
        self.assertEqual(self.fetch_as(name, UID0 + 2), ("ok", 0))
        self.assertIn(self.fetch_as(name, UID0 + 3), DENIED)

    def test_gid(self) -> None:
        name = uniq("gid")
        self.h.publish(name, blob=b"x", access=Access.GID, gid=UID0 + 50)
        self.assertEqual(self.fetch_as(name, UID0 + 4, groups=[UID0 + 50]), ("ok", 0))
        self.assertIn(self.fetch_as(name, UID0 + 4), DENIED)

    def test_group(self) -> None:
        name = uniq("group")

        def pub(ready: Sync, done: Sync) -> None:
            with handle() as h:
                h.publish(name, blob=b"g", access=Access.GROUP)
                ready.post()
                done.wait()
        ready, done = Sync(), Sync()
        c = Child(pub, ready, done, uid=UID0 + 5, gid=UID0 + 60)
        ready.wait()
        try:
            self.assertEqual(self.fetch_as(name, UID0 + 6, gid=UID0 + 60), ("ok", UID0 + 5))
            self.assertEqual(self.fetch_as(name, UID0 + 7, gid=UID0 + 61, groups=[UID0 + 60]),
                             ("ok", UID0 + 5))
            self.assertIn(self.fetch_as(name, UID0 + 8, gid=UID0 + 61), DENIED)
        finally:
            done.post()
            c.result()

    def test_expect_uid(self) -> None:
        name = uniq("expect")
        self.h.publish(name, blob=b"x", access=Access.SCOPE)
        self.assertEqual(self.fetch_as(name, UID0 + 9, expect_uid=0), ("ok", 0))
        # another owner expected: old library EPERM, contract v2 ENOENT (invisible)
        self.assertIn(self.fetch_as(name, UID0 + 9, expect_uid=UID0 + 10),
                      (errno.EPERM, errno.ENOENT))
        self.assertIn(self.fetch_as(name, UID0 + 9, expect_uid=UID0 + 10, wait=True, timeout=0.2),
                      (errno.EPERM, errno.ETIMEDOUT))

    def test_squatted_name_never_hands_over_the_squatters_file(self) -> None:
        """A test uid takes the service's name first; root's client that
        expects uid 0 must never receive the squatter's file."""
        name = uniq("svc")

        def squat(ready: Sync, done: Sync) -> None:
            with handle() as h:
                fd = memfd_with(b"evil")
                h.publish(name, fd=fd, access=Access.SCOPE)
                ready.post()
                done.wait()
        ready, done = Sync(), Sync()
        c = Child(squat, ready, done, uid=UID0 + 11)
        ready.wait()
        try:
            try:
                fd = memfd_with(b"good")
                self.h.publish(name, fd=fd, access=Access.SCOPE)  # contract v2: names are owned
                os.close(fd)
            except NvbridgeError as e:
                self.assertEqual(e.errno, errno.EEXIST)  # before contract v2
            try:
                with self.h.fetch(name, expect_uid=0) as f:
                    self.assertEqual(f.uid, 0)
                    self.assertEqual(read_fd(f.fd), b"good")
            except NvbridgeError as e:
                self.assertIn(e.errno, (errno.EPERM, errno.ENOENT))
        finally:
            done.post()
            c.result()

    def test_denied_user_sees_nothing(self) -> None:
        prefix = uniq("hidden") + "/"

        def watcher(ready: Sync, go: Sync) -> tuple:
            with handle() as h:
                h.watch(prefix, prefix=True)
                ready.post()
                go.wait()
                names = [e.name for e in h.list() if e.name.startswith(prefix)]
                evs = [(e.type, e.name) for e in h.events(timeout=0.5)]
                return names, evs
        ready, go = Sync(), Sync()
        c = Child(watcher, ready, go, uid=UID0 + 12)
        ready.wait()
        self.h.publish(prefix + "owner", blob=b"x")
        self.h.publish(prefix + "scope", blob=b"x", access=Access.SCOPE)
        self.h.unpublish(name=prefix + "owner")
        go.post()
        names, evs = c.result()
        self.assertEqual(names, [prefix + "scope"])
        self.assertEqual(evs, [(EventType.PUBLISHED, prefix + "scope")])

    def test_unpublish_other_users_entry(self) -> None:
        name = uniq("keep")
        self.h.publish(name, blob=b"x", access=Access.SCOPE)

        def try_unpublish() -> int:
            with handle() as h:
                return errno_of(lambda: h.unpublish(name=name))
        self.assertIn(run_as(try_unpublish, uid=UID0 + 13), (errno.ENOENT, errno.EPERM))
        self.assertEqual(self.h.fetch(name).blob, b"x")


if __name__ == "__main__":
    unittest.main()
