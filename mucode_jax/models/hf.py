"""HF checkpoints in and out: safetensors + config.json, both directions.

`load_pretrained` reads a directory written by `transformers` (`save_pretrained`,
single file or sharded with ``model.safetensors.index.json``) holding a
`LlamaForCausalLM` or a `LlamaForSequenceClassification` (num_labels=1) and returns
our `Llama` or `Verifier`. With a mesh, tensors are read one at a time and each goes
straight onto its sharding (`jax.make_array_from_callback`), so no host ever holds
the whole model. `save_pretrained` writes files that
`transformers.AutoModelForCausalLM` / `AutoModelForSequenceClassification` load.

The name mapping is one table (`_LAYER_TABLE`), the HF layout conversions are
reshapes/transposes in `_to_ours` / `_to_hf`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mucode_jax import sharding as sh
from mucode_jax.models.llama import Llama, LlamaConfig
from mucode_jax.models.verifier import Verifier

CAUSAL = "LlamaForCausalLM"
SEQCLS = "LlamaForSequenceClassification"
SUPPORTED = (CAUSAL, SEQCLS)

# (our path under a decoder layer, HF name under model.layers.{i}., layout kind)
_LAYER_TABLE = (
    (("input_norm", "scale"), "input_layernorm.weight", "vector"),
    (("post_attn_norm", "scale"), "post_attention_layernorm.weight", "vector"),
    (("attn", "q"), "self_attn.q_proj.weight", "q"),
    (("attn", "k"), "self_attn.k_proj.weight", "kv"),
    (("attn", "v"), "self_attn.v_proj.weight", "kv"),
    (("attn", "o"), "self_attn.o_proj.weight", "o"),
    (("mlp", "gate"), "mlp.gate_proj.weight", "linear"),
    (("mlp", "up"), "mlp.up_proj.weight", "linear"),
    (("mlp", "down"), "mlp.down_proj.weight", "linear"),
)


class CheckpointError(ValueError):
    """A checkpoint directory or tensor that cannot be used (the message says why and the fix)."""


def _mapping(config: LlamaConfig, verifier: bool) -> list[tuple[tuple[Any, ...], str, str]]:
    """(our state path, HF tensor name, kind) for every parameter of the model."""
    prefix: tuple[Any, ...] = ("backbone",) if verifier else ()
    out = [(prefix + ("embed",), "model.embed_tokens.weight", "embedding")]
    for i in range(config.num_hidden_layers):
        for ours, theirs, kind in _LAYER_TABLE:
            out.append((prefix + ("layers", i) + ours, f"model.layers.{i}.{theirs}", kind))
    out.append((prefix + ("final_norm", "scale"), "model.norm.weight", "vector"))
    if verifier:
        out.append((("score",), "score.weight", "score"))
    elif not config.tie_word_embeddings:
        out.append((("lm_head",), "lm_head.weight", "linear"))
    return out


def _hf_shape(kind: str, ours: tuple[int, ...]) -> tuple[int, ...]:
    if kind in ("vector", "embedding"):
        return ours
    if kind in ("q", "kv"):  # ours [D, heads, H]; HF [heads*H, D]
        return (ours[1] * ours[2], ours[0])
    if kind == "o":  # ours [N, H, D]; HF [D, N*H]
        return (ours[2], ours[0] * ours[1])
    if kind == "linear":  # ours [in, out]; HF [out, in]
        return (ours[1], ours[0])
    if kind == "score":  # ours [D]; HF [1, D]
        return (1, ours[0])
    raise AssertionError(kind)


def _to_ours(kind: str, x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    if kind in ("vector", "embedding"):
        return x
    if kind in ("q", "kv", "linear"):
        return x.T.reshape(ours)
    if kind == "o":
        return x.T.reshape(ours)
    if kind == "score":
        return x.reshape(ours)
    raise AssertionError(kind)


def _to_hf(kind: str, x: np.ndarray) -> np.ndarray:
    if kind in ("vector", "embedding"):
        return x
    if kind in ("q", "kv"):
        d = x.shape[0]
        return np.ascontiguousarray(x.reshape(d, -1).T)
    if kind == "o":
        return np.ascontiguousarray(x.reshape(-1, x.shape[-1]).T)
    if kind == "linear":
        return np.ascontiguousarray(x.T)
    if kind == "score":
        return x.reshape(1, -1)
    raise AssertionError(kind)


def _path_key(path) -> tuple[Any, ...]:
    out = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                out.append(getattr(k, attr))
                break
        else:
            out.append(k)
    return tuple(out)


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _build(
    config: LlamaConfig,
    verifier: bool,
    get: Callable[[str], np.ndarray],
    available: set[str],
    *,
    source: str,
    mesh: jax.sharding.Mesh | None,
    rules: sh.LogicalRules,
) -> Llama | Verifier:
    cls = Verifier if verifier else Llama
    abstract = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
    graphdef, abs_state = nnx.split(abstract)
    table = {ours: (theirs, kind) for ours, theirs, kind in _mapping(config, verifier)}
    missing = sorted(theirs for theirs, _ in table.values() if theirs not in available)
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise CheckpointError(
            f"{source} is missing tensor(s) {', '.join(missing[:3])}{more}; the checkpoint is "
            "partial or not a Llama model: re-save it completely with transformers' save_pretrained."
        )
    shardings = sh.state_shardings(abs_state, mesh, rules) if mesh is not None else None

    def load(path, var):
        key = _path_key(path)
        theirs, kind = table[key]
        want = _hf_shape(kind, tuple(var.shape))
        x = get(theirs)
        if tuple(x.shape) != want:
            raise CheckpointError(
                f"Tensor {theirs!r} in {source} has shape {tuple(x.shape)} but the config "
                f"implies {want}; the config.json does not match the weights."
            )
        x = _to_ours(kind, x, tuple(var.shape))
        dtype = var.dtype
        if mesh is None:
            value = jnp.asarray(x, dtype=dtype)
        else:
            target = _raw(_lookup(shardings, path))
            x = np.asarray(x)

            def cb(index, x=x, dtype=dtype):
                return np.asarray(x[index], dtype=dtype)

            value = jax.make_array_from_callback(tuple(var.shape), target, cb)
        return var.replace(value)

    state = jax.tree_util.tree_map_with_path(load, abs_state, is_leaf=_is_var)
    return nnx.merge(graphdef, state)


def _raw(v: Any) -> Any:
    """A Variable's raw value (works for non-array values such as shardings)."""
    return v.get_value() if hasattr(v, "get_value") else v.value


