"""The README's result blocks, generated from the committed run's metrics and report
(`python -m specdraft.report.readme`; `--check` exits 1 when a block differs).

Why: the README's tables were copied by hand from reports/summary.md and the metrics, and
went stale run after run (an earlier run's speedups beside this run's verdicts). Each
block sits between two markers,

    <!-- begin generated: NAME -->
    ...
    <!-- end generated: NAME -->

and is rewritten from its source: `verdicts` from reports/summary.md, `results` and
`eagle` from metrics/eval/, `time` from metrics/stage_times.json. tests/test_docs.py fails
when a block differs from what the commit's metrics give. Prose outside the blocks keeps
no figure of the run.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from specdraft.io import read_json, write_text

SCENARIOS = {"gsm8k": "easy: base ≥ 0.5", "math_algebra_l12": "medium: base 0.1-0.4, trained ≥ base + 0.15",
             "math_intalg_l34": "hard: base ≤ 0.05, trained ≥ 0.15"}
MARK = re.compile(r"(<!-- begin generated: (\w+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.S)


def _ci(ci: list[float] | None, fmt: str = "{:.2f}") -> str:
    return f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else ""


def _x(m: dict[str, Any]) -> str:
    return f"{m['speedup']:.2f}x{_ci(m.get('speedup_ci95'))}" if m.get("speedup") is not None else "–"


def verdicts(root: Path) -> str:
    """The verdict table that opens reports/summary.md, as it is there."""
    lines = (root / "reports/summary.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("| hypothesis |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def _eval(root: Path, sc: str, config: str) -> dict[str, Any]:
    return read_json(root / "metrics/eval" / sc / f"{config}.json")


def results(root: Path) -> str:
    """Per scenario: accuracy of base / CoT / CoD, CoD's token ratio, the 2-layer drafts'
    acceptance, mean accepted length and speedup."""
    out = ["| scenario | condition | accuracy base / CoT / CoD [95% CI] | CoD / CoT tokens | acceptance "
           "cot_sd / cod_sd | mean accepted length cot_sd / cod_sd | speedup cot_sd / cod_sd [95% CI] |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for sc, cond in SCENARIOS.items():
        if not (root / "metrics/eval" / sc).is_dir():
            continue
        base, cot, cod = (_eval(root, sc, c) for c in ("base", "cot", "cod"))
        csd, dsd = _eval(root, sc, "cot_sd"), _eval(root, sc, "cod_sd")
        cmp = read_json(root / "metrics/eval" / sc / "comparisons.json")["cod_vs_cot"]
        out.append(f"| {sc} | {cond} | {base['accuracy']:.2f} / {cot['accuracy']:.2f}{_ci(cot['accuracy_ci95'])} / "
                   f"{cod['accuracy']:.2f}{_ci(cod['accuracy_ci95'])} | {cmp['output_tokens_ratio']:.2f}x"
                   f"{_ci(cmp['output_tokens_ratio_ci95'])} | {csd['acceptance_rate']:.2f} / "
                   f"{dsd['acceptance_rate']:.2f} | {csd['mean_acceptance_length']:.2f} / "
                   f"{dsd['mean_acceptance_length']:.2f} | {_x(csd)} / {_x(dsd)} |")
    return "\n".join(out) + "\n"


def eagle(root: Path) -> str:
    """Per scenario and style: the 2-layer draft against the EAGLE-3 head."""
    out = ["| scenario | mean accepted length cot_sd / cot_sd_eagle (timed) | speedup cot_sd / cot_sd_eagle "
           "[95% CI] | mean accepted length cod_sd / cod_sd_eagle (timed) | speedup cod_sd / cod_sd_eagle [95% CI] |",
           "| --- | --- | --- | --- | --- |"]
    for sc in SCENARIOS:
        if not (root / "metrics/eval" / sc / "cot_sd_eagle.json").is_file():
            continue
        cells = []
        for style in ("cot", "cod"):
            sd, head = _eval(root, sc, f"{style}_sd"), _eval(root, sc, f"{style}_sd_eagle")
            timed = head.get("timed_subset_mean_acceptance_length")
            cells += [f"{sd['mean_acceptance_length']:.2f} / {head['mean_acceptance_length']:.2f}"
                      + (f" ({timed:.2f})" if timed is not None else ""), f"{_x(sd)} / {_x(head)}"]
        out.append(f"| {sc} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def time(root: Path) -> str:
    """The run's wall time by stage family (metrics/stage_times.json) and its machine."""
    t = read_json(root / "metrics/stage_times.json")
    fams = sorted(t["family_s"].items(), key=lambda kv: -kv[1])
    parts = ", ".join(f"{f} {s:.0f} s" for f, s in fams)
    return (f"Stage time of the committed run, summed over its {len(t['stage_s'])} stages: **{t['total_s']:.0f} s** "
            f"({t['total_s'] / 60:.1f} min) on {'; '.join(t['machines'])}; by family: {parts} "
            "(metrics/stage_times.json, each stage's process from start to exit; DVC's own bookkeeping between "
            "stages comes on top; `make diff` shows it beside the results).\n")


BLOCKS = {"verdicts": verdicts, "results": results, "eagle": eagle, "time": time}


def render(text: str, root: Path) -> str:
    """`text` with every generated block rewritten from `root`'s report and metrics."""
    def fill(m: re.Match) -> str:
        name = m.group(2)
        if name not in BLOCKS:
            raise KeyError(f"README.md: generated block {name!r} has no source (known: {sorted(BLOCKS)})")
        return m.group(1) + BLOCKS[name](root) + m.group(4)

    return MARK.sub(fill, text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    p.add_argument("--root", type=Path, default=Path("."), help="the checkout whose reports/ and metrics/ to read")
    p.add_argument("--check", action="store_true", help="exit 1 if a block differs, writing nothing")
    args = p.parse_args()
    text = args.readme.read_text(encoding="utf-8")
    new = render(text, args.root)
    if args.check:
        if new != text:
            print(f"{args.readme}: generated blocks differ from the metrics (python -m specdraft.report.readme)",
                  file=sys.stderr)
            sys.exit(1)
        return
    if new != text:
        write_text(args.readme, new)


if __name__ == "__main__":
    main()
