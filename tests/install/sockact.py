#!/usr/bin/env python3
"""A minimal stand-in for systemd's socket activation of nvbridged.socket:
creates the SOCK_SEQPACKET listening socket as the unit describes it
(mode, SO_PASSCRED for PassCredentials=yes), waits for the first
connection as systemd does, then execs COMMAND with the socket as fd 3 and
LISTEN_PID/LISTEN_FDS set (the pid does not change across exec).

usage: sockact.py [--passcred] PATH MODE COMMAND [ARGS...]"""
import os
import select
import socket
import sys

args = sys.argv[1:]
passcred = False
if args and args[0] == "--passcred":
    passcred = True
    args = args[1:]
path, mode, cmd = args[0], int(args[1], 8), args[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
if passcred:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
if os.path.exists(path):
    os.unlink(path)
s.bind(path)
os.chmod(path, mode)
s.listen(128)
print(f"sockact: listening on {path} (mode {mode:04o}, passcred {int(passcred)})", flush=True)
select.select([s], [], [])
print("sockact: connection pending, starting " + " ".join(cmd), flush=True)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="nvbridged.socket")
os.execvpe(cmd[0], cmd, env)