def _lookup(tree, path):
    node = tree
    for k in _path_key(path):
        node = node[k]
    return node


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(
            f"Checkpoint directory {str(path)!r} does not exist; pass the folder that holds "
            "config.json and the *.safetensors files."
        )
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(
            f"{str(path)!r} has no config.json; it is not an HF checkpoint directory "
            "(save one with transformers' save_pretrained)."
        )
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON ({e}); re-save the checkpoint.") from e


def _architecture(d: Mapping[str, Any], source: str) -> str:
    archs = d.get("architectures") or []
    arch = archs[0] if archs else (CAUSAL if d.get("model_type") == "llama" else None)
    if arch not in SUPPORTED or d.get("model_type", "llama") != "llama":
        raise CheckpointError(
            f"{source} holds {arch or d.get('model_type')!r}; supported architectures are "
            f"{CAUSAL} and {SEQCLS} (num_labels=1) of model_type 'llama'."
        )
    if arch == SEQCLS:
        n = d.get("num_labels", len(d.get("id2label") or {}) or 2)
        if n != 1:
            raise CheckpointError(
                f"{source} is a {SEQCLS} with num_labels={n}; a verifier needs num_labels=1."
            )
    return arch


def _corrupt(file: Path, e: Exception) -> CheckpointError:
    return CheckpointError(
        f"{str(file)!r} is truncated or corrupt ({type(e).__name__}: {str(e)[:120]}); copy or "
        "re-export the checkpoint."
    )


def _safetensor_files(path: Path) -> dict[str, Path]:
    """HF tensor name -> file holding it."""
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = {name: path / fname for name, fname in weight_map.items()}
        absent = sorted({str(f.name) for f in files.values() if not f.is_file()})
        if absent:
            raise CheckpointError(
                f"{str(path)!r} is missing shard file(s) {', '.join(absent)} listed in "
                "model.safetensors.index.json; copy the complete checkpoint."
            )
        return files
    if single.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(single), framework="numpy") as f:
                return {name: single for name in f.keys()}
        except Exception as e:  # noqa: BLE001 - safetensors' own error types vary by version
            raise _corrupt(single, e) from None
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if found:
        raise CheckpointError(
            f"{str(path)!r} has {found} but neither model.safetensors nor "
            "model.safetensors.index.json; re-save with transformers' save_pretrained."
        )
    bins = sorted(p.name for p in path.glob("*.bin"))
    hint = " (it has PyTorch .bin files: re-save with safe_serialization=True)" if bins else ""
    raise CheckpointError(f"{str(path)!r} has no safetensors weights{hint}.")


