"""Stage cot@<scenario>: the teacher's chain of thought for every training question.

Reads data/prepared/<scenario>/train.jsonl; writes data/teacher/cot/<scenario>.jsonl
(accepted), data/teacher/cot/<scenario>.rejected.jsonl (with the reason) and
metrics/teacher/cot/<scenario>.json. Params read: teacher, prompts.system.cot,
prompts.fewshot.cot, train_target.max_length (answers that training would cut are rejected).
"""

from __future__ import annotations

import argparse
import logging

from specdraft.io import read_jsonl
from specdraft.stages._cli import run
from specdraft.stages._teacher import TeacherStage, add_output_args
from specdraft.teacher.pipeline import PREPARED_FIELDS, run_cot

log = logging.getLogger("cot")


def main(args: argparse.Namespace) -> None:
    st = TeacherStage.load(args.scenario, "cot", args.tokenizer)
    rows = read_jsonl(args.prepared, PREPARED_FIELDS)
    acc, rej, metrics = run_cot(rows, st.prompts, st.teacher, st.state_dir, st.limit)
    st.write(args, acc, rej, metrics)
    log.info("%s: %d/%d CoT accepted; rejected %s", args.scenario, len(acc), len(rows), metrics["rejected_by_reason"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_output_args(p)
    run(main, p)
