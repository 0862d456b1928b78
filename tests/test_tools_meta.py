"""QAToolkit end to end: real expert client over HTTP (local server answering as each model),
real FAISS index over the bundled corpus, real bubblewrap sandbox; cost by hand."""

import asyncio
import dataclasses

import pytest

from orchestra_jax.tools.aliases import ModelMapping
from orchestra_jax.tools.llm_client import build_expert_clients
from orchestra_jax.tools.meta_tools import (MAX_QUERY_CHARS, QAState, QAToolkit, QAToolkitConfig,
                                            extract_answer, extract_python, extract_query)
from orchestra_jax.tools.pricing import PriceSheet
from orchestra_jax.tools.retrieval import BUNDLED_CORPUS, LocalSearchIndex
from tools_fault_server import FaultServer, chat_completion

PROBLEM = "Which scientist noticed in 1928 that a mould killed bacteria in a culture dish?"
REPLIES = {  # model -> (text, prompt_tokens, completion_tokens)
    "Qwen/Qwen3-32B": ("<think>need the discoverer</think>\n<query>mould killed bacteria 1928 "
                       "discovery antibiotic</query>", 1500, 40),
    "gpt-5": ("Let me compute.\n```python\nprint('year', 1900 + 28)\n```\n", 3000, 800),
    "gpt-5-mini": ("<think>The doc says Fleming.</think><answer>Alexander Fleming</answer>",
                   4000, 1200),
    "Qwen/Qwen2.5-Math-7B-Instruct": ("So the answer is \\boxed{\\frac{1}{2}}.", 100, 20),
    "meta-llama/Llama-3.3-70B-Instruct": ("I have no query for you.", 50, 10),
    "Qwen/Qwen2.5-Coder-32B-Instruct": ("No code needed.", 60, 5),
}


def _route(body):
    model = body["model"]
    if model == "Qwen/Qwen2.5-Math-72B-Instruct":
        return ("json", 500, {"error": "overloaded"}, {})
    text, p, c = REPLIES[model]
    return ("json", 200, chat_completion(text, p, c, model=model), {})


@pytest.fixture(scope="module")
def index():
    return LocalSearchIndex.build(BUNDLED_CORPUS)


def _toolkit(url, index, prices, mapping=None):
    models = sorted(set(ModelMapping.paper_eval().aliases.values()))
    experts = build_expert_clients({m: {"base_url": url + "/v1", "timeout_s": 5.0,
                                        "max_retries": 0} for m in models}, prices=prices)
    return QAToolkit(mapping=mapping or ModelMapping.paper_eval(), experts=experts, prices=prices,
                     index=index, config=QAToolkitConfig(top_k_docs=3, sandbox_timeout_s=10,
                                                         sandbox_memory_mb=512))


def test_full_episode_cost_and_state(index):
    prices = PriceSheet.load("paper_eval")
    with FaultServer([_route]) as srv:
        tk = _toolkit(srv.url, index, prices)
        state = QAState(problem=PROBLEM)

        async def episode():
            out = []
            for call in ({"name": "search", "arguments": {"model": "search-3"}},
                         {"name": "enhance_reasoning", "arguments": {"model": "reasoner-1"}},
                         {"name": "answer", "arguments": {"model": "answer-2"}}):
                out.append(await tk.execute(call, state))
            return out

        search, reason, answer = asyncio.run(episode())

    # search: expert query used, relevant document retrieved
    assert search.ok, search.error
    assert search.extra["query"] == "mould killed bacteria 1928 discovery antibiotic"
    assert search.extra["query_source"] == "expert"
    assert state.documents[0].title == "Penicillin"
    assert "Penicillin" in search.observation
    q_tokens = search.extra["query_tokens"]
    assert q_tokens == index.count_tokens(search.extra["query"]) > 0
    # enhance_reasoning: the sandbox ran the expert's code
    assert reason.ok and reason.extra["executed"] and reason.extra["sandbox_isolated"]
    assert "year 1928" in reason.observation
    assert state.code_snippets[0]["code"] == "print('year', 1900 + 28)"
    secs = reason.extra["sandbox_seconds"]
    assert 0 < secs < 10
    # answer: <answer> tag extracted, episode done
    assert answer.done and answer.answer == "Alexander Fleming" and state.done
    assert answer.extra["answer_format"] == "answer_tag"
    # the prompt the answer expert got contains the gathered context
    answer_prompt = [b for _, _, b in srv.requests if b["model"] == "gpt-5-mini"][0]
    content = answer_prompt["messages"][0]["content"]
    assert "Doc 1: Penicillin" in content and "year 1928" in content and PROBLEM in content

    # costs by hand with paper_eval prices ($ per 1M tokens; sandbox $8.3e-6/s)
    assert search.cost_usd == pytest.approx(1500 * 0.8e-6 + 40 * 0.8e-6 + q_tokens * 0.2e-6)
    assert reason.cost_usd == pytest.approx(3000 * 1.25e-6 + 800 * 10e-6 + secs * 8.3e-6)
    assert answer.cost_usd == pytest.approx(4000 * 0.25e-6 + 1200 * 2e-6)
    assert search.usage == {"Qwen/Qwen3-32B": {"prompt_tokens": 1500, "completion_tokens": 40}}
    total = search.cost_usd + reason.cost_usd + answer.cost_usd
    assert total == pytest.approx(0.0012 + 0.000032 + q_tokens * 2e-7 + 0.00375 + 0.008
                                  + secs * 8.3e-6 + 0.001 + 0.0024)
    for r in (search, reason, answer):
        assert r.latency_s > 0
    assert tk.tool_names == ["search-1", "search-2", "search-3", "reasoner-1", "reasoner-2",
                             "reasoner-3", "answer-1", "answer-2", "answer-3", "answer-4",
                             "answer-math-1", "answer-math-2"]
    assert tk.count_key({"name": "answer", "arguments": {"model": "answer-2"}}) == "answer-2"


