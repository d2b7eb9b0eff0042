#!/usr/bin/env python3
"""Reads `journalctl -o json` on stdin and answers the system test's questions.

  journal.py find [--field NAME] [--last] FILTER...
      Prints the first (--last: the last) entry matching every FILTER, as
      "#SEQNUM [PRIORITY] IDENTIFIER: MESSAGE" or, with --field, only that
      field's value (--field SEQNUM: the entry's sequence number, the order
      journald received it in); exits 1 when nothing matches.
  journal.py cursor
      Prints the __CURSOR of the last entry (nothing for an empty journal).
  journal.py show [N]
      Prints the last N (default 30) entries, one line each, for a failure's
      explanation.

A FILTER is KEY=VALUE (equal), KEY^=VALUE (starts with) or KEY~=VALUE
(contains). journalctl's JSON gives every field as a string, except values
that are not valid UTF-8 (arrays of bytes) and repeated fields (arrays);
both are handled.
"""
import json
import re
import sys

FILTER = re.compile(r"^([A-Z0-9_]+)(=|\^=|~=)(.*)$", re.S)


def values(entry, key):
    value = entry.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        if value and all(isinstance(item, int) for item in value):
            return [bytes(value).decode("utf-8", "replace")]
        return [v if isinstance(v, str) else bytes(v).decode("utf-8", "replace") for v in value]
    return [str(value)]


def matches(entry, filters):
    for key, op, wanted in filters:
        found = values(entry, key)
        if op == "=" and wanted not in found:
            return False
        if op == "^=" and not any(v.startswith(wanted) for v in found):
            return False
        if op == "~=" and not any(wanted in v for v in found):
            return False
    return True


def seqnum(entry):
    """The entry's sequence number: __SEQNUM where journalctl prints it
    (systemd 254 and later), else the i= part of the cursor (hex)."""
    if "__SEQNUM" in entry:
        return int(values(entry, "__SEQNUM")[0])
    for part in entry.get("__CURSOR", "").split(";"):
        if part.startswith("i="):
            return int(part[2:], 16)
    return None


def field_value(entry, name):
    if name == "SEQNUM":
        return str(seqnum(entry))
    return (values(entry, name) or [""])[0]


def line(entry):
    ident = (values(entry, "SYSLOG_IDENTIFIER") or values(entry, "_COMM") or ["?"])[0]
    prio = (values(entry, "PRIORITY") or ["?"])[0]
    seq = seqnum(entry)
    extra = " ".join(f"{k}={values(entry, k)[0]}" for k in sorted(entry)
                     if k.startswith("CHATD_") or k == "MESSAGE_ID")
    return f"#{seq} [{prio}] {ident}: {(values(entry, 'MESSAGE') or [''])[0]}" + (f"  ({extra})" if extra else "")


def entries():
    for raw in sys.stdin:
        raw = raw.strip()
        if raw:
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue


def main(argv):
    if not argv:
        sys.exit(__doc__)
    command, args = argv[0], argv[1:]
    if command == "cursor":
        last = None
        for entry in entries():
            last = entry
        if last is not None:
            print(last["__CURSOR"])
        return 0
    if command == "show":
        count = int(args[0]) if args else 30
        tail = list(entries())[-count:]
        for entry in tail:
            print("    " + line(entry))
        if not tail:
            print("    (no journal entries)")
        return 0
    if command == "find":
        wanted, last, filters = None, False, []
        while args:
            arg = args.pop(0)
            if arg == "--field":
                wanted = args.pop(0)
            elif arg == "--last":
                last = True
            else:
                m = FILTER.match(arg)
                if not m:
                    sys.exit(f"journal.py: bad filter {arg!r}")
                filters.append(m.groups())
        found = None
        for entry in entries():
            if matches(entry, filters):
                found = entry
                if not last:
                    break
        if found is None:
            return 1
        print(field_value(found, wanted) if wanted else line(found))
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
