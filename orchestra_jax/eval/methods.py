"""Methods under evaluation: the policy (engine + tokenizer), its tools' models, the user
simulator and the judge.

Policy sources (``policy``):
* a Hugging Face checkpoint directory (``config.json`` + safetensors; e.g. Qwen3-8B, or a
  trained orchestrator exported by training);
* a training ``--workdir``: the newest sub-directory holding ``config.json`` + ``*.safetensors``
  (training's HF exports) is used;
* ``preset:<name>`` — a random model of a preset (``preset:tiny-hd128``): plumbing demos only.
Engines: ``local`` (in-process JAX sampler) or ``sglang`` (SGLang servers at ``sglang_urls``
serving that checkpoint; ``policy`` then only names the tokenizer's checkpoint).

Local chat models (experts / user simulator / judge served in-process) are
:class:`~orchestra_jax.rollout.local_expert.LocalChatModel` over a local engine: ``"policy"`` is the
evaluated model itself (the release's basic-tools ablation maps every alias to it), a checkpoint
path loads another local model; a name listed in ``expert_specs`` (``{model: ExpertConfig
fields}``) is any OpenAI-compatible endpoint.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Optional

from orchestra_jax.chat.tokenizer import load_tokenizer
from orchestra_jax.rollout.local_expert import LocalChatModel
from orchestra_jax.tools.llm_client import build_expert_clients


class MethodError(ValueError):
    """A method / model source that cannot be built (bad path, missing spec …)."""


def _is_hf_dir(p: pathlib.Path) -> bool:
    return (p / "config.json").is_file() and any(p.glob("*.safetensors"))


def resolve_checkpoint(path: str) -> pathlib.Path:
    """An HF checkpoint directory, or the newest HF export inside a training workdir."""
    p = pathlib.Path(path).expanduser()
    if not p.is_dir():
        raise MethodError(f"policy checkpoint {p} does not exist (give a Hugging Face checkpoint "
                          f"directory, a training --workdir, or preset:<name>)")
    if _is_hf_dir(p):
        return p
    cands = [d for d in p.rglob("*") if d.is_dir() and _is_hf_dir(d)]
    if not cands:
        raise MethodError(f"{p} holds no Hugging Face checkpoint (config.json + *.safetensors) "
                          f"at any depth; pass the exported checkpoint directory")
    return max(cands, key=lambda d: max(f.stat().st_mtime for f in d.glob("*.safetensors")))


def _tokenizer_for(ckpt: Optional[pathlib.Path]):
    if ckpt is not None and any((ckpt / f).is_file() for f in ("tokenizer.json",
                                                               "tokenizer_config.json")):
        return load_tokenizer(ckpt)
    return load_tokenizer()


class LocalModel:
    """A model served in-process: (config, params, engine, tokenizer), built lazily once."""

    def __init__(self, source: str, *, max_context: int, seed: int = 0):
        self.source, self.max_context, self.seed = source, int(max_context), int(seed)
        self._built = None

    def build(self):
        if self._built is None:
            import jax
            from orchestra_jax.models import init_params, load_hf_checkpoint, presets
            from orchestra_jax.rollout.local_engine import LocalJaxEngine
            if self.source.startswith("preset:"):
                name = self.source.split(":", 1)[1]
                if name not in presets:
                    raise MethodError(f"unknown preset {name!r}; presets: {sorted(presets)}")
                cfg, ckpt = presets[name], None
                params = init_params(cfg, jax.random.key(self.seed))
            else:
                ckpt = resolve_checkpoint(self.source)
                cfg, params = load_hf_checkpoint(ckpt)
            engine = LocalJaxEngine(cfg, params, max_context=self.max_context, seed=self.seed)
            self._built = (cfg, params, engine, _tokenizer_for(ckpt), ckpt)
        return self._built

    @property
    def engine(self):
        return self.build()[2]

    @property
    def tokenizer(self):
        return self.build()[3]

    @property
    def checkpoint(self) -> Optional[pathlib.Path]:
        return self.build()[4]

    def chat_model(self, name: str, *, max_new_tokens: Optional[int], seed: Optional[int] = None,
                   **kw) -> LocalChatModel:
        return LocalChatModel(self.engine, self.tokenizer, model=name,
                              max_new_tokens_cap=max_new_tokens, max_context=self.max_context,
                              seed=seed, **kw)


def build_policy_engine(spec: Any, local: Optional[LocalModel]):
    """(engine, tokenizer, description) of the evaluated policy."""
    if spec.engine == "local":
        return local.engine, local.tokenizer, f"local:{local.checkpoint or spec.policy}"
    if spec.engine == "sglang":
        from orchestra_jax.rollout.sglang_client import SGLangEngine
        urls = [u for u in spec.sglang_urls.split(",") if u.strip()]
        if not urls:
            raise MethodError("engine 'sglang' needs sglang_urls (comma-separated server URLs)")
        ckpt = None if spec.policy.startswith("preset:") or not spec.policy else \
            resolve_checkpoint(spec.policy)
        return SGLangEngine(urls, max_context=spec.max_context), _tokenizer_for(ckpt), \
            f"sglang:{','.join(urls)}"
    raise MethodError(f"unknown engine {spec.engine!r} (local | sglang)")


class ModelPool:
    """Resolves model references to ChatModels, sharing local engines between roles."""

    def __init__(self, spec: Any, policy_local: Optional[LocalModel], prices: Any):
        self.spec = spec
        self.policy_local = policy_local
        self.prices = prices
        self._locals: dict[str, LocalModel] = {}
        self.specs: dict = {}
        if spec.expert_specs:
            p = pathlib.Path(spec.expert_specs)
            if not p.is_file():
                raise MethodError(f"expert_specs file not found: {p}")
            try:
                self.specs = json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise MethodError(f"{p}: invalid JSON: {e.msg}") from None
        self._clients = build_expert_clients(self.specs, prices=prices) if self.specs else {}

    def _local(self, ref: str) -> LocalModel:
        if ref == "policy":
            if self.policy_local is None:
                raise MethodError("'policy' as a local chat model needs engine 'local'")
            return self.policy_local
        if ref not in self._locals:
            self._locals[ref] = LocalModel(ref, max_context=self.spec.max_context,
                                           seed=self.spec.seed)
        return self._locals[ref]

    def chat(self, ref: str, *, name: str, max_new_tokens: Optional[int], seed: Optional[int] = None,
             **kw):
        """``ref``: a name in expert_specs (remote), ``"policy"``, a checkpoint path or preset."""
        if ref in self._clients:
            return self._clients[ref]
        return self._local(ref).chat_model(name, max_new_tokens=max_new_tokens, seed=seed, **kw)

    def experts_for(self, models: list[str], *, default_ref: str = "policy") -> dict:
        """concrete model name -> ChatModel: its endpoint when listed in expert_specs, else the
        local ``default_ref`` model answering under that name (priced as that model)."""
        out = {}
        for m in models:
            out[m] = self._clients.get(m) or self.chat(
                default_ref, name=m, max_new_tokens=self.spec.local_expert_max_new_tokens,
                seed=self.spec.seed)
        return out
