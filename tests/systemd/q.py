#!/usr/bin/env python3
"""A JSON query for tests/systemd/run: `q.py [--lines] EXPR` evaluates the Python
expression EXPR with `d` bound to the JSON read from stdin (with --lines, one document
per line, as `journalctl -o json` writes them, as a list). Prints a string as is, a
bool as true/false, None as nothing, anything else as JSON. Exit 2 if stdin is not JSON."""
import json
import sys

args = sys.argv[1:]
lines = args and args[0] == "--lines"
if lines:
    args = args[1:]
text = sys.stdin.read()
try:
    d = [json.loads(l) for l in text.splitlines() if l.strip()] if lines else json.loads(text)
except ValueError as e:
    print(f"q.py: not JSON ({e}): {text[:300]!r}", file=sys.stderr)
    sys.exit(2)
v = eval(args[0], {"d": d, "json": json})
if v is None:
    pass
elif isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, str):
    print(v)
else:
    print(json.dumps(v))
