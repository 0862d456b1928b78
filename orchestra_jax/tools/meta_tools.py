"""The paper's meta-tools (paper_spec §2.5, §7.6) and the QA toolkit that executes them.

* ``search(model)``: the chosen expert writes ``<query>…</query>`` from the context; if it fails or
  the query is shorter than 5 characters the raw problem is the query; the query is cut to 390
  characters and sent to the retriever (local FAISS index or Tavily web search).
* ``enhance_reasoning(model)``: the expert writes Python in a ```python block; the last block runs
  in the sandbox (:mod:`orchestra_jax.tools.sandbox`) and its output is returned.
* ``answer(model)``: the expert answers; ``\\boxed{}`` (Qwen/math/Phi prompts) or ``<answer>``
  (GPT/Llama/Claude prompts) is extracted; the call ends the episode.
* ``call_expert(expert)``: schema only here; function-calling environments (envs/tau2) execute it.

Optional release rules (``QAToolkitConfig``): ``answer_requires_documents`` refuses ``answer``
until a document is retrieved; ``search_once`` (FRAMES eval) refuses ``search`` once one is.

:class:`QAToolkit` bundles registry + alias mapping + expert clients + index/web + prices and runs a
parsed call against a :class:`QAState`. Every :class:`ToolResult` carries ``cost_usd`` (expert
tokens at the sheet's prices + search + sandbox seconds) and the wall-clock ``latency_s`` of the call
[C], in which each expert call counts the latency its client reports: the same wall-clock time for
an API client, the first call's recorded time for a response-cache hit (``tools/llm_cache.py``),
the engine's own time for an in-process model with ``latency="engine"`` [ours].
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from orchestra_jax.tools.aliases import (ModelDescriptions, ModelMapping, TOOL_ROLES,
                                         alias_parameter_description)
from orchestra_jax.tools.expert_prompts import (  # noqa: F401  (some re-exported)
    ANSWER_PROMPT_BOXED, ANSWER_PROMPT_TAGS, MAX_QUERY_CHARS, REASONER_PROMPT, SEARCH_PROMPT,
    answer_style, extract_answer, extract_python, extract_query)
from orchestra_jax.tools.llm_client import ChatModel, ExpertError
from orchestra_jax.tools.pricing import PriceSheet
from orchestra_jax.tools.registry import Tool, ToolRegistry, ToolResult, add_usage
from orchestra_jax.tools.retrieval import Document, LocalSearchIndex


# Per tool call: [wall seconds spent awaiting experts, latency the experts reported].
_EXPERT_CLOCK: contextvars.ContextVar = contextvars.ContextVar("expert_clock", default=None)

# Tool-level descriptions, verbatim from the release's tools.json (typos included).
TOOL_DESCRIPTIONS = {
    "search": "Search for missing information",
    "enhance_reasoning": ("tool to enhance answer model reasoning. analyze the problem, write "
                          "code, execute it and return intermidiate results that will help solve "
                          "the problem"),
    "answer": "give the final answer. Not allowed to call if documents is empty.",
    "call_expert": ("Hand the current turn to an expert agent: the expert sees the whole "
                    "conversation and the domain tools, and its message or tool call is taken as "
                    "your action. Call it when you are not confident; choose the expert by the "
                    "task difficulty and the cost."),
}
TOOL_CATEGORIES = {"search": "basic", "enhance_reasoning": "specialist", "answer": "generalist",
                   "call_expert": "generalist"}
ARG_NAME = {"search": "model", "enhance_reasoning": "model", "answer": "model",
            "call_expert": "expert"}

# ---------------------------------------------------------------------------- state

@dataclasses.dataclass
class QAState:
    """What a QA episode has gathered so far (the release rebuilt its prompt from this)."""

    problem: str
    documents: list[Document] = dataclasses.field(default_factory=list)
    code_snippets: list[dict] = dataclasses.field(default_factory=list)  # {"code", "output"}
    attempts: list[dict] = dataclasses.field(default_factory=list)       # {"alias", "model", "answer"}
    answer: Optional[str] = None
    done: bool = False

    def add_documents(self, docs: Sequence[Document]) -> list[Document]:
        """Adds documents not already present (by id); returns the new ones."""
        have = {d.id for d in self.documents}
        new = [d for d in docs if d.id not in have]
        self.documents.extend(new)
        return new

    def render_context(self, doc_chars: int = 1200, max_chars: Optional[int] = None) -> str:
        """``Documents:``/code/attempts blocks; keeps the tail when over ``max_chars``."""
        parts = []
        if self.documents:
            parts.append("Documents:\n" + "\n".join(
                f"Doc {i}: {d.render(doc_chars)}" for i, d in enumerate(self.documents, 1)))
        for s in self.code_snippets:
            parts.append(f"```python\n{s['code']}\n```\n```output\n{s['output']}\n```")
        for i, a in enumerate(self.attempts, 1):
            parts.append(f"Attempt{i} answer by {a['alias']}: {a['answer']}")
        text = "\n\n".join(parts)
        if max_chars is not None and len(text) > max_chars:
            text = text[-max_chars:]
        return text


# ---------------------------------------------------------------------------- schemas

def meta_tool(name: str, mapping: ModelMapping, prices: PriceSheet,
              descriptions: ModelDescriptions) -> Tool:
    """The ``Tool`` for a meta-tool, its enum/description built from the episode's mapping."""
    if name not in TOOL_ROLES:
        raise KeyError(f"unknown meta-tool {name!r}; meta-tools: {list(TOOL_ROLES)}")
    text, aliases = alias_parameter_description(name, mapping, prices, descriptions)
    arg = ARG_NAME[name]
    params = {"properties": {arg: {"description": text, "type": "string", "enum": aliases}},
              "required": [arg], "title": "parameters", "type": "object"}
    return Tool(name=name, description=TOOL_DESCRIPTIONS[name], parameters=params,
                category=TOOL_CATEGORIES[name])


