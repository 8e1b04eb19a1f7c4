"""The sampler on 8 fake CPU devices (data 2 x fsdp 2 x tensor 2) equals the unsharded one.

JAX reads the device count once, at import, so the check runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from flax import nnx
    from jax.sharding import PartitionSpec as P
    from mucode_jax import sharding as sh
    from mucode_jax.models.llama import Llama, LlamaConfig
    from mucode_jax.sampling import Sampler, Temperature

    assert jax.device_count() == 8, jax.devices()
    cfg = LlamaConfig.tiny(initializer_range=0.2, eos_token_id=(7, 9))
    mesh = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = sh.create_sharded(lambda: Llama(cfg, rngs=nnx.Rngs(0)), mesh)
    host = nnx.merge(nnx.graphdef(model), jax.device_get(nnx.state(model)))
    kw = dict(max_new_tokens=12, max_prompt_length=32, max_batch_size=8)
    sharded = Sampler(model, mesh=mesh, prefill_chunk=8, **kw)  # 32-token bucket: 4 chunks
    plain = Sampler(host, prefill_chunk=None, **kw)
    assert sharded.batch_buckets == (4, 8), sharded.batch_buckets

    rng = np.random.RandomState(0)
    prompts = [rng.randint(10, cfg.vocab_size, n).tolist() for n in (3, 17, 9, 1, 30, 12)]
    for method in (None, Temperature(0.9)):
        a = sharded.sample(prompts, seed=1, method=method)
        b = plain.sample(prompts, seed=1, method=method)
        assert a.tokens == b.tokens, (a.tokens, b.tokens)
        for x, y in zip(a.logprobs, b.logprobs):
            np.testing.assert_allclose(x, y, atol=1e-4)

    # The live arrays are sharded as the rules say (not silently replicated).
    params = nnx.state(model)
    assert sharded._params["embed"].value.sharding.spec == P("tensor", "fsdp")
    assert sharded._params["layers"][0]["attn"]["k"].value.sharding.spec == P("fsdp", "tensor")
    with sh.use_mesh(mesh):
        arrays = sharded._prepare(prompts, np.full(6, 12, np.int32), np.arange(6))
        state = sharded._prefill(sharded.method, sharded._params, *arrays, np.uint32(0))
        assert state.cache.layers[0].k.sharding.spec == P(("data", "fsdp"), "tensor")
        assert state.tokens.sharding.spec == P(("data", "fsdp"))
        state = sharded._decode(sharded.method, None, sharded._params, state, np.int32(12))
        assert state.cache.layers[1].v.sharding.spec == P(("data", "fsdp"), "tensor")
        assert state.done.sharding.spec == P(("data", "fsdp"))
    traces = sharded.num_traces
    sharded.update_params(params)
    sharded.sample(prompts[:5], seed=2)  # same buckets: no new trace
    assert sharded.num_traces == traces
    print("SHARDED OK")
    """
)


def test_sharded_sampler_equals_unsharded_on_8_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and "SHARDED OK" in proc.stdout, proc.stderr[-4000:]
