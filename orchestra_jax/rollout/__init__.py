"""orchestra_jax.rollout"""
