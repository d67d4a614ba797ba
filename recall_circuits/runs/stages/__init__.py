"""Stages: one module per kind of run directory, each a frozen ``<Stage>Config``, a typed ``<Stage>Summary``
(:class:`~recall_circuits.runs.stages.base.StageSummary`, its ``summary.json``) and ``run(cfg)``.

- :mod:`~recall_circuits.runs.stages.finetune`: fine-tune, evaluate, ``results.json`` (``analyses/finetune.py``;
  ``python -m recall_circuits.runs.stages.finetune`` in a process of its own);
  :mod:`~recall_circuits.runs.stages.side_by_side`: several fine-tunings at once, each in its own process.
- :mod:`~recall_circuits.runs.stages.trace`: gradient trace, shared set, head statistics, restore ablation.
- :mod:`~recall_circuits.runs.stages.graft`: grafting, read against a trace's shared set.
- :mod:`~recall_circuits.runs.stages.heads`: head-ablation curves by ranking and the single-head sweep.
- :mod:`~recall_circuits.runs.stages.patching`: activation and attribution patching, BIO → QA by role.
- :mod:`~recall_circuits.runs.stages.attention`: BIO vs QA attention by role.
- :mod:`~recall_circuits.runs.stages.consistency`: gradient / representation consistency, probe, signature.
- :mod:`~recall_circuits.runs.stages.curve`: learning curves of several runs.
"""
