"""Seed replicates: how much a training seed moves the headline figures (`make replicates N=3`).

    python -m specdraft.report.replicates --n 3 [--out reports/replicates.md]

Why: every figure of one run comes from one training seed, and at n = 40 a CoT/CoD
difference may be no larger than what another seed gives. This queues the whole pipeline
under training seeds 0..N-1 (`dvc exp run --queue -S seed=<s>`, DVC's queue, one worker: two
would share the two cores and spoil the timings), waits for them, and writes a table of
every headline figure (accuracy of each plain configuration, CoD/CoT tokens, acceptance,
speedup): the mean, the spread across seeds (min-max and the standard deviation) and the
per-seed values, beside the within-run 95 % CI of seed 0, so the two kinds of uncertainty
can be read side by side, and how many replicates' speedups fall inside seed 0's interval.

Robust to an earlier invocation's leftovers: only the tasks this invocation queues count
(by name), experiments already named `seed-<s>` are removed first (the new run replaces
them, and says so), a worker that dies with tasks still queued ends the wait with an error
naming them, and every dvc call has a time limit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from specdraft.io import write_json, write_text

EXP = "seed-{}"


DVC_TIMEOUT_S = 600  # one dvc command (exp show reads every experiment's commit)


def _dvc(*args: str, check: bool = True) -> str:
    try:
        p = subprocess.run(["dvc", *args], capture_output=True, text=True, timeout=DVC_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise SystemExit(f"dvc {' '.join(args)} did not finish in {DVC_TIMEOUT_S} s") from e
    if check and p.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout


def experiments() -> dict[str, dict[str, Any]]:
    """name -> its data (params, metrics) from `dvc exp show --json`."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("name") and isinstance(node.get("data"), dict) and "metrics" in node["data"]:
                found[node["name"]] = node["data"]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(_dvc("exp", "show", "--json")))
    return found


def with_full_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """`dvc exp show` keeps only the numbers of a metrics file and drops its lists (the CIs):
    read the evaluation files whole from the experiment's own commit."""
    for path, entry in data["metrics"].items():
        if path.startswith("metrics/eval/"):
            p = subprocess.run(["git", "show", f"{data['rev']}:{path}"], capture_output=True, text=True, check=True)
            entry["data"] = json.loads(p.stdout)
    return data


def task_states(status: str, names: set[str]) -> dict[str, str]:
    """{name: state} of the tasks `names` in `dvc queue status` output (other tasks, e.g. an
    earlier invocation's failures, are not ours and do not count)."""
    out = {}
    for line in status.splitlines():
        cols = line.split()
        hit = [c for c in cols if c in names]
        state = next((c for c in cols if c in ("Queued", "Running", "Success", "Failed")), None)
        if hit and state:
            out[hit[0]] = state
    return out


def active_workers(status: str) -> int | None:
    """Active workers from the 'Worker status: N active, M idle' line (None if absent)."""
    for line in status.splitlines():
        if line.startswith("Worker status"):
            return int(line.split(":")[1].split("active")[0].strip())
    return None


