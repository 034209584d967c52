#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Summarise the nvbridge KUnit run from a kunit.py test.log.

Usage: ktap_summary.py TEST_LOG SUITE_GLOB

Reads the KTAP part of TEST_LOG (everything from the first "KTAP version"
or "TAP version" line on), prints one line per test case, then two checks of
its own, then "N passed, M failed":

  * every suite matching SUITE_GLOB ran all the cases its plan announced
    (a crash or a hang leaves some unreported: each missing case is a
    failure), and at least one such suite ran;
  * no kernel line starting "BUG:" or "WARNING:" (lockdep, KASAN, list
    debugging, WARN_ON) appears in the KTAP part: lockdep never fails a
    KUnit case by itself.

A skipped case counts as a failure: nothing in this suite should skip.
Exits 0 when nothing failed, 1 otherwise.
"""
import fnmatch
import re
import sys

TIME = r'(?:\[\s*\d+\.\d+\]\s*)?'
VERSION_RE = re.compile(r'^' + TIME + r'\s*K?TAP version \d+')
PLAN_RE = re.compile(r'^' + TIME + r'( *)1\.\.(\d+)\s*$')
SUBTEST_RE = re.compile(r'^' + TIME + r'( *)# Subtest: (\S+)')
RESULT_RE = re.compile(r'^' + TIME + r'( *)(ok|not ok) (\d+)(?: -)? ?([^#]*?)\s*(#.*)?$')
BAD_RE = re.compile(r'^' + TIME + r'\s*(BUG|WARNING):')


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, glob = sys.argv[1], sys.argv[2]
    try:
        with open(path, errors='replace') as f:
            lines = f.read().splitlines()
    except OSError as e:
        print('FAIL kunit: no test log: %s' % e)
        print('0 passed, 1 failed')
        return 1

    start = next((i for i, l in enumerate(lines) if VERSION_RE.match(l)), None)
    if start is None:
        print('FAIL kunit: no KTAP output in %s (kernel did not run?)' % path)
        print('0 passed, 1 failed')
        return 1
    ktap = lines[start:]

    passed = failed = 0
    suites = {}          # name -> [planned, reported]
    cur = None           # suite whose cases are being reported
    pending = None       # name from the last "# Subtest:" at indent 4
    for line in ktap:
        m = SUBTEST_RE.match(line)
        if m:
            if len(m.group(1)) <= 4 and cur is None:
                pending = m.group(2)
            continue
        m = PLAN_RE.match(line)
        if m and pending is not None and len(m.group(1)) == 4:
            cur = pending
            pending = None
            suites[cur] = [int(m.group(2)), 0]
            continue
        m = RESULT_RE.match(line)
        if not m:
            continue
        indent, status, name, directive = (len(m.group(1)), m.group(2),
                                           m.group(4).strip(), m.group(5) or '')
        if indent == 0:
            cur = None      # a suite's own result line ends it
            continue
        if indent != 4 or cur is None or not fnmatch.fnmatch(cur, glob):
            continue        # parameter results, or a suite we do not own
        suites[cur][1] += 1
        skip = 'SKIP' in directive.upper()
        if status == 'ok' and not skip:
            passed += 1
            print('PASS %s.%s' % (cur, name))
        else:
            failed += 1
            print('FAIL %s.%s%s' % (cur, name, ' (skipped: %s)' % directive
                                    if skip else ''))

    ours = {k: v for k, v in suites.items() if fnmatch.fnmatch(k, glob)}
    missing = sum(max(p - r, 0) for p, r in ours.values())
    if not ours:
        failed += 1
        print('FAIL check.suites_ran: no suite matching %s ran' % glob)
    elif missing:
        failed += 1
        for k, (p, r) in sorted(ours.items()):
            if r < p:
                print('     %s: %d of %d cases reported' % (k, r, p))
        print('FAIL check.suites_ran: %d case(s) never reported (crash or hang)'
              % missing)
    else:
        passed += 1
        print('PASS check.suites_ran: %d suite(s), every planned case reported'
              % len(ours))

    bad = [l for l in ktap if BAD_RE.match(l)]
    if bad:
        failed += 1
        for l in bad[:20]:
            print('     ' + l.strip())
        print('FAIL check.no_bug_or_warning: %d BUG:/WARNING: line(s) in the log'
              % len(bad))
    else:
        passed += 1
        print('PASS check.no_bug_or_warning: no BUG:/WARNING: line in the KTAP log')

    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
