"""Models: where checkpoints come from, how they are loaded into TransformerLens, and the map of their parameters.

- :mod:`~recall_circuits.models.registry`: registry names (the embedded SmolLM2-135M default, tiny random models of
  five architectures built on the fly), the cache, and the float32 conversion of the default's GGUF file.
- :mod:`~recall_circuits.models.loading`: ``load_bridge`` / ``load_pair`` (``TransformerBridge`` in the raw weight
  basis, offline), ``load_hf`` for training, and helpers that run a bridge from a given layer.
- :mod:`~recall_circuits.models.params`: ``ParamSpace``, the flat layout of the analysed weights with per-head
  (GQA and fused-QKV aware) and per-neuron index sets; ``head_views`` and ``head_label``.
"""