def queue_and_wait(n: int, poll_s: float = 30.0, timeout_s: float = 4 * 3600, dead_polls: int = 3) -> float:
    """Queue seeds 0..n-1, run them one at a time, return the wall time. Experiments already
    named seed-<s> are replaced; the wait ends with an error when our tasks fail, when no
    worker is active for `dead_polls` polls in a row while ours are still queued, or after
    `timeout_s`."""
    t = time.monotonic()
    names = {EXP.format(s) for s in range(n)}
    existing = sorted(names & set(experiments()))
    if existing:
        print(f"replacing the earlier experiments {existing}", flush=True)
        _dvc("exp", "remove", *existing)
    for s in range(n):
        _dvc("exp", "run", "--queue", "-n", EXP.format(s), "-S", f"seed={s}")
    # `dvc queue start` leaves a worker daemon behind that inherits its output pipes: with
    # captured output the call would only return when the whole queue is done.
    if subprocess.run(["dvc", "queue", "start", "-j", "1"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL, timeout=DVC_TIMEOUT_S).returncode != 0:
        raise SystemExit("dvc queue start failed")
    idle = 0
    while True:
        time.sleep(poll_s)
        status = _dvc("queue", "status")
        states = task_states(status, names)
        pending = sorted(k for k, v in states.items() if v in ("Queued", "Running"))
        if not pending:
            break
        idle = idle + 1 if active_workers(status) == 0 and "Running" not in states.values() else 0
        if idle >= dead_polls:
            raise SystemExit(f"no dvc queue worker is running but {pending} are still queued "
                             "(`dvc queue logs <name>`; `dvc queue start` resumes them)")
        if time.monotonic() - t > timeout_s:
            raise SystemExit(f"replicates still running after {timeout_s / 3600:.1f} h: {pending}")
        print(f"[{time.monotonic() - t:6.0f}s] waiting: {states}", flush=True)
    failed = sorted(k for k, v in task_states(_dvc("queue", "status"), names).items() if v == "Failed")
    if failed:
        raise SystemExit(f"replicates {failed} failed (`dvc queue logs <name>` says why)")
    return time.monotonic() - t


def coverage(out: dict[str, Any]) -> tuple[int, int]:
    """(inside, replicates): how many replicate speedups (seeds other than the first) fall
    inside the first seed's own 95 % interval, over every speculative configuration."""
    inside = total = 0
    for name, o in out.items():
        ci = o["within_run_ci95_seed0"]
        if not name.endswith(" speedup") or not ci:
            continue
        for v in o["per_seed"][1:]:
            if v is not None:
                total += 1
                inside += ci[0] <= v <= ci[1]
    return inside, total


def _metric(data: dict[str, Any], path: str) -> dict[str, Any]:
    return (data["metrics"].get(path) or {}).get("data") or {}


def figures(data: dict[str, Any]) -> dict[str, float | None]:
    """The headline figures of one run, by name ('gsm8k cot accuracy', ...): accuracy of each
    plain configuration (a speculative one gives the same answers: its divergence is
    counted), acceptance and speedup of each speculative one, and CoD/CoT tokens."""
    out: dict[str, float | None] = {}
    for sc, configs in _metric(data, "metrics/headline.json").items():
        for config, m in configs.items():
            if "speedup" in m:
                out[f"{sc} {config} acceptance"] = m["acceptance_rate"]
                out[f"{sc} {config} speedup"] = m["speedup"]
            else:
                out[f"{sc} {config} accuracy"] = m["accuracy"]
        cmp = _metric(data, f"metrics/eval/{sc}/comparisons.json").get("cod_vs_cot")
        if cmp:
            out[f"{sc} CoD/CoT tokens"] = cmp["output_tokens_ratio"]
    return out


def within_run_ci(data: dict[str, Any], name: str) -> list[float] | None:
    """The 95 % CI seed 0's own run reports for a figure (accuracy, speedup, token ratio)."""
    sc, rest = name.split(" ", 1)
    if rest == "CoD/CoT tokens":
        return (_metric(data, f"metrics/eval/{sc}/comparisons.json").get("cod_vs_cot") or {}).get(
            "output_tokens_ratio_ci95")
    config, what = rest.rsplit(" ", 1)
    m = _metric(data, f"metrics/eval/{sc}/{config}.json")
    return m.get({"accuracy": "accuracy_ci95", "speedup": "speedup_ci95"}.get(what, ""))


def table(runs: dict[int, dict[str, Any]], seconds: float | None) -> tuple[str, dict[str, Any]]:
    """Markdown and JSON of every headline figure across the seeds."""
    per_seed = {s: figures(d) for s, d in sorted(runs.items())}
    names = sorted({k for f in per_seed.values() for k in f})
    rows, out = [], {}
    for name in names:
        vals = [per_seed[s].get(name) for s in per_seed]
        xs = [v for v in vals if v is not None]
        if not xs:
            continue
        ci = within_run_ci(runs[min(runs)], name)
        out[name] = {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                     "min": min(xs), "max": max(xs), "per_seed": vals, "within_run_ci95_seed0": ci}
        o = out[name]
        rows.append(f"| {name} | {o['mean']:.3f} | {o['min']:.3f}-{o['max']:.3f} ({o['sd']:.3f}) | "
                    + " / ".join("–" if v is None else f"{v:.3f}" for v in vals)
                    + (f" | [{ci[0]:.3f}, {ci[1]:.3f}] |" if ci else " | – |"))
    seeds = " / ".join(str(s) for s in per_seed)
    inside, total = coverage(out)
    md = ["# Seed replicates", "",
          f"The whole pipeline under training seeds {seeds} (`make replicates N={len(per_seed)}`"
          + (f", {seconds / 60:.0f} min" if seconds else "") + "); the data and the bootstrap seed are the same in "
          "every run. Spread: min-max across seeds (standard deviation); the last column is the 95 % CI that "
          f"the run of seed {min(per_seed)} reports for itself.", "",
          f"| figure | mean | spread | per seed ({seeds}) | within-run 95 % CI |", "|---|---|---|---|---|", *rows, "",
          f"Speedup interval coverage: {inside} of {total} replicate speedups (the other seeds, every speculative "
          f"configuration) fall inside seed {min(per_seed)}'s own 95 % interval.", ""]
    return "\n".join(md), {"seeds": list(per_seed), "seconds": seconds, "figures": out,
                           "speedup_coverage": {"inside": inside, "replicates": total}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3, help="training seeds 0..n-1")
    p.add_argument("--out", type=Path, default=Path("reports/replicates.md"))
    p.add_argument("--no-run", action="store_true",
                   help="only tabulate experiments seed-<s> that exist (keeps the run time recorded in OUT's .json)")
    a = p.parse_args()
    recorded = a.out.with_suffix(".json")
    if a.no_run:
        seconds = json.loads(recorded.read_text()).get("seconds") if recorded.exists() else None
    else:
        seconds = queue_and_wait(a.n)
    exps = experiments()
    runs = {s: exps[EXP.format(s)] for s in range(a.n) if EXP.format(s) in exps}
    if len(runs) < a.n:
        sys.exit(f"found {sorted(runs)} of seeds 0..{a.n - 1} in `dvc exp show`")
    with_full_metrics(runs[0])
    md, data = table(runs, seconds)
    write_text(a.out, md)
    write_json(a.out.with_suffix(".json"), data)
    print(md)


if __name__ == "__main__":
    main()
