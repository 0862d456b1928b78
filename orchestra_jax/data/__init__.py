"""orchestra_jax.data — datasets (TFDS builders without TensorFlow, grain iterators) and
ToolScale synthesis.

* :mod:`.sources` — raw readers (τ² / ToolScale tasks, FRAMES, HLE and GeneralThought from a
  manual_dir, preference pairs); :mod:`.builders` — ``build_dataset(kind, data_dir=..., ...)``,
  ``load_split(...)``; :mod:`.iterators` — ``make_task_iterator(source, seed=...)`` with
  ``get_state()`` / ``set_state()``.
* :mod:`.toolscale` — ``synthesize(SynthesisConfig(...))`` → a tau2-format domain folder.

Submodules are imported explicitly (``from orchestra_jax.data.builders import build_dataset``) so
that importing the package stays cheap.
"""
