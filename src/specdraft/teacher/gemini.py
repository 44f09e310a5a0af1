"""Gemini teacher backends on the real google-genai client: Batch API and interactive.

Batch flow (file jobs): write a JSONL request file (one key per row), upload it, create
the batch job, poll with backoff until a terminal state, download the results file and
parse its lines by key (they come in any order). Lines with an error, or keys missing
from the output, are resubmitted in a follow-up batch, up to `max_resubmits` times.

Creating a job is billed and not idempotent, so every step is recorded in a state file
(outside DVC's outputs, which DVC deletes before a stage runs) before the next one:
the job's display name before `create`, the job name right after it, parsed results
after each download. Killed at any point, the stage resumes the same job on its next run;
if it died between `create` and recording the name, the job is found again by its
display name. The display name is derived from the model and the round's requests
alone (no random part), so a rerun without the state file (a `dvc exp run --temp` or
queued experiment whose workspace died) also finds the job it already paid for.

Temporary service errors (429, 5xx, dropped connections) are retried with exponential
backoff and jitter (`teacher.retry`): by the SDK's own retry options for every call but
`create`, by the same policy around downloads (the SDK streams those outside its retry),
and the poll loop keeps polling through errors until `poll.timeout_s`. A `create` is
billed and not idempotent: it is never retried blindly; after a failed or uncertain
create the job is looked up by its display name first.

The API key comes only from GEMINI_API_KEY or GOOGLE_API_KEY and is never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specdraft.io import atomic_open, read_json, write_json
from specdraft.prompts import to_gemini
from specdraft.teacher.core import RetryConfig, TeacherConfig, TeacherError, TeacherItem, TeacherResult

log = logging.getLogger("teacher.gemini")

TERMINAL_OK = "JOB_STATE_SUCCEEDED"
TERMINAL_BAD = ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")
API_KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


def api_key() -> str:
    for var in API_KEY_VARS:
        if os.environ.get(var):
            return os.environ[var]
    raise TeacherError("the Gemini teacher needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the "
                       "environment; keys are never read from params or files")


RETRY_STATUS = (408, 429, 500, 502, 503, 504)


def retry_options(r: RetryConfig) -> Any:
    from google.genai import types

    return types.HttpRetryOptions(attempts=r.attempts, initial_delay=r.initial_s, max_delay=r.max_s, exp_base=2,
                                  jitter=1, http_status_codes=list(RETRY_STATUS))


def make_client(cfg: TeacherConfig) -> Any:
    """The client, retrying temporary errors on every call (see the module docstring)."""
    from google import genai
    from google.genai import types

    # GOOGLE_GEMINI_BASE_URL, when set, points the client elsewhere (tests: a local server).
    return genai.Client(api_key=api_key(), http_options=types.HttpOptions(api_version=cfg.api_version,
                                                                          retry_options=retry_options(cfg.retry)))


def transient(e: BaseException) -> bool:
    """A temporary service error: worth trying again later."""
    import importlib

    from google.genai import errors

    if isinstance(e, errors.APIError):
        return e.code in RETRY_STATUS
    for http in ("httpx2", "httpx"):  # the SDK's HTTP client (httpx2 in google-genai 3.x)
        try:
            if isinstance(e, importlib.import_module(http).TransportError):
                return True
        except ImportError:
            continue
    return False


def with_retries(fn: Callable[[], Any], r: RetryConfig, sleep: Callable[[float], None] = time.sleep) -> Any:
    """`fn()` with the retry policy of `r`, for calls the SDK does not retry itself."""
    import tenacity

    return tenacity.Retrying(stop=tenacity.stop_after_attempt(r.attempts), reraise=True,
                             retry=tenacity.retry_if_exception(transient), sleep=sleep,
                             wait=tenacity.wait_exponential_jitter(initial=r.initial_s, max=r.max_s, jitter=1),
                             before_sleep=lambda s: log.warning("temporary error (%s); retrying", s.outcome.exception()),
                             )(fn)


def display_name(model: str, requests: dict[str, Any], rnd: int) -> str:
    """The job's name for round `rnd`: a hash of the model and the round's requests, so
    the same work always gets the same name (attempt suffix `-a<n>` added at create)."""
    digest = hashlib.sha256(json.dumps([model, requests], sort_keys=True).encode()).hexdigest()
    return f"specdraft-{digest[:16]}-r{rnd}"


def build_request(item: TeacherItem, cfg: TeacherConfig) -> dict[str, Any]:
    """A REST GenerateContentRequest (camelCase, as in batch request files)."""
    gen: dict[str, Any] = {"temperature": cfg.temperature, "maxOutputTokens": cfg.max_output_tokens}
    if cfg.thinking_budget >= 0:
        gen["thinkingConfig"] = {"thinkingBudget": cfg.thinking_budget}
    return {**to_gemini(item.messages), "generationConfig": gen}


def parse_response(resp: Any) -> TeacherResult:
    """A GenerateContentResponse (SDK object or REST dict) -> TeacherResult.

    Only the visible answer is kept: thought parts are not the reasoning to train on.
    """
    from google.genai import types

    if isinstance(resp, dict):
        resp = types.GenerateContentResponse.model_validate(resp)
    r = TeacherResult()
    um = resp.usage_metadata
    if um is not None:
        r.input_tokens = um.prompt_token_count or 0
        r.output_tokens = um.candidates_token_count or 0
        r.thoughts_tokens = um.thoughts_token_count or 0
    if resp.prompt_feedback is not None and resp.prompt_feedback.block_reason:
        r.block_reason = str(_enum(resp.prompt_feedback.block_reason))
    if not resp.candidates:
        return r
    cand = resp.candidates[0]
    r.finish_reason = _enum(cand.finish_reason) if cand.finish_reason else None
    parts = cand.content.parts if cand.content and cand.content.parts else []
    r.text = "".join(p.text for p in parts if p.text and not p.thought)
    return r


def _enum(v: Any) -> str:
    return v.value if hasattr(v, "value") else str(v)


def estimate_cost(items: list[TeacherItem], cfg: TeacherConfig, batch: bool = True) -> dict[str, float]:
    """Upper-bound cost before submitting: input ~ chars/4, output = the full token budget."""
    price = cfg.price()
    tokens_in = sum(sum(len(m["content"]) for m in it.messages) // 4 + 8 for it in items)
    tokens_out = len(items) * (cfg.max_output_tokens + max(cfg.thinking_budget, 0))
    usd = (tokens_in * price.input + tokens_out * price.output) / 1e6
    if batch:
        usd *= cfg.batch_discount
    return {"requests": len(items), "tokens_in_est": tokens_in, "tokens_out_max": tokens_out, "usd_max": usd}


def usage_cost(results: list[TeacherResult], cfg: TeacherConfig, batch: bool) -> float:
    price = cfg.price()
    usd = sum(r.input_tokens * price.input + (r.output_tokens + r.thoughts_tokens) * price.output
              for r in results) / 1e6
    return usd * (cfg.batch_discount if batch else 1.0)


def guard_cost(items: list[TeacherItem], cfg: TeacherConfig, batch: bool) -> dict[str, float]:
    est = estimate_cost(items, cfg, batch)
    log.info("cost estimate for %d requests: at most $%.2f (limit $%.2f)", len(items), est["usd_max"],
             cfg.max_cost_usd)
    if est["usd_max"] > cfg.max_cost_usd:
        raise TeacherError(f"estimated cost ${est['usd_max']:.2f} for {len(items)} requests exceeds "
                           f"teacher.max_cost_usd=${cfg.max_cost_usd:.2f}; nothing was submitted")
    return est


# ----------------------------------------------------------------------------- batch
class GeminiBatchBackend:
    """Batch API file jobs, resumable through a state file (see the module docstring)."""

    name = "gemini-batch"
    batch = True

    def __init__(self, cfg: TeacherConfig, state_dir: Path, sleep=time.sleep):
        self.cfg = cfg
        self.state_dir = Path(state_dir)
        self.state_path = self.state_dir / "state.json"
        self.sleep = sleep

    # state: {"fingerprint": str, "results": {key: result}, "rounds": [{...}]}
    def _load_state(self, fingerprint: str) -> dict[str, Any]:
        if self.state_path.exists():
            st = read_json(self.state_path)
            if st.get("fingerprint") == fingerprint:
                return st
            log.warning("requests changed since %s was written: starting a new batch", self.state_path)
        return {"fingerprint": fingerprint, "model": self.cfg.model, "results": {}, "rounds": []}

    def _save(self, st: dict[str, Any]) -> None:
        write_json(self.state_path, st)

    def generate(self, items: list[TeacherItem]) -> dict[str, TeacherResult]:
        api_key()  # fail before any work
        by_key = {it.key: it for it in items}
        requests = {k: build_request(it, self.cfg) for k, it in by_key.items()}
        fingerprint = hashlib.sha256(json.dumps([self.cfg.model, requests], sort_keys=True).encode()).hexdigest()
        st = self._load_state(fingerprint)
        client = make_client(self.cfg)
        for rnd in range(self.cfg.max_resubmits + 1):
            pending = [k for k in by_key if k not in st["results"]]
            if not pending:
                break
            if rnd < len(st["rounds"]) and st["rounds"][rnd].get("status") == "done":
                continue  # finished round whose failures are retried in the next one
            if rnd >= len(st["rounds"]) or st["rounds"][rnd].get("status") == "failed":
                guard_cost([by_key[k] for k in pending], self.cfg, batch=True)
                info = {"display_name": display_name(self.cfg.model, {k: requests[k] for k in pending}, rnd),
                        "keys": pending, "status": "creating"}
                if rnd >= len(st["rounds"]):
                    st["rounds"].append(info)
                else:
                    st["rounds"][rnd] = info
                self._save(st)
            round_ = st["rounds"][rnd]
            if not round_.get("job"):
                self._create(client, round_, requests, st)
            job = self._poll(client, round_["job"])
            state = _enum(job.state)
            if state in TERMINAL_BAD:
                round_["status"] = "failed"
                self._save(st)
                raise TeacherError(
                    f"batch job {round_['job']} ended {state}; {len(st['results'])} results from earlier "
                    f"rounds are kept in {self.state_path}; run the stage again to resubmit the "
                    f"{len(round_['keys'])} requests of this round")
            got = self._download(client, job)
            failed = 0
            for key in round_["keys"]:
                line = got.get(key)
                if line is None or "error" in line:
                    failed += 1
                    err = (line or {}).get("error") or {"message": "no line for this request in the results"}
                    st.setdefault("errors", {})[key] = f"{err.get('code', '')} {err.get('message', '')}".strip()
                    continue
                st["results"][key] = parse_response(line["response"]).to_json()
            round_["status"] = "done"
            round_["failed"] = failed
            self._save(st)
            log.info("round %d: %d results, %d to resubmit", rnd, len(round_["keys"]) - failed, failed)
        out = {k: TeacherResult(**v) for k, v in st["results"].items() if k in by_key}
        for k in by_key:
            if k not in out:
                last = st.get("errors", {}).get(k, "unknown")
                out[k] = TeacherResult(error=f"no result after {self.cfg.max_resubmits} resubmissions; last: {last}")
        return out

    def _find(self, client: Any, base: str) -> tuple[Any | None, int]:
        """A live or succeeded job named `base`-a<n>, and how many such jobs failed."""
        found, failed = None, 0
        for job in client.batches.list(config={"page_size": 100}):
            if (job.display_name or "").rsplit("-a", 1)[0] != base:
                continue
            if _enum(job.state) in TERMINAL_BAD:
                failed += 1
            elif found is None:
                found = job
        return found, failed

    def _create(self, client: Any, round_: dict[str, Any], requests: dict[str, Any], st: dict[str, Any]) -> None:
        from google.genai import types

        # Status "creating" after a crash, or no state file at all (another workspace): the
        # job may exist already. Find it by its display name instead of paying twice.
        base = round_["display_name"]
        job, failed = self._find(client, base)
        if job is not None:
            round_["job"] = job.name
            round_["status"] = "running"
            self._save(st)
            log.info("resumed batch job %s found by display name %s", job.name, job.display_name)
            return
        name = f"{base}-a{failed}"  # a new attempt after `failed` failed or expired jobs
        req_file = self.state_dir / f"requests-{round_['display_name']}.jsonl"
        with atomic_open(req_file) as fh:
            for k in round_["keys"]:
                fh.write(json.dumps({"key": k, "request": requests[k]}, ensure_ascii=False) + "\n")
        uploaded = client.files.upload(file=str(req_file), config=types.UploadFileConfig(
            display_name=name, mime_type="jsonl"))
        try:
            job = client.batches.create(model=self.cfg.model, src=uploaded.name, config=types.CreateBatchJobConfig(
                display_name=name, http_options=types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))))
        except Exception as e:
            # The job may have been created before the error reached us: look first.
            job, _ = self._find(client, base)
            if job is None:
                raise TeacherError(f"creating batch job {name} failed ({e}); no job of that name exists, so "
                                   "nothing was billed: run the stage again") from e
            log.warning("create reported %s, but job %s exists: using it", e, job.name)
        round_["job"] = job.name
        round_["status"] = "running"
        self._save(st)
        log.info("created batch job %s with %d requests", job.name, len(round_["keys"]))

    def _poll(self, client: Any, name: str) -> Any:
        delay, start = self.cfg.poll.initial_s, time.monotonic()
        while True:
            try:
                job = client.batches.get(name=name)
            except Exception as e:  # the SDK has retried already; keep polling until the timeout
                if not transient(e) or time.monotonic() - start > self.cfg.poll.timeout_s:
                    raise
                log.warning("polling batch job %s: %s; next check in %.0fs", name, e, delay)
                self.sleep(delay)
                delay = min(self.cfg.poll.max_s, delay * self.cfg.poll.multiplier)
                continue
            state = _enum(job.state)
            if state == TERMINAL_OK or state in TERMINAL_BAD:
                return job
            if time.monotonic() - start > self.cfg.poll.timeout_s:
                raise TeacherError(f"batch job {name} still {state} after {self.cfg.poll.timeout_s:.0f}s; "
                                   f"run the stage again to keep waiting for the same job")
            log.info("batch job %s: %s; next check in %.0fs", name, state, delay)
            self.sleep(delay)
            delay = min(self.cfg.poll.max_s, delay * self.cfg.poll.multiplier)

    def _download(self, client: Any, job: Any) -> dict[str, dict[str, Any]]:
        if job.dest is None or not job.dest.file_name:
            raise TeacherError(f"batch job {job.name} succeeded without a results file")
        data = with_retries(lambda: client.files.download(file=job.dest.file_name), self.cfg.retry, self.sleep)
        out: dict[str, dict[str, Any]] = {}
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TeacherError(f"results file {job.dest.file_name}:{lineno}: malformed JSON ({e.msg})") from None
            if "key" not in obj:
                raise TeacherError(f"results file {job.dest.file_name}:{lineno}: missing field 'key'")
            out[str(obj["key"])] = obj
        return out


# ----------------------------------------------------------------------- interactive
class GeminiInteractiveBackend:
    """One request at a time, with the client's retries: quick trials, same parsing."""

    name = "gemini"
    batch = False

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg

    def generate(self, items: list[TeacherItem]) -> dict[str, TeacherResult]:
        from google.genai import errors, types
        from tqdm import tqdm

        guard_cost(items, self.cfg, batch=False)
        client = make_client(self.cfg)
        out: dict[str, TeacherResult] = {}
        for it in tqdm(items, desc="gemini", unit="req"):
            req = to_gemini(it.messages)
            config = types.GenerateContentConfig(
                system_instruction=req.get("systemInstruction", {}).get("parts", [{}])[0].get("text"),
                temperature=self.cfg.temperature, max_output_tokens=self.cfg.max_output_tokens,
                thinking_config=types.ThinkingConfig(thinking_budget=self.cfg.thinking_budget)
                if self.cfg.thinking_budget >= 0 else None)
            try:  # temporary errors are retried by the client (teacher.retry), as for every call
                resp = client.models.generate_content(model=self.cfg.model, contents=req["contents"], config=config)
                out[it.key] = parse_response(resp)
            except errors.APIError as e:
                out[it.key] = TeacherResult(error=f"{e.code}: {e.message}")
        return out
