"""Build every TFDS dataset (no TensorFlow) into --config.data_dir. See configs/datasets.py."""

import pathlib
import time

from absl import app
from ml_collections import config_flags

from orchestra_jax.data.builders import build_dataset
from orchestra_jax.data.sources import ManualDataError

_CONFIG = config_flags.DEFINE_config_file("config", "configs/datasets.py")
_SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv):
    del argv
    c = _CONFIG.value
    if not c.data_dir:
        raise app.UsageError("--config.data_dir is required")
    jobs = []
    root = pathlib.Path(c.tau2_root or _SHARED / "tau2" / "domains")
    for d in filter(None, c.tau2_domains.split(",")):
        jobs.append(("tau2", d, dict(source=str(root / d / "tasks.json"), domain=d)))
    jobs.append(("frames", "default", dict(source=c.frames or str(_SHARED / "frames" / "frames.jsonl"))))
    for d in filter(None, c.toolscale_dirs.split(",")):
        jobs.append(("toolscale", pathlib.Path(d).name, dict(source=d)))
    jobs.append(("hle", "default", dict(manual_dir=c.hle_manual_dir)))
    jobs.append(("general_thought", "default", dict(manual_dir=c.gt_manual_dir)))
    if c.preferences:
        jobs += [(k, f"{n}_pref", dict(kw, preferences=c.preferences,
                                       preference_seed=c.preference_seed)) for k, n, kw in list(jobs)]
    for kind, name, kw in jobs:
        t0 = time.time()
        try:
            b = build_dataset(kind, data_dir=c.data_dir, name=name, **kw)
        except ManualDataError as e:
            print(f"SKIP {kind}/{name}: {e}")
            continue
        sizes = {s: i.num_examples for s, i in b.info.splits.items()}
        print(f"{kind}/{name}: {sizes} in {time.time() - t0:.1f} s -> {b.data_dir}")


if __name__ == "__main__":
    app.run(main)
