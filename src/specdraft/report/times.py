"""Where the pipeline's time goes: each stage's wall time (metrics/time/, written by every
stage through specdraft.stages._cli) gathered by stage family for the report and for
metrics/stage_times.json, which `make diff` shows beside the results.

Why by family: the six EAGLE heads or the six evaluations are one cost to cut; a table
of 50 stages hides that. The machine is named with the times, because the same commit
runs at different speeds on different CPUs, and a time is only compared with one from
the same machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specdraft.io import InputError, read_json


def load_times(root: Path) -> dict[str, dict[str, Any]]:
    """Every stage's time record under `root`, by DVC stage name (`root/<stage>.json` is
    `<stage>`, `root/<stage>/<item>.json` is `<stage>@<item>`), in the order they finished."""
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(Path(root).rglob("*.json")):
        rel = f.relative_to(root).with_suffix("")
        name = rel.parts[0] if len(rel.parts) == 1 else f"{rel.parts[0]}@{'/'.join(rel.parts[1:])}"
        record = read_json(f)
        if not isinstance(record, dict) or not isinstance(record.get("wall_s"), int | float):
            raise InputError(f"{f}: field 'wall_s': expected the stage's wall time in seconds, got "
                             f"{record.get('wall_s') if isinstance(record, dict) else record!r}")
        out[name] = record
    return dict(sorted(out.items(), key=lambda kv: (kv[1].get("finished", ""), kv[0])))


def family(stage: str) -> str:
    return stage.split("@", 1)[0]


def by_family(times: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per family, in the order the families first finished (load_times'): the number of
    stages, their summed wall time, its share of the total and the slowest stage."""
    total = sum(t["wall_s"] for t in times.values()) or 1.0
    fams: dict[str, dict[str, Any]] = {}
    for name, t in times.items():
        f = fams.setdefault(family(name), {"stages": 0, "wall_s": 0.0, "slowest": name, "slowest_s": 0.0})
        f["stages"] += 1
        f["wall_s"] += t["wall_s"]
        if t["wall_s"] >= f["slowest_s"]:
            f["slowest"], f["slowest_s"] = name, t["wall_s"]
    for f in fams.values():
        f["wall_s"] = round(f["wall_s"], 1)
        f["share"] = round(f["wall_s"] / total, 3)
    return fams


def machines(times: dict[str, dict[str, Any]]) -> list[str]:
    """The machines the stages ran on ("<cpu>, <cores> cores[, <gpu>]"), most stages first."""
    seen: dict[str, int] = {}
    for t in times.values():
        m = f"{t.get('cpu', '?')}, {t.get('cores', '?')} cores" + (f", {t['gpu']}" if t.get("gpu") else "")
        seen[m] = seen.get(m, 0) + 1
    return sorted(seen, key=lambda m: -seen[m])


def stage_times_metrics(times: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """metrics/stage_times.json: the total and each family's time (what `make diff` shows
    next to the results), and every stage's own, with the machines they ran on."""
    fams = by_family(times)
    return {"total_s": round(sum(t["wall_s"] for t in times.values()), 1),
            "family_s": {f: v["wall_s"] for f, v in fams.items()},
            "stage_s": {n: t["wall_s"] for n, t in times.items()},
            "machines": machines(times)}


def times_table(times: dict[str, dict[str, Any]]) -> list[str]:
    """The report's section: time per stage family with its share, the total, the machine."""
    if not times:
        return []
    fams = by_family(times)
    total = sum(t["wall_s"] for t in times.values())
    ms = machines(times)
    lines = ["## Where the time goes", "",
             f"Wall time of each stage as it last ran (its process, start-up included), on "
             f"{'; '.join(ms)}. A stage DVC did not re-run keeps the time of the run that made its outputs. "
             "`make diff` shows these beside the results (metrics/stage_times.json).", "",
             "| stage family | stages | wall time | share | slowest |", "|---|---|---|---|---|"]
    for f, v in fams.items():
        lines.append(f"| {f} | {v['stages']} | {_dur(v['wall_s'])} | {v['share'] * 100:.0f} % | "
                     f"{v['slowest']} ({_dur(v['slowest_s'])}) |")
    lines += [f"| **total** | {len(times)} | **{_dur(total)}** | 100 % | |", ""]
    return lines


def _dur(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