def test_fallbacks_and_failures(index):
    prices = PriceSheet.load("paper_eval")
    with FaultServer([_route]) as srv:
        tk = _toolkit(srv.url, index, prices,
                      mapping=ModelMapping({"search-1": "meta-llama/Llama-3.3-70B-Instruct",
                                            "search-2": "Qwen/Qwen2.5-Math-72B-Instruct",
                                            "reasoner-1": "Qwen/Qwen2.5-Coder-32B-Instruct",
                                            "answer-1": "Qwen/Qwen2.5-Math-72B-Instruct",
                                            "answer-math-1": "Qwen/Qwen2.5-Math-7B-Instruct"}))
        state = QAState(problem="x" * 1000)

        async def run(name, alias):
            arg = {"model": alias}
            return await tk.execute({"name": name, "arguments": arg}, state)

        no_query = asyncio.run(run("search", "search-1"))
        expert_down = asyncio.run(run("search", "search-2"))
        no_code = asyncio.run(run("enhance_reasoning", "reasoner-1"))
        bad_alias = asyncio.run(run("answer", "answer-3"))
        answer_down = asyncio.run(run("answer", "answer-1"))
        boxed = asyncio.run(run("answer", "answer-math-1"))
    assert no_query.ok and no_query.extra["query_source"] == "fallback_problem"
    assert no_query.extra["query"] == "x" * MAX_QUERY_CHARS
    assert expert_down.ok and expert_down.extra["query_source"] == "fallback_expert_error"
    assert "HTTP 500" in expert_down.extra["expert_error"]
    assert no_code.ok and not no_code.extra["executed"] and "no ```python block" in no_code.observation
    assert not bad_alias.ok and "'answer-3' is not allowed" in bad_alias.observation
    assert not answer_down.ok and not answer_down.done and "answer-1 is unavailable" in answer_down.error
    assert boxed.done and boxed.answer == "\\frac{1}{2}" and boxed.extra["answer_format"] == "boxed"
    assert tk.tool_names == ["search-1", "search-2", "reasoner-1", "answer-1", "answer-math-1"]


def test_extractors():
    assert extract_query("<query>abc</query>") is None  # < 5 chars
    assert extract_query("<query>a</query> then <query> second query </query>") == "second query"
    assert extract_query("<think><query>inner thought</query></think>none") is None
    assert extract_python("```python\na=1\n```\n```py\nprint(2)\n```") == "print(2)"
    assert extract_python("```\nno lang\n```") is None
    assert extract_answer("\\boxed{x^{2}} and later \\boxed{\\{1,2\\}}")[0] == "\\{1,2\\}"
    assert extract_answer("<answer> 42 </answer>") == ("42", "answer_tag")
    assert extract_answer("<think>\\boxed{no}</think>plain 7") == ("plain 7", "raw")
    assert extract_answer("\\boxed{unclosed") == ("\\boxed{unclosed", "raw")


def test_config_errors(index):
    with pytest.raises(ValueError, match="search_backend"):
        QAToolkitConfig(search_backend="bing")
    with pytest.raises(ValueError, match="no web client"):
        QAToolkit(mapping=ModelMapping.paper_eval(), experts={},
                  prices=PriceSheet.load("paper_eval"), index=index,
                  config=QAToolkitConfig(search_backend="web"))


