"""orchestra_jax.train"""
