"""Training: the two recipes (two-stage and mixed), their presets, and how the fine-tuned models are scored.

- :mod:`~recall_circuits.training.loop`: ``TrainConfig`` and ``train`` (Hugging Face models saved as safetensors,
  checkpoints and resume, snapshots, ``torchrun`` DDP / FSDP).
- :mod:`~recall_circuits.training.presets`: the named data and training presets (``tiny``, ``cpu``, GPU ones).
- :mod:`~recall_circuits.training.options`: the fine-tuning options (``analyses/finetune.py``'s, the regime
  search's arms) and the ``TrainConfig`` fields they give.
- :mod:`~recall_circuits.training.evaluation`: ``evaluate`` (an ``Evaluation``: QA exact match ID / OOD, BIO
  recall) and ``answer_logprob``.
- :mod:`~recall_circuits.training.curve`: ``learning_curve`` (a ``LearningCurve``: QA accuracy at every snapshot
  of a run, with intervals), ``run_points`` (a run's checkpoints along training) and ``training_log`` (a
  ``TrainingLog``: the training loss step by step, summarised over windows of steps; ``loss_figure``).
- :mod:`~recall_circuits.training.intervals`: bootstrap intervals over people for accuracies and the gap.
- :mod:`~recall_circuits.training.parallel`: the process group under ``torchrun``.
The runs that fine-tune (``results.json``, several runs side by side) are stages of the batch side:
:mod:`recall_circuits.runs.stages.finetune` and :mod:`recall_circuits.runs.stages.side_by_side`.
"""
