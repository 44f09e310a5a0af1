"""How hard each scenario's problems are for the local target: the measurement behind the
choice of the shipped sample problems (README, "Choosing the local profile").

    python -m specdraft.tools.probe_scenarios --data DIR [--scenario NAME ...] [--json OUT]

For each scenario of a data folder (the sample layout: DIR/gsm8k, DIR/math) it runs the
pipeline's own code with the committed params: prepare (the same counts), the reference
teacher, LoRA training of the target on CoT and on CoD, and batched greedy answers of the
untrained and the two trained targets to the test questions, scored by the shared
checker. It reports accuracy, the share of answers cut at max_new_tokens, and the exact
McNemar p of each trained target against the untrained one: the design's conditions
(easy: the untrained target solves them; medium: some, and training helps; hard: none,
and only training begins to) are read off these, before anyone looks at CoT vs CoD.
Needs models/base/target (`dvc repro base_models`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.data.prepare import PrepareConfig, ScenarioConfig, prepare
from specdraft.data.sources import DataConfig
from specdraft.evaluate.stats import mcnemar_exact
from specdraft.generate.api import GenerationConfig
from specdraft.generate.hf_engine import HFEngine
from specdraft.generate.passes import batched_answers
from specdraft.generate.resume import Resumable
from specdraft.prompts import PromptsConfig, messages
from specdraft.teacher.core import TeacherConfig
from specdraft.teacher.pipeline import run_cod, run_cot
from specdraft.train.settings import TrainConfig
from specdraft.train.sft import train_and_save


def answers(model: Path, rows: list[dict[str, Any]], style: str, prompts: PromptsConfig, gen: GenerationConfig,
            scratch: Path) -> list[dict[str, Any]]:
    with HFEngine(model, None, gen) as eng:
        texts = {r["id"]: eng.render(messages(prompts, style, r["question"])) for r in rows}
        done = batched_answers(eng, rows, texts, Resumable(scratch / f"{model.name}-{style}.jsonl", "probe"))
    return [done[r["id"]] for r in rows]


def probe(data: Path, scenario: str, params: dict[str, Any], base: Path, scratch: Path) -> dict[str, Any]:
    """Base, CoT and CoD accuracy (and truncation) of one scenario on the problems in `data`."""
    sc = section(ScenarioConfig, f"scenarios.{scenario}", params)
    ds = {**params["data"], "source": f"dir:{data}"}
    out = prepare(scenario, sc, section(DataConfig, "data", {"data": ds}), section(PrepareConfig, "prepare", params))
    prompts = section(PromptsConfig, "prompts", params)
    teacher = dataclasses.replace(section(TeacherConfig, "teacher", params), backend="reference")
    cot, _, _ = run_cot(out.train, prompts, teacher, scratch)
    cod, _, _ = run_cod(cot, {r["id"]: r for r in out.train}, prompts, teacher, scratch)
    gen = section(GenerationConfig, "generation", params)
    tcfg = section(TrainConfig, "train_target", params)
    result: dict[str, Any] = {"scenario": scenario, "n_train": len(cot), "n_test": len(out.test)}
    base_ans = answers(base, out.test, "cot", prompts, gen, scratch)
    runs = {"base": base_ans}
    for style, rows in (("cot", cot), ("cod", cod)):
        model = scratch / f"target-{style}"
        train_and_save(base, rows, prompts, style, "response", tcfg, model, scratch / f"ckpt-{style}",
                       scratch / f"live-{style}")
        runs[style] = answers(model, out.test, style, prompts, gen, scratch)
    for name, ans in runs.items():
        correct = [a["correct"] for a in ans]
        result[name] = {"accuracy": sum(correct) / len(correct),
                        "truncated": sum(a["truncated"] for a in ans) / len(ans)}
        if name != "base":
            result[name]["p_vs_base"] = mcnemar_exact(correct, [a["correct"] for a in base_ans])["p_value"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="a folder in the sample layout")
    p.add_argument("--scenario", action="append", help="(default: every scenario in params.yaml)")
    p.add_argument("--base", type=Path, default=Path("models/base/target"))
    p.add_argument("--json", type=Path, help="write the results here too")
    a = p.parse_args()
    params = load_params()
    apply_runtime(section(RuntimeConfig, "runtime", params))
    results = []
    for scenario in a.scenario or list(params["scenarios"]):
        t = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            r = probe(a.data, scenario, params, a.base, Path(tmp))
        r["seconds"] = round(time.monotonic() - t)
        results.append(r)
        print(f"{scenario}: base {r['base']['accuracy']:.2f}, CoT {r['cot']['accuracy']:.2f} "
              f"(p={r['cot']['p_vs_base']:.3f}), CoD {r['cod']['accuracy']:.2f} (p={r['cod']['p_vs_base']:.3f}); "
              f"truncated base/CoT/CoD {r['base']['truncated']:.0%}/{r['cot']['truncated']:.0%}/"
              f"{r['cod']['truncated']:.0%}; {r['seconds']} s", flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
