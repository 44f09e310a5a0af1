"""Shared by the cot and cod stage entry points: config, paths, writing outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specdraft.config import get, load_params, section
from specdraft.io import write_json, write_jsonl
from specdraft.prompts import PromptsConfig
from specdraft.teacher.core import LengthLimit, TeacherConfig


@dataclass
class TeacherStage:
    scenario: str
    style: str
    teacher: TeacherConfig
    prompts: PromptsConfig
    limit: LengthLimit

    @classmethod
    def load(cls, scenario: str, style: str, tokenizer: Path) -> TeacherStage:
        """`tokenizer`: the target's tokenizer folder; answers must fit train_target.max_length."""
        from transformers import AutoTokenizer

        params = load_params()
        return cls(scenario, style, section(TeacherConfig, "teacher", params),
                   section(PromptsConfig, "prompts", params),
                   LengthLimit(AutoTokenizer.from_pretrained(tokenizer), int(get(params, "train_target.max_length"))))

    @property
    def state_dir(self) -> Path:
        # Outside DVC's outs (DVC deletes those before a stage runs): a killed batch
        # resumes from here.
        return Path(self.teacher.state_dir) / self.style / self.scenario

    def write(self, args: Any, accepted: list[dict[str, Any]], rejected: list[dict[str, Any]],
              metrics: dict[str, Any]) -> None:
        """To the paths the stage's command names (--out, --rejected, --metrics)."""
        write_jsonl(args.rejected, rejected)
        write_jsonl(args.out, accepted)
        write_json(args.metrics, metrics)


def add_output_args(p: Any) -> None:
    p.add_argument("--scenario", required=True)
    p.add_argument("--prepared", required=True, type=Path, help="input: the prepared training questions")
    p.add_argument("--tokenizer", required=True, type=Path, help="input: the target's tokenizer (training length)")
    p.add_argument("--out", required=True, type=Path, help="output: accepted answers (jsonl)")
    p.add_argument("--rejected", required=True, type=Path, help="output: rejected answers with the reason")
    p.add_argument("--metrics", required=True, type=Path, help="output: counts, cost, step statistics (json)")
