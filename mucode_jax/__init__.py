"""mucode_jax: multi-turn code generation with execution feedback, in JAX/Flax NNX."""

__version__ = "0.1.0"
