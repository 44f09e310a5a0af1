"""GPU-only: the hf engine on cuda (`pytest -m gpu`, run by `make gpu-check`; skipped without a GPU).

On tiny random-weight models with the real tokenizer (conftest.tiny_models): speculative
decoding on the GPU must give the plain greedy output, with consistent counts, as it does
on the CPU (tests/test_cpu_fast.py).
"""

from __future__ import annotations

import pytest
import torch

from specdraft.generate.api import GenerationConfig
from specdraft.generate.hf_engine import HFEngine
from specdraft.prompts import messages

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]


def test_speculative_equals_plain_on_cuda(tiny_models, local_prompts):
    gen = GenerationConfig(max_new_tokens=24, num_speculative_tokens=3)
    with HFEngine(tiny_models / "target", {"d": tiny_models / "draft"}, gen, device="cuda") as eng:
        assert eng.model.device.type == "cuda"
        p, qs = local_prompts
        prompts = [eng.render(messages(p, "cot", q)) for q in qs[:4]]
        plain = [eng.generate_one(x) for x in prompts]
        spec = [eng.generate_one(x, "d") for x in prompts]
        assert [s.token_ids for s in spec] == [x.token_ids for x in plain]
        for s in spec:
            # every round yields its accepted draft tokens plus one target token
            assert s.output_tokens == s.accepted + s.rounds
            assert 0 <= s.accepted <= s.proposed <= 3 * s.rounds
            assert sum(j * n for j, n in enumerate(s.accepted_hist)) == s.accepted
