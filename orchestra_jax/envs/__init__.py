"""orchestra_jax.envs"""