def call_expert_tool(mapping: ModelMapping, prices: PriceSheet,
                     descriptions: Optional[ModelDescriptions] = None) -> Tool:
    """``call_expert(expert ∈ mapped expert-*)`` for function-calling tasks (execution in envs)."""
    return meta_tool("call_expert", mapping, prices, descriptions or ModelDescriptions.load())


# ---------------------------------------------------------------------------- toolkit

@dataclasses.dataclass
class QAToolkitConfig:
    """Knobs of the QA meta-tools (units in names; chars are Python characters).

    search_backend: ``local`` (FAISS index), ``web`` (Tavily) or ``local_then_web`` (web when
    fewer than ``min_local_docs`` local hits score at least ``min_local_score``).
    """

    tools: tuple[str, ...] = ("search", "enhance_reasoning", "answer")
    search_backend: str = "local"
    top_k_docs: int = 5
    min_local_docs: int = 3
    min_local_score: float = 0.1
    doc_chars: int = 1200
    expert_context_chars: int = 48_000
    search_max_tokens: int = 512
    reasoner_max_tokens: int = 4096
    answer_max_tokens: int = 4096
    expert_temperature: float = 0.0
    sandbox_timeout_s: float = 60.0
    sandbox_memory_mb: int = 1024
    max_observation_chars: int = 6000
    allow_unisolated_sandbox: bool = False
    # Release rules, off by default. answer_requires_documents: ``answer`` before any document
    # was retrieved is refused (tools.json: "Not allowed to call if documents is empty").
    # search_once: FRAMES eval (official_release §2.3) drops ``search`` from the offered tools
    # once a document is retrieved; the transcript is append-only (the system prompt's tool list
    # cannot change), so the observation that first adds documents says search is gone and later
    # ``search`` calls are refused. Refused calls are error observations (no expert call, $0;
    # the turn's format stays ok).
    answer_requires_documents: bool = False
    search_once: bool = False

    def __post_init__(self):
        if self.search_backend not in ("local", "web", "local_then_web"):
            raise ValueError(f"search_backend must be local | web | local_then_web, "
                             f"got {self.search_backend!r}")
        bad = [t for t in self.tools if t not in ("search", "enhance_reasoning", "answer")]
        if bad:
            raise ValueError(f"unknown QA meta-tools {bad}")
        if self.answer_requires_documents and not {"search", "answer"} <= set(self.tools):
            raise ValueError("answer_requires_documents needs both 'search' and 'answer' in tools "
                             "(otherwise answer could never be called)")


