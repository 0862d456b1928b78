"""experiments/describe_models.py end to end against a local OpenAI-compatible server."""

import asyncio
import importlib.util
import json
import pathlib

from tools_fault_server import FaultServer, chat_completion

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_describe_models_paper_procedure(tmp_path, shared_data):
    cfg_mod = _load(REPO / "configs" / "describe_models.py", "describe_models_config")
    exp = _load(REPO / "experiments" / "describe_models.py", "describe_models_exp")
    tasks = [json.loads(l) for l in open(shared_data / "frames" / "frames.jsonl")][:12]
    (tmp_path / "tasks.jsonl").write_text("\n".join(json.dumps(t) for t in tasks))
    answers = {t["question"]: t["answer"] for t in tasks}
    seen_by_describer = []

    def route(body):
        content = body["messages"][0]["content"]
        if body["model"] == "describer":
            seen_by_describer.append(content)
            return ("chat", "<description>can answer some multi-hop questions.</description>", 9, 9)
        q = next(q for q in answers if q in content)
        # the expert gets the first half of the questions right
        ans = answers[q] if list(answers).index(q) < 6 else "no idea"
        return ("chat", f"<think>hmm</think><answer>{ans}</answer>", 100, 10)

    with FaultServer([route]) as srv:
        cfg = cfg_mod.get_config()
        cfg.tasks_path = str(tmp_path / "tasks.jsonl")
        cfg.experts_json = json.dumps({"gpt-5-mini": {"base_url": srv.url + "/v1"}})
        cfg.describer.base_url = srv.url + "/v1"
        cfg.describer.model = "describer"
        cfg.out_path = str(tmp_path / "out.json")
        out = asyncio.run(exp.run(cfg))
        n_expert_calls = sum(1 for _, _, b in srv.requests if b["model"] == "gpt-5-mini")
    assert n_expert_calls == 10  # paper: 10 sampled tasks
    entry = out["models"]["gpt-5-mini"]
    assert entry["descriptions"]["answer"] == "can answer some multi-hop questions."
    assert 4 <= entry["n_correct"] <= 6 and entry["n_tasks"] == 10  # 10 of 12, 6 answerable
    prompt = seen_by_describer[0]
    assert prompt.count("Correct: yes") == entry["n_correct"]
    assert prompt.count("Correct: no") == 10 - entry["n_correct"]
    assert json.loads((tmp_path / "out.json").read_text()) == out
