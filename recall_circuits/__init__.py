"""recall_circuits: how a language model recalls facts it was fine-tuned on, and why two-stage training fails
where mixed training generalises (a reference implementation of arXiv 2505.16178), on TransformerLens 4.x.

The front door: ``import recall_circuits as rc`` gives the entry points a notebook needs, imported on first use
(``import recall_circuits`` itself loads no torch)::

    import recall_circuits as rc
    pair = rc.load_pair("tiny-llama", "runs/quick/mixed/model")
    res = rc.cross_task_trace(pair.finetuned, rc.load_dataset("runs/quick/data"), rc.TraceConfig(n_people=4))

The subpackages follow the pipeline, each with a catalogue in its docstring: ``data`` (bioS people, BIO and QA),
``models`` (registry, loading into TransformerLens, the parameter map), ``training`` (the two recipes, evaluation,
intervals), ``attribution`` (the cross-task gradient trace and the shared set), ``compare`` (BIO vs QA: attention,
consistency), ``interventions`` (restores, head ablation, grafting, patching) and ``runs`` (run directories, the
reproduction and its report, the regime search, the CLI). ``results`` holds the base of every result type.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from recall_circuits.errors import RecallCircuitsError

__version__ = "0.1.0"

# every call's argument types and tensor shapes checked (jaxtyping + beartype), as the test suite runs: set
# RECALL_CIRCUITS_TYPECHECK=1 before the import (off by default: it slows every call; the entry points check their
# arguments themselves, recall_circuits.checks)
if os.environ.get("RECALL_CIRCUITS_TYPECHECK") == "1":
    from jaxtyping import install_import_hook

    install_import_hook("recall_circuits", "beartype.beartype")

_ENTRY_POINTS = {
    "recall_circuits.data.bios": ("DataConfig", "generate", "write_dataset", "load_dataset", "tokenize_qa",
                                  "tokenize_bio"),
    "recall_circuits.models.loading": ("load_bridge", "load_pair", "load_hf", "ModelPair"),
    "recall_circuits.models.params": ("ParamSpace", "head_views"),
    "recall_circuits.training.loop": ("TrainConfig", "train"),
    "recall_circuits.runs.stages.side_by_side": ("run_side_by_side",),
    "recall_circuits.training.evaluation": ("evaluate", "answer_logprob", "Evaluation"),
    "recall_circuits.training.intervals": ("accuracy_interval", "gap_interval"),
    "recall_circuits.training.curve": ("learning_curve", "LearningCurve", "run_points", "training_log",
                                       "TrainingLog", "loss_figure"),
    "recall_circuits.attribution.trace": ("TraceConfig", "cross_task_trace", "TraceResult"),
    "recall_circuits.attribution.shared": ("shared_mask", "top_k_mask", "shared_curve", "SharedCurve", "head_stats",
                                           "HeadStats"),
    "recall_circuits.compare.attention": ("role_masses", "RoleMasses"),
    "recall_circuits.compare.consistency": ("gradient_consistency", "representation_consistency", "input_signature",
                                            "gradient_consistency_along", "GradientConsistency",
                                            "RepresentationConsistency", "InputSignature", "ConsistencyAlong"),
    "recall_circuits.interventions.restore": ("restore_heads", "restore_params", "restore_ablation",
                                              "RestoreAblation"),
    "recall_circuits.interventions.head_ablation": ("head_curves", "single_head_sweep", "ranking", "HeadCurves",
                                                    "SingleHeadSweep"),
    "recall_circuits.interventions.grafting": ("GraftConfig", "graft", "GraftResult"),
    "recall_circuits.interventions.patching": ("patch_heads_by_pos", "patch_resid_by_pos", "attribution_patch_heads",
                                               "cross_format_patch", "logit_diff_metric", "qa_patching_pairs",
                                               "grid_to_dataframe", "patching_sweep", "PatchingResult"),
    "recall_circuits.results": ("Result", "head_label"),
    "recall_circuits.runs.pipeline": ("reproduce",),
}
# front-door names that differ from the defining function's
_ALIASES = {"cross_task_trace": "trace"}
_WHERE = {name: module for module, names in _ENTRY_POINTS.items() for name in names}
__all__ = ["RecallCircuitsError", "__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), _ALIASES.get(name, name))
        globals()[name] = value
        return value
    raise AttributeError(f"module 'recall_circuits' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
