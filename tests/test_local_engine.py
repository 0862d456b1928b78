"""LocalJaxEngine: Engine protocol, request batching, context limits, weight sync."""
import asyncio

import jax
import numpy as np
import pytest

from orchestra_jax.models import init_params, presets
from orchestra_jax.models.sampling import generate
from orchestra_jax.rollout.engine import Engine, EngineError, SamplingParams
from orchestra_jax.rollout.local_engine import LocalJaxEngine

CFG = presets["tiny"].replace(max_position_embeddings=64)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def test_engine_protocol_and_concurrent_batching(params):
    eng = LocalJaxEngine(CFG, params)
    assert isinstance(eng, Engine)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]

    async def main():
        # three episodes asking at once, plus one with different sampling settings
        outs = await asyncio.gather(*[eng.generate([p], greedy) for p in prompts],
                                    eng.generate([[1, 2]], SamplingParams(max_new_tokens=3)))
        return outs

    outs = asyncio.run(main())
    ref = generate(CFG, params, prompts, max_new_tokens=8, temperature=0.0)
    for (o,), toks, lps in zip(outs[:3], ref.tokens, ref.logprobs):
        assert o.token_ids == toks and np.allclose(o.logprobs, lps, atol=1e-5)
        assert o.finish_reason == "length" and o.error is None
    assert outs[0][0].prompt_tokens == 3 and len(outs[3][0].token_ids) == 3
    assert eng._calls == 2  # the three greedy requests were merged into one batch


def test_context_limit_and_bad_prompts(params):
    eng = LocalJaxEngine(CFG, params, max_context=16)
    outs = eng.generate_sync([[1] * 12, [1] * 16, [], [CFG.vocab_size + 5]],
                             SamplingParams(max_new_tokens=10, temperature=0.0))
    assert len(outs[0].token_ids) == 4 and outs[0].finish_reason == "length"
    assert [o.finish_reason for o in outs[1:]] == ["error"] * 3
    assert "max_context" in outs[1].error and "empty" in outs[2].error
    assert "outside" in outs[3].error


def test_update_params_and_seeded_sampling(params):
    eng = LocalJaxEngine(CFG, params)
    sp = SamplingParams(max_new_tokens=6, temperature=1.0, seed=11)
    a = eng.generate_sync([[3, 4, 5]], sp)[0]
    assert eng.generate_sync([[3, 4, 5]], sp)[0].token_ids == a.token_ids
    new = init_params(CFG, jax.random.key(1))
    eng.update_params(new)
    assert eng.version == 1 and eng.params is new
    b = eng.generate_sync([[3, 4, 5]], SamplingParams(max_new_tokens=6, temperature=0.0))[0]
    assert b.token_ids == generate(CFG, new, [[3, 4, 5]], max_new_tokens=6,
                                   temperature=0.0).tokens[0]
    with pytest.raises(EngineError, match="structure"):
        eng.update_params({"embed": new["embed"]})
    bad = jax.tree.map(lambda x: x, new)
    bad["embed"] = bad["embed"][:10]
    with pytest.raises(EngineError, match="shape"):
        eng.update_params(bad)
