"""RL config defaults, validation, configs/rl_defaults.py, and rl/ purity (no project imports)."""
import ast
import importlib.util
import pathlib

import pytest

from orchestra_jax.rl.config import get_rl_config, ppo_loss_config, validate_rl_config
from orchestra_jax.rl.losses import PPOLossConfig

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_defaults_follow_paper_and_release():
    c = get_rl_config()
    validate_rl_config(c)
    assert (c.group_size, c.tasks_per_batch, c.max_turns) == (8, 16, 50)
    assert (c.clip_low, c.clip_high, c.dual_clip) == (0.2, 0.28, 10.0)
    assert (c.kl_type, c.kl_coef, c.adv_clip, c.adv_std) == ("k2", 1e-4, 3.0, "sample")
    assert (c.homogeneity_threshold, c.learning_rate, c.loss_agg) == (0.1, 1e-6, "token-mean")
    assert c.tis_cap is None
    assert ppo_loss_config(c) == PPOLossConfig()          # loss defaults agree with the config
    assert c.adv_boost_value == 0.0                       # release-only tweak: off by default


def test_default_preference_weighs_cost_and_latency():
    """Without a preference instruction the reward must not collapse to binary correctness, and
    the RL config's default P equals the data module's default preference."""
    from orchestra_jax.data.preferences import default_preference
    c = get_rl_config()
    assert c.default_p_compute > 0 and c.default_p_latency > 0
    pref = default_preference(["local_search", "gpt-5"])
    assert pref.vector == [c.default_p_tool] * 2 + [c.default_p_outcome, c.default_p_compute,
                                                     c.default_p_latency]
    src = (REPO / "orchestra_jax/rl/config.py").read_text()
    line = next(ln for ln in src.splitlines() if ln.strip().startswith("c.adv_boost_value"))
    assert "[C]" in line and "release" in line


def test_every_knob_cites_its_source():
    src = (REPO / "orchestra_jax/rl/config.py").read_text()
    lines = [ln for ln in src.splitlines() if ln.strip().startswith("c.") and "=" in ln]
    assert len(lines) >= 30
    for ln in lines:
        assert any(tag in ln for tag in ("[P]", "[C]", "[ours]")), ln


def test_validation_names_the_bad_knob():
    for knob, value in (("group_size", 0), ("adv_mode", "ppo"), ("clip_low", 1.2),
                        ("kl_type", "k9"), ("default_p_compute", 2.0), ("learning_rate", 0.0),
                        ("format_filter_mode", "token")):
        c = get_rl_config()
        c[knob] = value
        with pytest.raises(ValueError, match=knob):
            validate_rl_config(c)
    c = get_rl_config()
    c.tis_cap = 2.0
    assert ppo_loss_config(c).tis_cap == 2.0


def test_configs_rl_defaults_file():
    path = REPO / "configs" / "rl_defaults.py"
    spec = importlib.util.spec_from_file_location("rl_defaults", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.get_config().to_dict() == get_rl_config().to_dict()
    assert "Run:" in (mod.__doc__ or "")


def test_rl_is_pure_math():
    """orchestra_jax/rl imports only jax/numpy (+ ml_collections in config.py) and itself."""
    allowed = {"jax", "numpy", "math", "dataclasses", "typing", "__future__"}
    for f in sorted((REPO / "orchestra_jax" / "rl").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for n in names:
                top = n.split(".")[0]
                ok = (top in allowed or n.startswith("orchestra_jax.rl")
                      or (top == "ml_collections" and f.name == "config.py"))
                assert ok, f"{f.name} imports {n}"
