"""Builds and saves a LocalSearchIndex from a JSONL corpus (config: configs/build_index.py)."""
import time

from absl import app
from ml_collections import config_flags

from orchestra_jax.tools.retrieval import LocalSearchIndex

_CONFIG = config_flags.DEFINE_config_file("config", "configs/build_index.py")


def main(argv) -> None:
    del argv
    c = _CONFIG.value
    t0 = time.perf_counter()
    index = LocalSearchIndex.build(c.corpus, c.model, batch_size=c.batch_size,
                                   query_prompt_name=c.query_prompt_name or None, device=c.device)
    index.save(c.out_dir)
    print(f"indexed {len(index)} documents with {c.model} in {time.perf_counter() - t0:.1f}s "
          f"-> {c.out_dir}")
    loaded = LocalSearchIndex.load(c.out_dir)
    for q in c.smoke_queries:
        hits = loaded.search(q, c.k)
        print(f"{q!r}: " + "; ".join(f"{h.title} ({h.score:.3f})" for h in hits))


if __name__ == "__main__":
    app.run(main)
