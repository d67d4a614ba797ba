"""The reproduction's ``summary.json`` as typed dictionaries: what :func:`~recall_circuits.runs.verdicts.summarise`
and :func:`~recall_circuits.runs.pipeline.reproduce` write and :mod:`~recall_circuits.runs.report` reads. The file
stays plain JSON (a ``TypedDict`` is a ``dict`` at run time); a key renamed on one side and not the other is a
type-checker error (``mypy``, in CI) instead of a report that fails when it renders."""

from __future__ import annotations

from typing import Any, TypedDict


class Direction(TypedDict, total=False):
    """One of the paper's five directions: the rule's outcome, the verdict under its premise, the numbers."""

    name: str
    reproduced: bool | None
    measured: dict[str, Any] | str      # the numbers and the rule that decided; "not run"
    paper: str
    premise: str
    premise_holds: bool
    rule_outcome: bool | None
    verdict: str                        # reproduced / not reproduced / undecided / not run


class TraceRow(TypedDict):
    """A recipe's gradient trace as the summary keeps it (:data:`~recall_circuits.runs.verdicts.TRACE_KEYS`)."""

    k: int
    P: int
    shared_fraction: float
    chance_fraction: float
    curve: dict[str, Any]
    shared_fraction_pretrained: float | None
    curve_pretrained: dict[str, Any] | None
    top10pct_head_share: float
    head_gini: float
    ablation: dict[str, dict[str, Any]] | None
    top_heads: list[dict[str, Any]]


class PatchingRow(TypedDict):
    corrupted_metric: list[float]
    clean_metric: list[float]
    roles: list[str]
    cross_format_by_layer_role: list[list[float]]
    attribution_vs_exact_corr: float


class GraftRow(TypedDict):
    alpha: float
    graft_size: int
    P: int
    grafted: dict[str, float]
    shared_share_of_graft: float | None
    grafted_without_shared: dict[str, float] | None
    acc_lost_without_shared: dict[str, float] | None


class SingleHead(TypedDict):
    baseline: dict[str, float] | None
    top_ood_drop: list[dict[str, Any]] | None
    top_id_logprob_drop: list[dict[str, Any]]


class ReproductionSummary(TypedDict, total=False):
    """``summary.json`` of a reproduction (every section optional: the report renders what a summary holds)."""

    directions: list[Direction]
    runs: dict[str, dict[str, Any]]              # recipe → headline numbers (verdicts.headline)
    per_attribute: dict[str, dict[str, Any]]
    sensitivity: list[dict[str, Any]]
    traces: dict[str, TraceRow]
    head_curves: dict[str, dict[str, dict[str, Any]]]
    head_gqa_note: str
    single_head: dict[str, SingleHead]
    patching: dict[str, PatchingRow]
    attention: dict[str, dict[str, Any]]
    grafting: dict[str, GraftRow]
    consistency_probe: dict[str, Any]
    gradient_consistency_along: dict[str, list[dict[str, Any]]] | None
    preset: str
    training: dict[str, dict[str, Any]]
    training_loss: dict[str, list[dict[str, Any]]]
    models: dict[str, dict[str, Any]]
    data: dict[str, Any]
    wall_s_this_invocation: float | None
    stale: dict[str, str]
    search: dict[str, Any]