class QAToolkit:
    """Executes ``search`` / ``enhance_reasoning`` / ``answer`` calls against a :class:`QAState`.

    Args:
      mapping: alias -> concrete model for this episode.
      experts: concrete model name -> :class:`ChatModel` (e.g. ``build_expert_clients(...)``).
      prices: price sheet used for expert tokens, search and sandbox seconds.
      index: local search index (needed for ``local``/``local_then_web`` search).
      web: a :class:`~orchestra_jax.tools.web_search.TavilyClient` (needed for web search).
      descriptions: alias descriptions (default ``configs/model_descriptions.json``).
      count_tokens: tokenizer for pricing local-search queries (default: the index's embedder).
    """

    def __init__(self, *, mapping: ModelMapping, experts: Mapping[str, ChatModel],
                 prices: PriceSheet, index: Optional[LocalSearchIndex] = None, web: Any = None,
                 descriptions: Optional[ModelDescriptions] = None,
                 config: Optional[QAToolkitConfig] = None,
                 count_tokens: Optional[Callable[[str], int]] = None):
        self.mapping = mapping
        self.experts = experts
        self.prices = prices
        self.index = index
        self.web = web
        self.config = config or QAToolkitConfig()
        self.descriptions = descriptions or ModelDescriptions.load()
        self.count_tokens = count_tokens
        if self.config.search_backend != "web" and "search" in self.config.tools and index is None:
            raise ValueError("search_backend uses the local index but no index was given")
        if self.config.search_backend != "local" and "search" in self.config.tools and web is None:
            raise ValueError("search_backend uses web search but no web client was given")
        self.registry = ToolRegistry(meta_tool(t, mapping, prices, self.descriptions)
                                     for t in self.config.tools)

    # ---- what the policy sees --------------------------------------------------------------
    @property
    def tool_names(self) -> list[str]:
        """Order of the tool-count vector: every offered alias, tool by tool."""
        out = []
        for t in self.registry.names():
            out.extend(self.registry.get(t).parameters["properties"][ARG_NAME[t]]["enum"])
        return out

    def openai_tools(self, *, include_enum: bool = True) -> list[dict]:
        return self.registry.to_openai_tools(include_enum=include_enum)

    def count_key(self, call: Mapping[str, Any]) -> Optional[str]:
        """The ``tool_names`` entry a valid call counts toward (its alias), else None."""
        try:
            alias = call["arguments"][ARG_NAME[call["name"]]]
        except (KeyError, TypeError):
            return None
        return alias if alias in self.tool_names else None

    # ---- execution -------------------------------------------------------------------------
    async def execute(self, call: Mapping[str, Any], state: QAState) -> ToolResult:
        """Runs one parsed call; never raises. Updates ``state`` (documents, code, answer)."""
        t0 = time.perf_counter()
        errors = self.registry.validate_call(dict(call) if isinstance(call, Mapping) else call)
        if errors:
            return ToolResult.failure("; ".join(errors), latency_s=time.perf_counter() - t0)
        name = call["name"]
        alias = call["arguments"][ARG_NAME[name]]
        model = self.mapping.model_of(alias)
        refusal = self.refusal(name, state)
        if refusal is not None:
            return ToolResult.failure(refusal, latency_s=time.perf_counter() - t0, tool=name,
                                      alias=alias, model=model, refused=True)
        clock = [0.0, 0.0]
        token = _EXPERT_CLOCK.set(clock)
        try:
            if name == "search":
                result = await self._search(alias, model, state)
            elif name == "enhance_reasoning":
                result = await self._reason(alias, model, state)
            else:
                result = await self._answer(alias, model, state)
        except ExpertError as e:
            result = ToolResult.failure(f"{alias} is unavailable: {e}", expert_error=str(e))
        except Exception as e:  # noqa: BLE001 - any tool failure is an observation
            result = ToolResult.failure(f"{name} failed: {type(e).__name__}: {e}")
        finally:
            _EXPERT_CLOCK.reset(token)
        result.latency_s = max(0.0, time.perf_counter() - t0 - clock[0] + clock[1])
        result.extra.update({"tool": name, "alias": alias, "model": model})
        return result

    def refusal(self, name: str, state: QAState) -> Optional[str]:
        """Why a well-formed ``name`` call is not allowed in ``state`` (release rules), or None."""
        if name == "answer" and self.config.answer_requires_documents and not state.documents:
            return ("answer is not allowed while no documents have been retrieved; "
                    "call search first")
        if name == "search" and self.config.search_once and state.documents:
            return ("search is no longer available: documents have already been retrieved; "
                    "use the other tools")
        return None

    def _expert(self, model: str) -> ChatModel:
        try:
            return self.experts[model]
        except KeyError:
            raise ExpertError(f"no client configured for model {model!r}") from None

    def _context(self, state: QAState) -> str:
        ctx = state.render_context(self.config.doc_chars, self.config.expert_context_chars)
        return ctx + "\n\n" if ctx else ""

    async def _ask(self, model: str, prompt: str, max_tokens: int, usage: dict) -> tuple[str, float]:
        """(text, cost_usd) of one expert call; usage accumulated in place."""
        t0 = time.perf_counter()
        resp = await self._expert(model).chat([{"role": "user", "content": prompt}],
                                              max_tokens=max_tokens,
                                              temperature=self.config.expert_temperature)
        clock = _EXPERT_CLOCK.get()
        if clock is not None:     # the call's latency is what the client reports (see module doc)
            wall = time.perf_counter() - t0
            clock[0] += wall
            clock[1] += resp.latency_s if resp.latency_s else wall
        add_usage(usage, model, resp.prompt_tokens, resp.completion_tokens)
        return resp.text, self.prices.cost_of_llm_call(model, resp.prompt_tokens,
                                                       resp.completion_tokens)

    def _cut(self, text: str) -> str:
        n = self.config.max_observation_chars
        return text if len(text) <= n else text[:n] + f"\n[... {len(text) - n} more characters]"

    async def _search(self, alias: str, model: str, state: QAState) -> ToolResult:
        usage: dict = {}
        llm_usd, expert_error = 0.0, None
        prompt = SEARCH_PROMPT.format(context=self._context(state), problem=state.problem)
        try:
            text, llm_usd = await self._ask(model, prompt, self.config.search_max_tokens, usage)
            query = extract_query(text)
            source = "expert" if query else "fallback_problem"
        except ExpertError as e:
            query, source, expert_error = None, "fallback_expert_error", str(e)
        query = (query or state.problem)[:MAX_QUERY_CHARS]
        k = self.config.top_k_docs
        backend, search_usd, docs = self.config.search_backend, 0.0, []
        query_tokens = 0
        if backend in ("local", "local_then_web"):
            counter = self.count_tokens or self.index.count_tokens

            def search_and_count() -> tuple[list[Document], int]:   # both off the event loop
                return self.index.search(query, k), int(counter(query))
            try:
                docs, query_tokens = await asyncio.to_thread(search_and_count)
            except Exception as e:  # noqa: BLE001 - keep the expert's (already spent) cost
                err = f"local search failed: {type(e).__name__}: {e}"
                return ToolResult(observation=f"Error: {err}", ok=False, error=err,
                                  cost_usd=llm_usd, usage=usage,
                                  extra={"query": query, "query_source": source,
                                         "cost_breakdown": {"llm_usd": llm_usd, "search_usd": 0.0,
                                                            "sandbox_usd": 0.0}})
            search_usd += self.prices.cost_of_local_search(query_tokens)
            good = [d for d in docs if d.score >= self.config.min_local_score]
            if backend == "local_then_web" and len(good) < self.config.min_local_docs:
                backend = "web"
                docs = good
        web_error = None
        if backend == "web":
            try:
                res = await self.web.search(query, k)
            except Exception as e:  # noqa: BLE001 - keep what local search found
                if not docs:
                    return ToolResult(observation=f"Error: web search failed: {e}", ok=False,
                                      error=f"web search failed: {e}", cost_usd=llm_usd + search_usd,
                                      usage=usage, extra={"query": query, "query_source": source})
                web_error = f"{type(e).__name__}: {e}"
            else:
                search_usd += self.prices.cost_of_search(len(res.documents))
                docs = list(docs) + list(res.documents)
        had_docs, notice = bool(state.documents), ""
        new = state.add_documents(docs)
        if new:
            lines = [f"Doc {len(state.documents) - len(new) + i}: {d.render(self.config.doc_chars)}"
                     for i, d in enumerate(new, 1)]
            obs = f"Search query: {query}\nFound {len(new)} new document(s):\n" + "\n".join(lines)
            if self.config.search_once and not had_docs:
                notice = "\n[The search tool is no longer available from now on.]"
        else:
            obs = f"Search query: {query}\nNo new documents found."
        extra = {"query": query, "query_source": source, "n_docs": len(docs),
                 "n_new_docs": len(new), "search_backend": backend, "query_tokens": query_tokens,
                 "doc_ids": [d.id for d in docs],
                 "cost_breakdown": {"llm_usd": llm_usd, "search_usd": search_usd,
                                    "sandbox_usd": 0.0}}
        if expert_error:
            extra["expert_error"] = expert_error
        if web_error:
            extra["web_error"] = web_error
        return ToolResult(observation=self._cut(obs) + notice, cost_usd=llm_usd + search_usd,
                          usage=usage, extra=extra)

    async def _reason(self, alias: str, model: str, state: QAState) -> ToolResult:
        from orchestra_jax.tools.sandbox import SandboxUnavailable, arun_python
        usage: dict = {}
        prompt = REASONER_PROMPT.format(context=self._context(state), problem=state.problem)
        text, llm_usd = await self._ask(model, prompt, self.config.reasoner_max_tokens, usage)
        code = extract_python(text)
        breakdown = {"llm_usd": llm_usd, "search_usd": 0.0, "sandbox_usd": 0.0}
        if code is None:
            return ToolResult(observation=f"{alias} wrote no ```python block; nothing was executed.",
                              cost_usd=llm_usd, usage=usage,
                              extra={"executed": False, "cost_breakdown": breakdown})
        try:
            sb = await arun_python(code, timeout_s=self.config.sandbox_timeout_s,
                                   memory_mb=self.config.sandbox_memory_mb,
                                   allow_unisolated=self.config.allow_unisolated_sandbox)
        except Exception as e:  # noqa: BLE001 - SandboxUnavailable/SandboxError or a bad limit
            msg = str(e) if isinstance(e, SandboxUnavailable) else f"{type(e).__name__}: {e}"
            return ToolResult(observation=f"Error: the code interpreter is unavailable: {msg}",
                              ok=False, error=msg, cost_usd=llm_usd, usage=usage,
                              extra={"executed": False, "code": code, "cost_breakdown": breakdown})
        output = sb.format_observation()
        state.code_snippets.append({"code": code, "output": output})
        breakdown["sandbox_usd"] = self.prices.cost_of_sandbox(sb.duration_s)
        obs = f"```python\n{code}\n```\nExecution output:\n{output}"
        return ToolResult(observation=self._cut(obs), cost_usd=llm_usd + breakdown["sandbox_usd"],
                          usage=usage,
                          extra={"executed": True, "code": code, "returncode": sb.returncode,
                                 "timed_out": sb.timed_out, "sandbox_seconds": sb.duration_s,
                                 "sandbox_isolated": sb.isolated, "cost_breakdown": breakdown})

    async def _answer(self, alias: str, model: str, state: QAState) -> ToolResult:
        usage: dict = {}
        template = ANSWER_PROMPT_BOXED if answer_style(model) == "boxed" else ANSWER_PROMPT_TAGS
        prompt = template.format(context=self._context(state), problem=state.problem)
        text, llm_usd = await self._ask(model, prompt, self.config.answer_max_tokens, usage)
        answer, how = extract_answer(text)
        state.attempts.append({"alias": alias, "model": model, "answer": answer})
        state.answer, state.done = answer, True
        return ToolResult(observation=self._cut(f"Answer by {alias}: {answer}"), cost_usd=llm_usd,
                          usage=usage, done=True, answer=answer,
                          extra={"answer_format": how, "response": text,
                                 "cost_breakdown": {"llm_usd": llm_usd, "search_usd": 0.0,
                                                    "sandbox_usd": 0.0}})