def test_local_then_web_search(index, monkeypatch):
    """No good local hit -> Tavily (local server); its documents join the state and are priced."""
    from orchestra_jax.tools.web_search import TavilyClient
    tavily_body = {"query": "q", "results": [
        {"title": "Quokka", "url": "https://example.org/quokka", "content": "A small marsupial.",
         "score": 0.9},
        {"title": "Rottnest Island", "url": "https://example.org/rottnest",
         "content": "Home of the quokka.", "score": 0.8}]}
    prices = PriceSheet.load("paper_eval")

    def route(body):
        if "messages" in body:  # the search expert
            return ("json", 200, chat_completion("<query>quokka habitat island</query>", 10, 5,
                                                 model=body["model"]), {})
        return ("json", 200, tavily_body, {})

    with FaultServer([route]) as srv:
        web = TavilyClient(api_key="tvly-x", base_url=srv.url, max_results=2, timeout_s=5)
        experts = build_expert_clients({"Qwen/Qwen3-32B": {"base_url": srv.url + "/v1",
                                                           "timeout_s": 5.0}}, prices=prices)
        tk = QAToolkit(mapping=ModelMapping({"search-3": "Qwen/Qwen3-32B",
                                             "answer-4": "Qwen/Qwen3-32B"}),
                       experts=experts, prices=prices, index=index, web=web,
                       config=QAToolkitConfig(search_backend="local_then_web", top_k_docs=2,
                                              min_local_docs=2, min_local_score=0.9,
                                              tools=("search", "answer")))
        state = QAState(problem="Where do quokkas live?")
        r = asyncio.run(tk.execute({"name": "search", "arguments": {"model": "search-3"}}, state))
    assert r.ok and r.extra["search_backend"] == "web"
    assert [d.title for d in state.documents] == ["Quokka", "Rottnest Island"]
    q_tokens = r.extra["query_tokens"]
    assert r.cost_usd == pytest.approx(10 * 0.8e-6 + 5 * 0.8e-6 + q_tokens * 0.2e-6
                                       + 0.01 + 2 * 0.002)


def test_release_rules_answer_needs_documents_and_search_once(index):
    """answer_requires_documents / search_once: refused calls are error observations that cost
    nothing and never reach an expert; the first successful search announces search is gone."""
    prices = PriceSheet.load("paper_eval")
    with pytest.raises(ValueError, match="answer_requires_documents"):
        QAToolkitConfig(tools=("enhance_reasoning", "answer"), answer_requires_documents=True)
    with FaultServer([_route]) as srv:
        tk = _toolkit(srv.url, index, prices)
        tk.config = dataclasses.replace(tk.config, answer_requires_documents=True, search_once=True)
        state = QAState(problem=PROBLEM)

        def run(name, alias):
            return asyncio.run(tk.execute({"name": name, "arguments": {"model": alias}}, state))

        early = run("answer", "answer-2")
        n_requests = len(srv.requests)
        first = run("search", "search-3")
        second = run("search", "search-3")
        n_after_second = len(srv.requests)
        final = run("answer", "answer-2")
    assert not early.ok and not early.done and early.cost_usd == 0.0 and early.extra["refused"]
    assert early.observation == ("Error: answer is not allowed while no documents have been "
                                 "retrieved; call search first")
    assert n_requests == 0 and state.attempts[-1]["answer"] == "Alexander Fleming"
    assert first.ok and state.documents[0].title == "Penicillin"
    assert first.observation.endswith("[The search tool is no longer available from now on.]")
    assert not second.ok and second.extra["refused"] and second.cost_usd == 0.0
    assert "search is no longer available" in second.observation
    assert n_after_second == 1 and len(state.documents) == len(first.extra["doc_ids"])
    assert final.done and final.answer == "Alexander Fleming"
    # off by default: the same calls run normally
    assert tk.refusal("answer", QAState(problem="p")) is not None
    assert _toolkit("http://127.0.0.1:9", index, prices).refusal("answer", QAState(problem="p")) is None


def test_failures_after_the_expert_call_keep_its_cost(index):
    """A broken index / sandbox after the expert answered: an error observation that still
    carries the expert's (spent) tokens and cost."""
    prices = PriceSheet.load("paper_eval")

    class BrokenIndex:
        count_tokens = staticmethod(len)

        def search(self, query, k):
            raise OSError("index file vanished")

    with FaultServer([_route]) as srv:
        tk = _toolkit(srv.url, index, prices)
        tk.index = BrokenIndex()
        tk.config = dataclasses.replace(tk.config, sandbox_memory_mb=1)  # run_python rejects < 64
        state = QAState(problem=PROBLEM)
        search = asyncio.run(tk.execute({"name": "search", "arguments": {"model": "search-3"}}, state))
        reason = asyncio.run(tk.execute({"name": "enhance_reasoning",
                                         "arguments": {"model": "reasoner-1"}}, state))
    assert not search.ok and "local search failed: OSError: index file vanished" in search.observation
    assert search.cost_usd == pytest.approx((1500 + 40) * 0.8e-6) and search.usage
    assert not reason.ok and "ValueError: memory_mb" in reason.observation
    assert reason.cost_usd == pytest.approx(3000 * 1.25e-6 + 800 * 10e-6) and reason.usage
    assert state.documents == [] and state.code_snippets == []
