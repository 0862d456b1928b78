"""Test-session set-up shared by every test.

8 fake CPU devices so sharding tests can build (8,1,1), (2,4,1), (2,2,2) meshes; this must happen
before jax is imported anywhere.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data (read-only benchmark data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sft_demos(tmp_path_factory):
    """Trajectory JSONL recorded through the real episode loop (QA env, FAISS search over the demo
    corpus, scripted tool calls) with a tiny random in-process model as the expert: its answers do
    not matter for SFT, which learns the tool-call turns. Shared by the SFT and GRPO tests."""
    import jax
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.envs.qa import load_qa_jsonl
    from orchestra_jax.models import init_params, presets
    from orchestra_jax.rollout.local_engine import LocalJaxEngine
    from orchestra_jax.rollout.local_expert import LocalChatModel
    from orchestra_jax.tools.pricing import PriceSheet
    from orchestra_jax.tools.retrieval import LocalSearchIndex
    from orchestra_jax.train import demo
    d = tmp_path_factory.mktemp("sft_data")
    cfg = demo.DemoConfig(workdir=str(d), num_lookup=12, demos_per_task=2, seq_len=1024,
                          concurrency=8, prefer_fraction=0.5)
    paths = demo.write_demo_data(d / "data", seed=0, num_lookup=12)
    tok = load_tokenizer()
    tiny = presets["tiny-h64"]
    expert = LocalChatModel(LocalJaxEngine(tiny, init_params(tiny, jax.random.key(3)),
                                           max_context=2048), tok, model="tiny-expert",
                            max_new_tokens_cap=4)
    shared = demo.Shared(paths=paths, train=load_qa_jsonl(paths["train"]),
                         heldout=load_qa_jsonl(paths["heldout"]),
                         index=LocalSearchIndex.build(paths["corpus"]), expert=expert,
                         prices=PriceSheet.load("paper_eval"), tokenizer=tok, cfg=cfg)
    out = demo.record_demonstrations(shared, 0, d / "demos.jsonl", log=lambda *_: None)
    return {"path": out, "shared": shared, "dir": d}


@pytest.fixture(scope="session")
def sft_trained(sft_demos, tmp_path_factory):
    """experiments/train_sft.py, 50 steps on the recorded demonstrations (tiny-h64 policy): the
    run test_train_sft checks for learning and test_train_grpo warm-starts from (its hf/ export)."""
    import subprocess
    import sys
    from multiprocess_util import one_device_env
    work = tmp_path_factory.mktemp("sft_run") / "sft"
    # one CPU device: the 8 fake devices of this session triple a step's time on 2 cores, and
    # this run is about learning (sharded training: test_train_step / test_train_sft).
    r = subprocess.run(
        [sys.executable, "experiments/train_sft.py", "--config=configs/sft_cpu_demo.py",
         f"--workdir={work}", f"--config.data={sft_demos['path']}", "--config.total_steps=50",
         "--config.seq_len=768", "--config.rows=8", "--config.policy.preset=tiny-h64",
         "--config.eval_every=25", "--config.checkpoint_every=50"],
        cwd=REPO, capture_output=True, text=True, timeout=1500, env=one_device_env())
    assert r.returncode == 0, r.stderr[-3000:]
    return work

