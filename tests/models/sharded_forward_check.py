"""Run in a subprocess with 8 fake CPU devices (see test_sharding.py)."""

from __future__ import annotations

import sys
import tempfile

import jax
import numpy as np
from flax import nnx

import mucode_jax
from mucode_jax import sharding as sh
from mucode_jax.models.llama import Llama, LlamaConfig
from tests.models import hf_utils


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    mesh = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": -1})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    hf = hf_utils.hf_model("gqa2_untied_llama3")
    ck = tempfile.mkdtemp()
    hf.save_pretrained(ck)
    single = mucode_jax.load_pretrained(ck)
    sharded = mucode_jax.load_pretrained(ck, mesh=mesh)

    # Parameters live with the PartitionSpecs the rules give.
    checked = 0
    for v in jax.tree.leaves(
        nnx.state(sharded, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable)
    ):
        want = sh.logical_to_spec(v.get_metadata()["logical_axes"], sh.DEFAULT_RULES, mesh)
        got = v[...].sharding.spec
        assert tuple(got) == tuple(want), (v.get_metadata()["logical_axes"], got, want)
        checked += 1
    q = sharded.layers[0].attn.q[...]
    assert tuple(q.sharding.spec) == ("fsdp", "tensor"), q.sharding.spec
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (32, 2, 16)

    tokens, mask, _ = hf_utils.batch(hf.config.vocab_size, b=4, pad="left")
    ref = np.asarray(single(tokens, attention_mask=mask))

    graphdef, state = nnx.split(sharded)
    batch_sharding = sh.logical_to_sharding(("batch", "length"), mesh)
    state_shardings = sh.state_shardings(state, mesh)

    def forward(state, tokens, mask):
        return nnx.merge(graphdef, state)(tokens, attention_mask=mask)

    fn = jax.jit(forward, in_shardings=(state_shardings, batch_sharding, batch_sharding))
    with sh.use_mesh(mesh):
        out = fn(state, tokens, mask)
    assert tuple(out.sharding.spec)[:1] == (("data", "fsdp"),), out.sharding.spec
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=0)

    # The grouped (CPU) attention under the same shardings: heads split over "tensor".
    grouped = mucode_jax.load_pretrained(ck, mesh=mesh, attention="grouped")
    g_graphdef, g_state = nnx.split(grouped)
    g_fn = jax.jit(
        lambda state, tokens, mask: nnx.merge(g_graphdef, state)(tokens, attention_mask=mask),
        in_shardings=(sh.state_shardings(g_state, mesh), batch_sharding, batch_sharding),
    )
    with sh.use_mesh(mesh):
        np.testing.assert_allclose(np.asarray(g_fn(g_state, tokens, mask)), ref, atol=1e-5, rtol=0)

    # Creating a model directly in its sharded layout.
    cfg = LlamaConfig.from_hf(hf.config)
    made = sh.create_sharded(lambda: Llama(cfg, rngs=nnx.Rngs(0)), mesh)
    down = made.layers[1].mlp.down[...]
    assert tuple(down.sharding.spec) == ("tensor", "fsdp"), down.sharding.spec
    plain = Llama(cfg, rngs=nnx.Rngs(0))
    # Same values as an eager init (up to jit-vs-eager rounding of std * normal).
    np.testing.assert_allclose(
        np.asarray(down), np.asarray(plain.layers[1].mlp.down[...]), atol=1e-7
    )
    print(f"OK {checked} parameters")


if __name__ == "__main__":
    sys.exit(main())
