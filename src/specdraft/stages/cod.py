"""Stage cod@<scenario>: the teacher's chain of draft, summarising each accepted CoT.

Reads data/teacher/cot/<scenario>.jsonl and the prepared rows; writes
data/teacher/cod/<scenario>.jsonl, its .rejected.jsonl and metrics/teacher/cod/<scenario>.json.
Params read: teacher, prompts.summarize, prompts.system.cod,
train_target.max_length (answers that training would cut are rejected). Training uses only the questions accepted in
both passes (specdraft.teacher.core.training_rows).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.io import read_jsonl
from specdraft.stages._cli import run
from specdraft.stages._teacher import TeacherStage, add_output_args
from specdraft.teacher.core import TEACHER_FIELDS
from specdraft.teacher.pipeline import PREPARED_FIELDS, run_cod

log = logging.getLogger("cod")


def main(args: argparse.Namespace) -> None:
    st = TeacherStage.load(args.scenario, "cod", args.tokenizer)
    prepared = {r["id"]: r for r in read_jsonl(args.prepared, PREPARED_FIELDS)}
    cot = read_jsonl(args.cot, TEACHER_FIELDS)
    acc, rej, metrics = run_cod(cot, prepared, st.prompts, st.teacher, st.state_dir, st.limit)
    st.write(args, acc, rej, metrics)
    log.info("%s: %d/%d CoD accepted; words/step median %.1f", args.scenario, len(acc), len(cot),
             metrics["words_per_step_median"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_output_args(p)
    p.add_argument("--cot", required=True, type=Path, help="input: the accepted CoT answers")
    run(main, p)
