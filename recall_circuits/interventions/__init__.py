"""Interventions: change the fine-tuned model and measure what recall loses.

- :mod:`~recall_circuits.interventions.restore`: ``restore_params`` / ``restore_heads`` (context managers that put
  pretrained values back and restore them afterwards) and ``restore_ablation`` (``RestoreAblation``).
- :mod:`~recall_circuits.interventions.head_ablation`: top-n head restores by ranking (``HeadCurves``) and the
  single-head sweep (``SingleHeadSweep``).
- :mod:`~recall_circuits.interventions.grafting`: the smallest part of the update that still recalls
  (``GraftResult``).
- :mod:`~recall_circuits.interventions.patching`: exact activation patching per head × position and per residual
  position, attribution patching, and BIO → QA patching by role (``PatchingResult``).
"""
