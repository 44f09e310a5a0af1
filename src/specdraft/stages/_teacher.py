"""Shared by the cot and cod stage entry points: config, paths, writing outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specdraft.config import load_params, section
from specdraft.io import write_json, write_jsonl
from specdraft.prompts import PromptsConfig
from specdraft.teacher.gemini import TeacherConfig


@dataclass
class TeacherStage:
    scenario: str
    style: str
    teacher: TeacherConfig
    prompts: PromptsConfig

    @classmethod
    def load(cls, scenario: str, style: str) -> TeacherStage:
        params = load_params()
        return cls(scenario, style, section(TeacherConfig, "teacher", params),
                   section(PromptsConfig, "prompts", params))

    @property
    def state_dir(self) -> Path:
        # Outside DVC's outs (DVC deletes those before a stage runs): a killed batch
        # resumes from here.
        return Path(self.teacher.state_dir) / self.style / self.scenario

    def write(self, accepted: list[dict[str, Any]], rejected: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
        base = Path("data/teacher") / self.style
        write_jsonl(base / f"{self.scenario}.rejected.jsonl", rejected)
        write_jsonl(base / f"{self.scenario}.jsonl", accepted)
        write_json(Path("metrics/teacher") / self.style / f"{self.scenario}.json", metrics)
