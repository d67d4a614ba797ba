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
from typing import TYPE_CHECKING, Any

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
    "recall_circuits.training.loop": ("TrainConfig", "train", "build_phases"),
    "recall_circuits.training.presets": ("TRAIN_PRESETS", "DATA_PRESETS"),
    "recall_circuits.training.evaluation": ("evaluate", "answer_logprob", "Evaluation", "generate_answers"),
    "recall_circuits.training.intervals": ("accuracy_interval", "gap_interval"),
    "recall_circuits.training.curve": ("learning_curve", "LearningCurve", "run_points", "training_log",
                                       "TrainingLog", "loss_figure"),
    "recall_circuits.attribution.trace": ("TraceConfig", "cross_task_trace", "TraceResult"),
    "recall_circuits.attribution.shared": ("shared_mask", "top_k_mask", "shared_curve", "SharedCurve", "head_stats",
                                           "HeadStats", "count_per_head", "count_per_query_head", "count_per_neuron"),
    "recall_circuits.compare.attention": ("role_masses", "RoleMasses", "aligned_pairs", "circuitsvis_page"),
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
    "recall_circuits.viz": ("head_heatmap", "shared_curve_figure", "offline_notebook_figures"),
    "recall_circuits.runs.stages.side_by_side": ("run_side_by_side",),
    "recall_circuits.runs.pipeline": ("reproduce",),
    "recall_circuits.runs.demo": ("demo_run", "DemoRun"),
}
if TYPE_CHECKING:   # what rc.<name> is, for type checkers and editors (a test keeps it equal to _ENTRY_POINTS)
    from recall_circuits.attribution.shared import (
        HeadStats,
        SharedCurve,
        count_per_head,
        count_per_neuron,
        count_per_query_head,
        head_stats,
        shared_curve,
        shared_mask,
        top_k_mask,
    )
    from recall_circuits.attribution.trace import TraceConfig, TraceResult, cross_task_trace
    from recall_circuits.compare.attention import RoleMasses, aligned_pairs, circuitsvis_page, role_masses
    from recall_circuits.compare.consistency import (
        ConsistencyAlong,
        GradientConsistency,
        InputSignature,
        RepresentationConsistency,
        gradient_consistency,
        gradient_consistency_along,
        input_signature,
        representation_consistency,
    )
    from recall_circuits.data.bios import DataConfig, generate, load_dataset, tokenize_bio, tokenize_qa, write_dataset
    from recall_circuits.interventions.grafting import GraftConfig, GraftResult, graft
    from recall_circuits.interventions.head_ablation import (
        HeadCurves,
        SingleHeadSweep,
        head_curves,
        ranking,
        single_head_sweep,
    )
    from recall_circuits.interventions.patching import (
        PatchingResult,
        attribution_patch_heads,
        cross_format_patch,
        grid_to_dataframe,
        logit_diff_metric,
        patch_heads_by_pos,
        patch_resid_by_pos,
        patching_sweep,
        qa_patching_pairs,
    )
    from recall_circuits.interventions.restore import RestoreAblation, restore_ablation, restore_heads, restore_params
    from recall_circuits.models.loading import ModelPair, load_bridge, load_hf, load_pair
    from recall_circuits.models.params import ParamSpace, head_views
    from recall_circuits.results import Result, head_label
    from recall_circuits.runs.demo import DemoRun, demo_run
    from recall_circuits.runs.pipeline import reproduce
    from recall_circuits.runs.stages.side_by_side import run_side_by_side
    from recall_circuits.training.curve import (
        LearningCurve,
        TrainingLog,
        learning_curve,
        loss_figure,
        run_points,
        training_log,
    )
    from recall_circuits.training.evaluation import Evaluation, answer_logprob, evaluate, generate_answers
    from recall_circuits.training.intervals import accuracy_interval, gap_interval
    from recall_circuits.training.loop import TrainConfig, build_phases, train
    from recall_circuits.training.presets import DATA_PRESETS, TRAIN_PRESETS
    from recall_circuits.viz import head_heatmap, offline_notebook_figures, shared_curve_figure

_WHERE = {name: module for module, names in _ENTRY_POINTS.items() for name in names}
__all__ = ["RecallCircuitsError", "__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'recall_circuits' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
