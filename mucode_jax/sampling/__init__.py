"""Sampling from a `Llama`: prefill + one `jax.lax.while_loop` decode (`loop`, the device side),
bucketed and sharded by `Sampler` (`sampler`, the host side)."""

from mucode_jax.sampling.loop import SamplingState
from mucode_jax.sampling.methods import (
    Greedy,
    SamplingMethod,
    Temperature,
    TopK,
    TopP,
    make_method,
)
from mucode_jax.sampling.sampler import (
    SampleOutput,
    Sampler,
    generate,
    power_of_two_buckets,
)

__all__ = [
    "Greedy",
    "SampleOutput",
    "Sampler",
    "SamplingMethod",
    "SamplingState",
    "Temperature",
    "TopK",
    "TopP",
    "generate",
    "make_method",
    "power_of_two_buckets",
]
