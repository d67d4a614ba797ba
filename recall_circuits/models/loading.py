"""Load checkpoints into TransformerLens 4.x ``TransformerBridge`` offline, in the raw weight basis.

No ``fold_ln`` or other weight processing: base and fine-tuned weights stay comparable entry by entry
(weight processing would rewrite them differently per model). Bridges are for analysis; training uses plain
Hugging Face models (:func:`load_hf`).

Example::

    model = rc.load_bridge("tiny-llama")                       # registry name or checkpoint directory
    pair = rc.load_pair("tiny-llama", "runs/quick/mixed/model")  # a ModelPair: pair.base, pair.finetuned
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from recall_circuits.artefacts import read_json
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import TRAIN_META
from recall_circuits.hints import Bridge
from recall_circuits.models.registry import offline_and_quiet, resolve_model

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


# attributes where TransformerLens's attention bridges keep the last forward's attention (None when built)
_KEPT_ACTIVATIONS = ("_pattern", "_attn_scores")


@contextlib.contextmanager
def gradients_for(model: Bridge, params: Iterable[torch.Tensor]) -> Iterator[None]:
    """Within the block exactly ``params`` of ``model`` require gradients; on leaving it (also on an error) every
    parameter's ``requires_grad`` is what it was, the ``params``' ``.grad`` is None and :func:`forget_graph` has run."""
    params = list(params)
    saved = [(q, q.requires_grad) for q in model.parameters()]
    try:
        for q, _ in saved:
            q.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        forget_graph(model)
        for p in params:
            p.grad = None
        for p, r in saved:
            p.requires_grad_(r)


def forget_graph(model: Bridge) -> None:
    """Drop what a bridge kept of its last forward that still holds an autograd graph.

    TransformerLens's joint-QKV attention bridges keep the last attention pattern on the module; after a forward
    with gradients on, that tensor holds the whole graph (memory) and the model can no longer be deep-copied. Every
    gradient pass of this library calls this in its ``finally``, putting those attributes back to their initial
    ``None``; nothing else on the model is touched.
    """
    for module in model.modules():
        for name in _KEPT_ACTIVATIONS:
            value = module.__dict__.get(name)
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                setattr(module, name, None)


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise RecallCircuitsError(f"unknown dtype {dtype!r}; choose from {list(DTYPES)}")
    return DTYPES[dtype]


def load_tokenizer(name_or_dir: str | os.PathLike[str]) -> Any:
    """The checkpoint's tokenizer (saved with it: ``tokenizer.save_pretrained(dir)``); a checkpoint without one is
    a one-line error."""
    from transformers import AutoTokenizer  # noqa: PLC0415  (transformers loads only when a model or tokenizer does)

    path = resolve_model(name_or_dir)
    try:
        with offline_and_quiet():
            tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - whatever the tokenizer class raises, the cause is the folder
        has = sorted(f.name for f in Path(path).glob("*token*")) or ["no tokenizer files"]
        raise RecallCircuitsError(f"{path} has no usable tokenizer ({', '.join(has)}): save the tokenizer with the "
                                  f"model (tokenizer.save_pretrained(dir)); {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_hf(name_or_dir: str | os.PathLike[str], *, device: str = "cpu",
            dtype: str | torch.dtype = "float32") -> tuple[Any, Any]:
    """A plain Hugging Face causal LM (eager attention) and its tokenizer, for training and fast evaluation."""
    # transformers loads only when a model or tokenizer does
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    path = resolve_model(name_or_dir)
    with offline_and_quiet():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=parse_dtype(dtype), attn_implementation="eager")
    return cast(Any, model).to(device), load_tokenizer(path)   # (transformers' typing of .to misleads mypy)


# the self-check's tolerance: max |bridge logits - Hugging Face logits| over the largest |logit|, by load dtype
SELF_CHECK_TOL = {torch.float32: 1e-4, torch.float64: 1e-6, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def _architecture(path: Path) -> str:
    try:
        return ", ".join(json.loads((path / "config.json").read_text()).get("architectures") or ["?"])
    except (OSError, ValueError):
        return "?"


def check_bridge(bridge: Bridge, path: str | os.PathLike[str], *, on_mismatch: str = "error") -> float:
    """Compare the bridge's logits with the Hugging Face model's own (loaded afresh from ``path``) on one short
    input; return the relative difference (max |Δ| over the largest |logit|). Above ``SELF_CHECK_TOL`` for the
    bridge's dtype: a one-line error naming the architecture and the difference (``on_mismatch="warn"``: a
    warning; ``"off"``: not checked, 0.0)."""
    # transformers loads only when a model or tokenizer does
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    if on_mismatch not in ("error", "warn", "off"):
        raise RecallCircuitsError(f"on_mismatch must be error, warn or off, not {on_mismatch!r}")
    if on_mismatch == "off":
        return 0.0
    path = Path(path)
    dtype = next(bridge.parameters()).dtype
    with offline_and_quiet():
        ref = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    ref.eval()
    ids = ((torch.arange(8) * 7 + 5) % bridge.cfg.d_vocab).unsqueeze(0)
    with torch.inference_mode():
        want = ref(input_ids=ids).logits.float()
        got = bridge(ids.to(bridge.cfg.device)).float().cpu()
    rel = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    tol = SELF_CHECK_TOL.get(dtype, 1e-4)
    if rel > tol:
        msg = (f"{path} ({_architecture(path)}): the TransformerBridge computes other logits than the Hugging Face "
               f"model (max |difference| {rel:.2g} of the largest logit, tolerance {tol:g}); every analysis of it "
               "would be wrong")
        if on_mismatch == "error":
            raise RecallCircuitsError(msg + " (on_mismatch='warn' loads it anyway)")
        log.warning("%s", msg)
    return rel


def load_bridge(name_or_dir: str | os.PathLike[str], *, device: str = "cpu",
                dtype: str | torch.dtype = "float32", on_mismatch: str = "error") -> Any:
    """A ``TransformerBridge`` in eval mode, raw weights (no folding), loaded from a local directory only, and
    checked against the Hugging Face model it wraps (:func:`check_bridge`; ``on_mismatch``: ``error``, ``warn``
    or ``off``). A failure inside TransformerLens is one line naming the checkpoint and its architecture."""
    # TransformerLens loads only when a bridge does
    from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415

    path = resolve_model(name_or_dir)
    try:
        with offline_and_quiet():
            bridge = TransformerBridge.boot_transformers(str(path), device=device, dtype=parse_dtype(dtype))
    except Exception as exc:  # noqa: BLE001 - TransformerLens raises many kinds; the user needs the one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise RecallCircuitsError(f"could not load {path} ({_architecture(Path(path))}) into a TransformerBridge: "
                                  f"{type(exc).__name__}: {first}") from exc
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    check_bridge(bridge, path, on_mismatch=on_mismatch)
    return bridge


def parse_model_specs(specs: list[str], what: str = "--models") -> dict[str, str]:
    """``["mixed=DIR", "base=smollm2-135m"]`` → ``{"mixed": "DIR", "base": "smollm2-135m"}`` (scripts' --models)."""
    models = {}
    for spec in specs:
        if "=" not in spec:
            raise RecallCircuitsError(f"{what} takes NAME=PATH, got {spec!r}")
        name, path = spec.split("=", 1)
        if not name or not path or name in models:
            raise RecallCircuitsError(f"{what} takes distinct NAME=PATH, got {spec!r}")
        models[name] = path
    return models


@dataclass
class ModelPair:
    """A pretrained bridge and a fine-tuned bridge of the same architecture, shapes and tokenizer."""

    base: Any
    finetuned: Any
    base_path: str
    finetuned_path: str


def check_same_architecture(base: Bridge, ft: Bridge) -> None:
    """Raise a one-line error unless ``base`` and ``ft`` share architecture, parameter names/shapes and tokenizer."""
    a, b = base.cfg, ft.cfg
    for attr in ("architecture", "n_layers", "n_heads", "d_model", "d_head", "d_vocab"):
        if getattr(a, attr, None) != getattr(b, attr, None):
            raise RecallCircuitsError(f"base and fine-tuned models differ in {attr}: "
                                      f"{getattr(a, attr, None)} vs {getattr(b, attr, None)}")
    sa, sb = base.state_dict(), ft.state_dict()
    if sa.keys() != sb.keys():
        diff = sorted(set(sa) ^ set(sb))[:3]
        raise RecallCircuitsError(f"base and fine-tuned models have different parameters (e.g. {diff})")
    for k in sa:
        if sa[k].shape != sb[k].shape:
            raise RecallCircuitsError(f"parameter {k} has shape {tuple(sa[k].shape)} in base, "
                                      f"{tuple(sb[k].shape)} in fine-tuned")
    ta, tb = getattr(base, "tokenizer", None), getattr(ft, "tokenizer", None)
    if ta is not None and tb is not None and ta.get_vocab() != tb.get_vocab():
        raise RecallCircuitsError("base and fine-tuned models use different tokenizers (vocabularies differ)")


def load_pair(base: str | os.PathLike[str], finetuned: str | os.PathLike[str], *, device: str = "cpu",
              dtype: str | torch.dtype = "float32") -> ModelPair:
    """Load (pretrained, fine-tuned) bridges and check they are comparable."""
    b = load_bridge(base, device=device, dtype=dtype)
    f = load_bridge(finetuned, device=device, dtype=dtype)
    check_same_architecture(b, f)
    return ModelPair(b, f, str(resolve_model(base)), str(resolve_model(finetuned)))


def finetuned_base_name(ckpt: str | os.PathLike[str]) -> str | None:
    """The base model recorded next to a checkpoint written by :mod:`recall_circuits.training.loop`, if any."""
    meta = Path(ckpt) / TRAIN_META
    if meta.is_file():
        return read_json(meta).get("base_model")
    return None


def _pass_through(*args: Any, **kwargs: Any) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def run_from_layer(model: Bridge, resid: torch.Tensor, layer: int, **kwargs: Any) -> Any:
    """``model(resid, start_at_layer=layer, **kwargs)`` without computing blocks ``0..layer-1``.

    The bridge's ``start_at_layer`` still runs the blocks before ``layer`` and discards their output (the residual
    is swapped in at block ``layer``). Here those blocks' wrapped Hugging Face layers return their input unchanged
    for the duration of the call, so the cost falls with the start layer; the result is the same (the discarded
    values never reach block ``layer``). Hooks on the skipped blocks' inner components do not fire.
    """
    skipped = [b.original_component for b in model.blocks[:layer]]
    for comp in skipped:
        comp.forward = _pass_through  # instance attribute shadows the class's forward
    try:
        return model(resid, start_at_layer=layer, **kwargs)
    finally:
        for comp in skipped:
            del comp.forward


class _StopAtFinalNorm(Exception):
    pass


def normed_from_layer(model: Bridge, resid: torch.Tensor, layer: int, pick: Any,
                      fwd_hooks: list[tuple[str, Any]] | None = None, **kwargs: Any) -> torch.Tensor:
    """Run blocks ``layer..`` on ``resid`` (:func:`run_from_layer`, with ``fwd_hooks`` and ``kwargs``, e.g. a
    ``past_key_values`` prefix) and return the rows ``pick`` selects from the final-norm output (e.g.
    ``lambda x: x[:, -1]``); the unembedding does not run."""
    box: dict[str, torch.Tensor] = {}

    def grab(module: Any, inputs: Any, output: torch.Tensor) -> None:
        box["x"] = pick(output)
        raise _StopAtFinalNorm

    handle = model.ln_final.register_forward_hook(grab)
    try:
        with model.hooks(fwd_hooks=fwd_hooks or []):
            run_from_layer(model, resid, layer, **kwargs)
    except _StopAtFinalNorm:
        pass
    finally:
        handle.remove()
    return box["x"]


def logits_from_layer(model: Bridge, resid: torch.Tensor, layer: int, pick: Any,
                      fwd_hooks: list[tuple[str, Any]] | None = None, **kwargs: Any) -> torch.Tensor:
    """:func:`normed_from_layer` followed by the unembedding of the picked rows only."""
    return model.unembed(normed_from_layer(model, resid, layer, pick, fwd_hooks, **kwargs))


_KV_FORMS: tuple[tuple[str, ...], ...] = (("past_key_values",), ("past_key_values", "layer_past"))


def kv_cache_kwargs(model: Bridge) -> tuple[str, ...] | None:
    """The keyword names under which this bridge both fills and reads a Hugging Face key/value cache, or None.

    Which names reach the bridge's attention depends on the architecture and on the transformers version (from
    5.24 the attention layers receive the cache as ``cache``, which TransformerLens 4.3's attention bridge does not
    read; ``layer_past`` it does). Found by a probe, never assumed: four tokens run whole and as 2 + 2 with each
    candidate; the first whose second half matches the whole run is returned. Pass the cache under every returned
    name (``dict.fromkeys(names, cache)``)."""
    from transformers import DynamicCache  # noqa: PLC0415  (transformers loads only when a model or tokenizer does)

    toks = (torch.arange(4, device=model.cfg.device) % model.cfg.d_vocab).unsqueeze(0)
    with torch.inference_mode():
        whole = model(toks)[:, 2:]
        for names in _KV_FORMS:
            try:
                _, kv = model(toks[:, :2], return_type="logits_and_cache",
                              **dict.fromkeys(names, DynamicCache(config=hf_config(model))))
                if kv is None or not hasattr(kv, "layers") or any(lay.keys is None for lay in kv.layers):
                    continue
                part = model(toks[:, 2:], **dict.fromkeys(names, kv))
            except (TypeError, ValueError, RuntimeError):
                continue
            if torch.allclose(part.float(), whole.float(), rtol=1e-3, atol=1e-4):
                return names
    return None


def hf_config(model: Bridge) -> Any:
    """The Hugging Face config of the model a bridge wraps."""
    return cast(Any, model.original_model).config


def tile_cache(model: Bridge, cache: Any, reps: int, *, upto: int | None = None) -> Any:
    """A fresh Hugging Face key/value cache for runs after a shared prefix: every layer of ``cache`` (positions
    ``< upto``, default all) tiled ``reps`` times along the batch axis (``Tensor.repeat``'s row order)."""
    from transformers import DynamicCache  # noqa: PLC0415  (transformers loads only when a model or tokenizer does)

    new = DynamicCache(config=hf_config(model))
    for i, lay in enumerate(cache.layers):
        new.update(lay.keys[:, :, :upto].repeat(reps, 1, 1, 1), lay.values[:, :, :upto].repeat(reps, 1, 1, 1), i)
    return new
