"""Runs: the batch side: run directories, the end-to-end reproduction and its report, the regime search, the CLI.

- :mod:`~recall_circuits.runs.artefacts`: run directories with identities (refuse a changed rerun, resume),
  atomic safetensors / JSON writes, offline HTML figures.
- :mod:`~recall_circuits.runs.pipeline`: ``reproduce`` (data → two recipes → every analysis → ``summary.json`` and
  ``report.html``), stage by stage, each resumable; :mod:`~recall_circuits.runs.analyse_recipe`: one recipe's
  analysis stages in a process of its own (on a CPU the two recipes' run side by side).
- :mod:`~recall_circuits.runs.verdicts`: the rules that decide the paper's five directions, and their premises.
- :mod:`~recall_circuits.runs.report`: ``report.html`` from ``summary.json``.
- :mod:`~recall_circuits.runs.gradient_trace`: the trace run behind ``analyses/gradient_trace.py``.
- :mod:`~recall_circuits.runs.regime`: the pre-registered regime search (plan, premise, decision rule).
- :mod:`~recall_circuits.runs.cli`: the scripts' one grammar (``@script``, shared flags, the one-line error).
- :mod:`~recall_circuits.runs.demo`: the runs the notebooks in ``demos/`` use; :mod:`~recall_circuits.runs.viz`:
  plotly figures.
"""
