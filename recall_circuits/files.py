"""Every file and folder name the library writes or reads, and every schema version, in one place.

A run directory's layout is part of its contract with the scripts, the report and older runs: a name is spelled here
once and imported wherever it is used, so renaming a file is one change. This module imports nothing.
"""

from __future__ import annotations

# -- a stage's run directory (recall_circuits.artefacts) ------------------------------------------------------------
CONFIG_FILE = "config.json"            # resolved config, versions, checkpoint identities
SUMMARY_FILE = "summary.json"          # the stage's summary (and the reproduction's)
TENSORS_FILE = "result.safetensors"    # a stage's tensors
FIGURES_DIR = "figures"                # self-contained HTML figures
RUN_SCHEMA_VERSION = 1                 # config.json and summary.json of a stage

# -- a saved Result (recall_circuits.results) -----------------------------------------------------------------------
RESULT_META = "result.json"            # type name, schema version, JSON fields; tensors in TENSORS_FILE
RESULT_SCHEMA_VERSION = 1

# -- masks over a model's parameters (recall_circuits.interventions.restore) ----------------------------------------
SHARED_MASK_FILE = "shared_mask.safetensors"
GRAFT_MASK_FILE = "graft_mask.safetensors"

# -- a bioS dataset (recall_circuits.data.bios) -----------------------------------------------------------------
PEOPLE_FILE, BIO_FILE, QA_FILE, MANIFEST_FILE = "people.jsonl", "bio.jsonl", "qa.jsonl", "manifest.json"

# -- a fine-tuning run (recall_circuits.training) -----------------------------------------------------------------
TRAIN_META = "recall_circuits_train.json"   # the run's TrainConfig and identity, beside the HF checkpoint
METRICS_FILE = "metrics.jsonl"               # one line per optimiser step
SNAPSHOTS_DIR = "snapshots"                  # checkpoints along training
STATE_FILE = "trainer_state.json"            # resume state
RESULTS_FILE = "results.json"                # evaluation after training
CHECKPOINT_DIR = "checkpoint"                # the resume point (weights, optimiser, schedule, rng, state)
CHECKPOINT_WEIGHTS, CHECKPOINT_RNG = "model.safetensors", "rng.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.pt"        # torch.save of state dicts, read back with weights_only=True
SOURCE_FILE = "recall_circuits_source.json"  # beside a converted checkpoint: what it was converted from

# -- the reproduction (recall_circuits.runs.pipeline) ----------------------------------------------------------
REPORT_FILE = "report.html"
IDENTITY_FILE = "identity.json"              # what a pipeline stage was computed from
RUN_FILE = "run.json"                        # the reproduction's options

# -- the regime search (recall_circuits.runs.search) ------------------------------------------------------------
PAIR_FILE = "pair.json"                      # a finished pair's row, in its folder
TABLE_FILE = "table.md"                      # the finished pairs' table
