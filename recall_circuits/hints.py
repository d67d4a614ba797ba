"""The model and tokenizer types of public signatures, for type checkers and editors, without importing them.

``model: Bridge`` reads as :class:`transformer_lens.model_bridge.TransformerBridge` to mypy, pyright and an editor
(hover, completion, go-to-definition); ``HFModel`` is :class:`transformers.PreTrainedModel` (training saves and
loads plain Hugging Face models), ``LanguageModel`` either (evaluation scores both), ``Tokenizer``
:class:`transformers.PreTrainedTokenizerBase`. At run time the names are ``typing.Any``: importing TransformerLens
or transformers costs seconds that modules which only name the types (and the suite's run-time type checks) need
not pay. A function that needs the real class imports it where it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    Bridge = TransformerBridge
    HFModel = PreTrainedModel
    LanguageModel = TransformerBridge | PreTrainedModel
    Tokenizer = PreTrainedTokenizerBase
else:
    Bridge = HFModel = LanguageModel = Tokenizer = Any

__all__ = ["Bridge", "HFModel", "LanguageModel", "Tokenizer"]