def load_pretrained(
    path: str | os.PathLike,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: sh.LogicalRules = sh.DEFAULT_RULES,
    **config_overrides: Any,
) -> Llama | Verifier:
    """Loads an HF Llama checkpoint directory as our `Llama` or `Verifier`.

    Args:
      path: a directory with config.json and model.safetensors (or a sharded index).
      dtype: compute dtype.
      param_dtype: parameter dtype (default: ``dtype``; use float32 with bf16 compute for
        training).
      mesh: if given, every parameter is placed on its sharding from the logical
        ``rules``, one tensor at a time.
      **config_overrides: extra `LlamaConfig` fields (e.g. ``remat=True``).
    """
    path = Path(path)
    d = _read_config(path)
    source = f"checkpoint {str(path)!r}"
    arch = _architecture(d, source)
    config = LlamaConfig.from_hf(
        d,
        dtype=dtype,
        param_dtype=dtype if param_dtype is None else param_dtype,
        **config_overrides,
    )
    files = _safetensor_files(path)
    from safetensors import safe_open

    handles: dict[Path, Any] = {}

    def get(name: str) -> np.ndarray:
        f = files[name]
        try:
            if f not in handles:
                handles[f] = safe_open(str(f), framework="numpy")
            x = handles[f].get_tensor(name)
        except Exception as e:  # noqa: BLE001 - safetensors' own error types vary by version
            raise _corrupt(f, e) from None
        if x.dtype.kind not in "fV" and str(x.dtype) != "bfloat16":
            raise CheckpointError(f"Tensor {name!r} in {source} has dtype {x.dtype}, not a float.")
        return x

    try:
        return _build(
            config, arch == SEQCLS, get, set(files), source=source, mesh=mesh, rules=rules
        )
    finally:
        handles.clear()


def from_state_dict(
    tensors: Mapping[str, Any],
    config: LlamaConfig,
    *,
    verifier: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    rules: sh.LogicalRules = sh.DEFAULT_RULES,
) -> Llama | Verifier:
    """Builds our model from an HF state dict (numpy arrays or torch tensors)."""

    def get(name):
        x = tensors[name]
        if hasattr(x, "detach"):  # a torch tensor; we never import torch ourselves
            x = x.detach().float().cpu().numpy()
        return np.asarray(x)

    return _build(config, verifier, get, set(tensors), source="state dict", mesh=mesh, rules=rules)


def _to_host(x: jax.Array) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save_pretrained(
    model: Llama | Verifier,
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    max_shard_bytes: int = 5 * 1024**3,
) -> Path:
    """Writes ``model`` as an HF checkpoint directory (safetensors + config.json).

    The files are written to a temporary folder beside ``path`` and moved in at the
    end, so an interrupted save never leaves a half-written checkpoint where a
    good one was. Only process 0 writes in a multi-host job.

    Args:
      dtype: the dtype to store (default: the parameter dtype).
      max_shard_bytes: above this size the weights are split into shards with an index.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    verifier = isinstance(model, Verifier)
    config = model.config
    state = nnx.state(model, nnx.Param)
    flat = {}
    for p, var in jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_var)[0]:
        flat[_path_key(p)] = var
    tensors: dict[str, np.ndarray] = {}
    for ours, theirs, kind in _mapping(config, verifier):
        x = _to_host(flat[ours][...])
        if dtype is not None:
            x = x.astype(jnp.dtype(dtype))
        tensors[theirs] = _to_hf(kind, x)
    if jax.process_index() != 0:
        return path

    import transformers

    arch = SEQCLS if verifier else CAUSAL
    kwargs = config.hf_dict()
    if verifier:
        kwargs.update(num_labels=1)
    store_dtype = np.dtype(next(iter(tensors.values())).dtype)
    hf_config = transformers.LlamaConfig(architectures=[arch], **kwargs)
    dtype_field = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    setattr(hf_config, dtype_field, str(store_dtype))

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        hf_config.save_pretrained(tmp)
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for name, x in tensors.items():
            if size and size + x.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = x
            size += x.nbytes
        if len(shards) == 1:
            save_file(shards[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards):
                fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / fname), metadata={"format": "pt"})
                weight_map.update({name: fname for name in shard})
            index = {
                "metadata": {"total_size": int(sum(x.nbytes for x in tensors.values()))},
                "weight_map": weight_map,
            }
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        path.mkdir(parents=True, exist_ok=True)
        # Remove stale weight files of an earlier save, then move the new ones in.
        for old in list(path.glob("*.safetensors")) + [path / "model.safetensors.index.json"]:
            if old.exists() and not (tmp / old.name).exists():
                old.unlink()
        for f in tmp.iterdir():
            os.replace(f, path / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
