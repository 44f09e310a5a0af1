"""Every section of params.yaml and the dataclass that checks it: one place to see the
whole schema, and `check_all` to refuse a bad setting anywhere before a stage that
costs minutes (training, decoding) starts.

The classes are named, not imported: a stage that checks every section must not depend,
in dvc.yaml, on the code of sections it does not read (a change to how the teacher's
settings are checked does not change a trained model). Each stage still builds and
reads its own sections itself (specdraft.config.section).
"""

from __future__ import annotations

import importlib
from typing import Any

from specdraft.config import build, get, untraced
from specdraft.io import InputError

SECTIONS = {
    "runtime": "specdraft.config:RuntimeConfig",
    "data": "specdraft.data.sources:DataConfig",
    "prepare": "specdraft.data.prepare:PrepareConfig",
    "prompts": "specdraft.prompts:PromptsConfig",
    "teacher": "specdraft.teacher.core:TeacherConfig",
    "models": "specdraft.generate.models:ModelsConfig",
    "generation": "specdraft.generate.api:GenerationConfig",
    "train_target": "specdraft.train.settings:TrainConfig",
    "train_draft": "specdraft.train.settings:TrainConfig",
    "train_draft_kd": "specdraft.train.settings:KDSettings",
    "train_draft_eagle": "specdraft.train.eagle:EagleSettings",
    "distill": "specdraft.train.distill:DistillConfig",
    "eval": "specdraft.evaluate.run:EvalConfig",
    "claims": "specdraft.report.verdicts:ClaimsConfig",
}
# sections that are mappings of named entries, each checked by one class
ENTRIES = {
    "scenarios": "specdraft.data.prepare:ScenarioConfig",
}


def _cls(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def check_all(params: dict[str, Any]) -> None:
    """Build every section (raises InputError naming the dotted key and the valid range)."""
    with untraced():  # checking is not reading: dvc.yaml declares what a stage uses
        for key, path in SECTIONS.items():
            build(_cls(path), get(params, key), key)
        for key, path in ENTRIES.items():
            entries = get(params, key)
            if not isinstance(entries, dict) or not entries:
                raise InputError(f"params.yaml: {key}: expected a mapping of named entries, got {entries!r}")
            for name, value in entries.items():
                build(_cls(path), value, f"{key}.{name}")
        # an EAGLE head drafts k tokens with the steps it was trained to unroll: a step it
        # never trained for would draft from inputs it has never seen
        ttt, k = get(params, "train_draft_eagle.ttt_steps"), get(params, "generation.num_speculative_tokens")
        if ttt < k:
            raise InputError(f"params.yaml: train_draft_eagle.ttt_steps: {ttt} < generation.num_speculative_tokens "
                             f"{k}: the head would draft step {ttt + 1} untrained; set ttt_steps to at least {k}")
        # opt-in stages iterate over a list of scenario names: each must be one
        unknown = [s for s in get(params, "train_draft_kd.scenarios") or [] if s not in get(params, "scenarios")]
        if unknown:
            raise InputError(f"params.yaml: train_draft_kd.scenarios: {unknown} not in scenarios "
                             f"{sorted(get(params, 'scenarios'))}")
