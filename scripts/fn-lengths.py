#!/usr/bin/env python3
"""The longest non-test functions of ferry's Rust crates, by lines (signature to closing brace).

    scripts/fn-lengths.py            the 15 longest
    scripts/fn-lengths.py --max 100  exit 1 when any is longer than 100 lines

Reads rustfmt-formatted code: a function ends at the first `}` at its own indentation. Code
under `#[cfg(test)]` (test modules) and the integration tests (tests/) are left out.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIRS = ["shared", "functions", "infra"]
FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def functions(path):
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "#[cfg(test)]":
            # Skip the item that follows (a test module), to its closing brace.
            j = i + 1
            end = lines[j][: len(lines[j]) - len(lines[j].lstrip())] + "}"
            while j < len(lines) and lines[j].rstrip() != end:
                j += 1
            i = j + 1
            continue
        m = FN.match(line)
        if m and not line.rstrip().endswith(";"):
            end = m.group(1) + "}"
            j = i
            if not line.rstrip().endswith("}"):
                j += 1
                while j < len(lines) and lines[j].rstrip() != end:
                    j += 1
            yield m.group(7), i + 1, j - i + 1
            i += 1
            continue
        i += 1


def main():
    limit = None
    if "--max" in sys.argv:
        limit = int(sys.argv[sys.argv.index("--max") + 1])
    found = []
    for d in DIRS:
        for path in sorted((ROOT / d).rglob("*.rs")):
            if "target" in path.parts:
                continue
            for name, line, n in functions(path):
                found.append((n, f"{path.relative_to(ROOT)}:{line}", name))
    found.sort(reverse=True)
    if limit is None:
        for n, where, name in found[:15]:
            print(f"{n:5}  {name}  {where}")
        return 0
    over = [f for f in found if f[0] > limit]
    for n, where, name in over:
        print(f"{n:5}  {name}  {where}  (over {limit} lines)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
