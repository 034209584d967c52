#!/usr/bin/env python3
"""Checks that Documentation/abi.rst documents the whole UAPI header: every
NVBRIDGE_* constant, enum value and ioctl, every struct and every struct
field, and every errno that Documentation/semantics.md names.  Prints one PASS/FAIL line
per struct / group and exits 1 on any gap."""
import re
import sys

hdr, doc, sem = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None
h = open(hdr).read()
d = open(doc).read()
h_nocomment = re.sub(r"/\*.*?\*/", "", h, flags=re.S)
fails = 0


def report(what, missing):
    global fails
    if missing:
        fails += 1
        print(f"FAIL: {what}: not documented: {' '.join(sorted(missing))}")
    else:
        print(f"PASS: {what}")


idents = set(re.findall(r"\bNVBRIDGE_[A-Z0-9_]+\b", h_nocomment))
report("NVBRIDGE_* constants, enum values and ioctls",
       [i for i in idents if f"``{i}``" not in d and not re.search(rf"\b{i}\b", d)])

for name, body in re.findall(r"struct (nvbridge_\w+) \{(.*?)\};", h_nocomment, flags=re.S):
    fields = re.findall(r"(\w+)\s*(?:\[[^\]]*\])?;", body)
    missing = [f for f in fields if f"``{f}``" not in d]
    if f"struct {name}" not in d:
        missing.append(f"struct {name}")
    report(f"struct {name}: {len(fields)} fields", missing)

if sem:
    s = open(sem).read()
    errnos = set(re.findall(r"-(E[A-Z0-9]+)\b", s)) - {"ERESTARTSYS"}
    report(f"errno values named in {sem.split('/')[-1]}",
           [e for e in errnos if not re.search(rf"\b-?{e}\b", d)])

sys.exit(1 if fails else 0)
