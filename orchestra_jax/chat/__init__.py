"""orchestra_jax.chat"""
