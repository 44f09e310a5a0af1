"""The one source of prompts: teacher generation, training and evaluation all use it.

Why one module: the public implementation of this design trained and evaluated with a
different CoT system prompt than the one that generated its data. Here the text lives in
params.yaml (section `prompts`, tracked by DVC, so editing it re-runs exactly the stages
that declare it), and every stage builds its messages through the functions below. A
test checks that the training prompt and the evaluation prompt are byte-identical.

Default wording: Xu et al. 2025, "Chain of Draft" (arXiv 2502.18600), system prompts for
CoT and CoD; both end the answer with '#### <answer>'.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from specdraft.config import setting

STYLES = ("cot", "cod")


@dataclasses.dataclass(frozen=True)
class FewShot:
    question: str
    answer: str


@dataclasses.dataclass(frozen=True)
class PromptsConfig:
    """Prompt text by style. `summarize` turns a CoT into a CoD (teacher's second pass)."""

    system: dict[str, str] = setting(keys=STYLES)
    summarize: str = setting()
    fewshot: dict[str, list[FewShot]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # fewshot entries arrive as dicts from params; normalise to FewShot
        fs = {k: [x if isinstance(x, FewShot) else FewShot(**x) for x in v] for k, v in self.fewshot.items()}
        object.__setattr__(self, "fewshot", fs)


def check_style(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid: {list(STYLES)}")
    return style


def messages(p: PromptsConfig, style: str, question: str) -> list[dict[str, str]]:
    """Chat messages for answering `question` in `style` (system, few-shot turns, user).

    The same list is given to the teacher, to the chat template at training time (as
    the prompt, the teacher's answer being the completion) and at evaluation time.
    """
    check_style(style)
    out = [{"role": "system", "content": p.system[style]}]
    for ex in p.fewshot.get(style, []):
        out += [{"role": "user", "content": ex.question}, {"role": "assistant", "content": ex.answer}]
    out.append({"role": "user", "content": question.strip()})
    return out


def summarize_messages(p: PromptsConfig, question: str, cot: str) -> list[dict[str, str]]:
    """Messages for the teacher's second pass: rewrite a verified CoT as a CoD."""
    return [{"role": "system", "content": p.summarize},
            {"role": "user", "content": f"Question:\n{question.strip()}\n\nChain of thought:\n{cot.strip()}"}]


def to_gemini(msgs: list[dict[str, str]]) -> dict[str, Any]:
    """Chat messages -> the REST GenerateContentRequest fields (systemInstruction, contents)."""
    system = "\n\n".join(m["content"] for m in msgs if m["role"] == "system")
    contents = [{"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
                for m in msgs if m["role"] != "system"]
    req: dict[str, Any] = {"contents": contents}
    if system:
        req["systemInstruction"] = {"parts": [{"text": system}]}
    return req


# Template arguments of every rendering, at training and at inference: thinking off
# (Qwen3's template honours it; templates without it, such as SmolLM2's and Qwen2.5's,
# ignore it).
CHAT_KWARGS = {"enable_thinking": False}


def render(tokenizer: Any, msgs: list[dict[str, str]]) -> str:
    """The prompt text: the model's chat template with the generation prompt."""
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **CHAT_KWARGS)


def completion_example(msgs: list[dict[str, str]], completion: str) -> dict[str, Any]:
    """A prompt/completion training example (TRL's conversational format) for `msgs`."""
    return {"prompt": msgs, "completion": [{"role": "assistant", "content": completion}],
            "chat_template_kwargs": dict(CHAT_KWARGS)}


def training_length(tokenizer: Any, msgs: list[dict[str, str]], completion: str) -> int:
    """Tokens of the training sequence of this example, counted as TRL's SFTTrainer counts
    them before truncating to max_length: the chat template over prompt + completion."""
    ex = completion_example(msgs, completion)
    ids = tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True, **ex["chat_template_kwargs"])
    return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
