"""`make demo` (config: configs/demo.py; its header says what to expect).

Warm-starts a small Qwen3 orchestrator with SFT on demonstrations, trains it with GRPO against
real local tools (FAISS search, SmolLM2-135M-Instruct), evaluates held-out tasks before and
after, and writes runs/demo/summary.json (printed on the last line).
"""
import json
import pathlib

from absl import app
from ml_collections import config_flags

from orchestra_jax.train.cli import run_cli, to_dict
from orchestra_jax.train.demo import DemoConfig, run_demo

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py")


def _fmt(d: dict) -> str:
    share = ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in d["tool_share"].items())
    return (f"accuracy {d['accuracy']:.2f}  reward {d['reward']:.3f}  cost ${d['cost_usd']:.5f}  "
            f"latency {d['latency_s']:.2f}s  tool share: {share}")


def main(argv) -> None:
    del argv

    def go():
        d = to_dict(_CONFIG.value)
        d["seeds"] = tuple(int(s) for s in d["seeds"])
        cfg = DemoConfig(**d)
        s = run_demo(cfg)
        print(f"\n=== held-out tasks (T={cfg.eval_temperature}, {cfg.eval_samples} samples "
              "each) ===")
        for p in s["per_seed"]:
            print(f"seed {p['seed']} before: {_fmt(p['before'])}")
            print(f"seed {p['seed']} after:  {_fmt(p['after'])}")
            pr = p["preference"]
            print(f"seed {p['seed']} local_search share: neutral {pr['neutral_share']:.2f} -> "
                  f"'{pr['instruction']}' {pr['favouring_share']:.2f}")
        print(f"mean before: {_fmt(s['before'])}")
        print(f"mean after:  {_fmt(s['after'])}")
        print(f"preference (local_search share): neutral {s['preference']['neutral']:.2f}, "
              f"favouring {s['preference']['favouring']:.2f}")
        print(f"start spread (seeds): accuracy {s['spread_before']['accuracy']:.2f}, reward "
              f"{s['spread_before']['reward']:.3f}")
        print(f"setup {s['setup_s']:.0f} s, training + evaluation {s['train_s']:.0f} s")
        print("checks: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in s["checks"].items()))
        work = pathlib.Path(cfg.workdir)
        print(f"curves: {work / 'curves.png'}\nviewer: {work / 'viewer.html'}")
        print(str((work / "summary.json").resolve()))
    run_cli(go)


if __name__ == "__main__":
    app.run(main)
