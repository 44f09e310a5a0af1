"""`make compare A=<rev> B=<rev>`: what `dvc metrics diff` cannot show.

For each scenario and configuration present in both revisions (commits, branches or
experiment names), reads the per-sample predictions through DVC and tests whether the
difference in accuracy is significant: exact McNemar on per-sample correctness over the
same test ids, at 0.05. Prints a table; `--json` also writes it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from specdraft.evaluate.compare import compare


def _load(fs: Any, path: str) -> list[dict[str, Any]]:
    with fs.open(path, "r") as fh:
        return [json.loads(x) for x in fh if x.strip()]


def predictions(rev: str, repo: str = ".") -> dict[tuple[str, str], list[dict[str, Any]]]:
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(repo, rev=rev)
    out = {}
    if not fs.exists("data/eval"):
        return out
    for sc in sorted(fs.ls("data/eval", detail=False)):
        for f in sorted(fs.ls(sc, detail=False)):
            if f.endswith(".jsonl"):
                out[(sc.rsplit("/", 1)[-1], f.rsplit("/", 1)[-1][: -len(".jsonl")])] = _load(fs, f)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--json")
    args = p.parse_args()
    pa, pb = predictions(args.a), predictions(args.b)
    rows = []
    for key in sorted(set(pa) & set(pb)):
        try:
            c = compare(pb[key], pa[key], f"{key[0]}/{key[1]}")
        except ValueError as e:
            rows.append({"scenario": key[0], "config": key[1], "error": str(e)})
            continue
        rows.append({"scenario": key[0], "config": key[1], "n": c["n"],
                     "accuracy_a": sum(r["correct"] for r in pa[key]) / len(pa[key]),
                     "accuracy_b": sum(r["correct"] for r in pb[key]) / len(pb[key]),
                     "diff_b_minus_a": c["accuracy_diff"], "p_value": c["p_value"],
                     "significant_at_0.05": c["significant_at_0.05"],
                     "tokens_ratio_b_over_a": c["output_tokens_ratio"]})
    print(f"\nper-sample comparison, A={args.a}  B={args.b}  (exact McNemar on the same test ids)")
    print(f"{'scenario':<20} {'config':<18} {'n':>4} {'acc A':>7} {'acc B':>7} {'B-A':>7} {'p':>7} "
          f"{'sig':>4} {'tok B/A':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['scenario']:<20} {r['config']:<18} {r['error']}")
            continue
        print(f"{r['scenario']:<20} {r['config']:<18} {r['n']:>4} {r['accuracy_a']:>7.3f} {r['accuracy_b']:>7.3f} "
              f"{r['diff_b_minus_a']:>+7.3f} {r['p_value']:>7.3f} {'yes' if r['significant_at_0.05'] else 'no':>4} "
              f"{r['tokens_ratio_b_over_a']:>8.2f}")
    only = sorted(set(pa) ^ set(pb))
    if only:
        print(f"(in one revision only: {', '.join('/'.join(k) for k in only)})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
