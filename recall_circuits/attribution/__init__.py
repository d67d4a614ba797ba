"""Attribution: which parameters the BIO and QA losses both move (the cross-task gradient trace).

- :mod:`~recall_circuits.attribution.trace`: ``TraceConfig``, ``trace`` (``rc.cross_task_trace``) → ``TraceResult``
  with the per-parameter influence of each task over a ``ParamSpace``.
- :mod:`~recall_circuits.attribution.shared`: top-k sets, the shared set S_k, ``shared_curve`` (``SharedCurve``),
  ``head_stats`` (``HeadStats``: where S sits per head, neuron and tensor) and random same-shape controls.
"""
