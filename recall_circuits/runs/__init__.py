"""Runs: the batch side. Stages write run directories; the orchestration above them chains the stages.

- :mod:`~recall_circuits.runs.stages`: one module per stage (fine-tuning, gradient trace, grafting, head ablation,
  activation patching, attention, consistency, learning curve), each a frozen ``<Stage>Config``, a typed
  ``<Stage>Summary`` and ``run(cfg)``; ``side_by_side`` runs stages in child processes with a share of the threads.
- :mod:`~recall_circuits.runs.pipeline`: ``reproduce`` (data → two recipes → every analysis → ``summary.json`` and
  ``report.html``), stage by stage, each resumable; :mod:`~recall_circuits.runs.analyse_recipe`: one recipe's
  analysis stages in a process of its own (on a CPU the two recipes' run side by side).
- :mod:`~recall_circuits.runs.verdicts`: the rules that decide the paper's five directions, and their premises.
- :mod:`~recall_circuits.runs.report`: ``report.html`` from ``summary.json``.
- :mod:`~recall_circuits.runs.regime`: the pre-registered regime search (plan, premise, decision rule) and
  :func:`~recall_circuits.runs.regime.run_search`, the search's orchestration.
- :mod:`~recall_circuits.runs.scale`: the pre-registered people-scaling study.
- :mod:`~recall_circuits.runs.demo`: the runs the notebooks in ``demos/`` use.

Run directories, atomic writes and identities (:mod:`recall_circuits.artefacts`), figures
(:mod:`recall_circuits.viz`) and the scripts' grammar (:mod:`recall_circuits.cli`) are the foundation, below every
other module.
"""
