"""Where the test suite's time goes: per test file, fixture set-up apart from the tests'
own calls, and the slowest set-ups by name (`python -m specdraft.tools.test_times <file>`).

Why: CI has a hard stop, and the suite's time is spent mostly in a few session fixtures
(the pipeline runs) whose cost pytest charges to whichever test first uses them, so
`--durations` alone blames a test. tests/conftest.py appends one JSON line per test phase
(set-up, call, tear-down) to $SPECDRAFT_TEST_TIMES; `.ci/run` sets it and prints this
table at the end, so a slower landing shows where it got slower before the next one.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from specdraft.io import InputError, read_jsonl


def per_file(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{test file: {tests, setup_s, call_s, teardown_s, total_s}}, slowest first."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"tests": 0, "setup_s": 0.0, "call_s": 0.0,
                                                            "teardown_s": 0.0})
    for r in rows:
        f = out[r["nodeid"].split("::", 1)[0]]
        f[f"{r['when']}_s"] += r["duration"]
        f["tests"] += r["when"] == "call" or (r["when"] == "setup" and r["outcome"] == "skipped")
    for f in out.values():
        f["total_s"] = f["setup_s"] + f["call_s"] + f["teardown_s"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["total_s"]))


def table(rows: list[dict[str, Any]], top: int = 8) -> str:
    files = per_file(rows)
    total = sum(f["total_s"] for f in files.values()) or 1.0
    lines = ["| test file | tests | set-up (fixtures) | calls | total | share |", "|---|---|---|---|---|---|"]
    for name, f in files.items():
        lines.append(f"| {name} | {f['tests']} | {f['setup_s']:.0f} s | {f['call_s']:.0f} s | {f['total_s']:.0f} s | "
                     f"{f['total_s'] / total * 100:.0f} % |")
    lines.append(f"| **all** | {sum(f['tests'] for f in files.values())} | "
                 f"{sum(f['setup_s'] for f in files.values()):.0f} s | {sum(f['call_s'] for f in files.values()):.0f} s | "
                 f"**{total / 60:.1f} min** | |")
    setups = sorted((r for r in rows if r["when"] == "setup"), key=lambda r: -r["duration"])[:top]
    lines += ["", "Slowest set-ups (a session fixture is paid by the first test that uses it):", ""]
    lines += [f"- {r['duration']:.0f} s  {r['nodeid']}" for r in setups]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("times", type=Path, help="the JSON lines tests/conftest.py wrote ($SPECDRAFT_TEST_TIMES)")
    args = p.parse_args()
    try:
        rows = read_jsonl(args.times, ["nodeid", "when", "duration", "outcome"], tolerate_partial_last_line=True)
    except InputError as e:
        raise SystemExit(f"error: {e}") from None
    print(table(rows))


if __name__ == "__main__":
    main()
