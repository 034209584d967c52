#!/usr/bin/env python3
"""Parses reStructuredText files with docutils and reports every warning or
error (malformed tables, bad references, ...).  Exit status 1 if any."""
import io
import sys

from docutils.core import publish_doctree

bad = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        src = f.read()
    err = io.StringIO()
    try:
        publish_doctree(src, source_path=path,
                        settings_overrides={"report_level": 2, "halt_level": 5,
                                            "warning_stream": err})
    except Exception as e:  # noqa: BLE001 - any parser crash is a failure
        err.write(f"{path}: {e}\n")
    msgs = err.getvalue().strip()
    if msgs:
        bad += 1
        print(msgs)
sys.exit(1 if bad else 0)
