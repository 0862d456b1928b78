"""`make demo`: write a small random Qwen3 checkpoint, load it back, sample from it on CPU.

Steps (all real code paths, < 1 min on 2 CPU cores):
1. random params for the ``tiny-hd128`` preset (real Qwen3 vocabulary of 151,936 ids, head_dim 128,
   2 layers) → ``save_hf_checkpoint`` (sharded safetensors + config.json, transformers-loadable);
2. ``load_hf_checkpoint`` of that directory;
3. the real Qwen3 tokenizer + chat template renders a prompt; the jitted KV-cache sampler
   generates a continuation for a ragged batch (greedy and temperature sampling);
4. prints ids, decoded text (gibberish: the weights are random), per-token log-probs, a check that
   the sampler's log-probs equal a full forward pass's log-softmax, and timings.
"""
from __future__ import annotations

import pathlib
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from orchestra_jax.models import (forward, init_params, load_hf_checkpoint, presets,  # noqa: E402
                                  save_hf_checkpoint)
from orchestra_jax.models.sampling import generate  # noqa: E402


def main() -> None:
    t_start = time.perf_counter()
    config = presets["tiny-hd128"]
    try:
        from orchestra_jax.chat.tokenizer import load_tokenizer
        tok = load_tokenizer()
    except Exception as e:  # tokenizer unavailable: ids only
        print(f"(tokenizer unavailable: {e}; printing ids only)")
        tok = None
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        params = init_params(config, jax.random.key(0))
        files = save_hf_checkpoint(config, params, d, max_shard_bytes=32 * 2**20)
        print(f"wrote {config.num_params / 1e6:.1f} M-param checkpoint to {d}: "
              f"{sorted(p.name for p in pathlib.Path(d).iterdir())} "
              f"({time.perf_counter() - t0:.2f} s)")
        t0 = time.perf_counter()
        config, params = load_hf_checkpoint(d, compute_dtype="float32")
        print(f"loaded it back with load_hf_checkpoint ({time.perf_counter() - t0:.2f} s); "
              f"{len(files)} weight file(s)")

    stop = [config.eos_token_id]
    if tok is not None:
        msgs = [[{"role": "user", "content": "What is the capital of France?"}],
                [{"role": "user", "content": "Write a haiku about JAX."}],
                [{"role": "system", "content": "You are terse."},
                 {"role": "user", "content": "2+2?"}]]
        prompts = [tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"] for m in msgs]
    else:
        rs = np.random.RandomState(0)
        prompts = [list(map(int, rs.randint(0, 151643, n))) for n in (9, 23, 4)]
    print(f"prompt lengths: {[len(p) for p in prompts]}")

    for label, kw in (("greedy", dict(temperature=0.0)),
                      ("T=0.8 top_p=0.95", dict(temperature=0.8, top_p=0.95,
                                                rng=jax.random.key(1)))):
        t0 = time.perf_counter()
        out = generate(config, params, prompts, max_new_tokens=24, stop_token_ids=stop, **kw)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = generate(config, params, prompts, max_new_tokens=24, stop_token_ids=stop, **kw)
        again = time.perf_counter() - t0
        n_tok = sum(len(t) for t in out.tokens)
        print(f"\n[{label}] first call {first:.2f} s (includes compile), second call "
              f"{again:.3f} s = {n_tok / again:.0f} tok/s for {len(prompts)} prompts")
        for i, (ids, lps, why) in enumerate(zip(out.tokens, out.logprobs, out.finish_reasons)):
            text = tok.decode(ids) if tok is not None else ""
            print(f"  #{i} finish={why} ids={ids[:8]}... logprobs={[round(x, 2) for x in lps[:4]]}"
                  f"...\n      text={text[:70]!r}")
        # the sampler's log-probs must equal a full forward pass's log-softmax
        err = 0.0
        for p, ids, lps in zip(prompts, out.tokens, out.logprobs):
            logits = np.asarray(forward(config, params, np.array([p + ids], np.int32)))[0]
            logp = np.asarray(jax.nn.log_softmax(logits, -1))
            ref = [logp[len(p) - 1 + j, t] for j, t in enumerate(ids)]
            err = max(err, float(np.abs(np.array(ref) - np.array(lps)).max()))
        print(f"  max |sampler logprob - full-forward logprob| = {err:.2e}")
    print(f"\ndemo done in {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
