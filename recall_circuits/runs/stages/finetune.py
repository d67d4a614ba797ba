"""Fine-tune + evaluate + ``results.json``: the library side of ``analyses/finetune.py``.

``python -m recall_circuits.runs.stages.finetune --config JSON [--resume] [--threads N]`` runs :func:`run_finetune` in a
process of its own (what :mod:`recall_circuits.runs.stages.side_by_side` starts for each run)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from recall_circuits.artefacts import check_same, read_json, write_json
from recall_circuits.data.bios import load_dataset
from recall_circuits.files import RESULTS_FILE, TRAIN_META
from recall_circuits.models.loading import load_hf
from recall_circuits.models.registry import resolve_model
from recall_circuits.training.evaluation import evaluate
from recall_circuits.training.loop import TrainConfig, train, train_identity
from recall_circuits.training.parallel import is_main, process_group


def run_finetune(cfg_dict: dict[str, Any], *, resume: bool = False, overwrite: bool = False,
                 verbose: bool = True, stop_after_steps: int | None = None) -> dict[str, Any] | None:
    """Train with ``cfg_dict`` (TrainConfig fields), evaluate the final model (and two-stage's after-BIO model)
    and write ``results.json``. Returns the results on rank 0, None elsewhere (and None when
    ``stop_after_steps``, which simulates an interruption, stopped the training before its end)."""
    cfg = TrainConfig(**cfg_dict)
    with process_group():
        out = Path(cfg.out)
        if resume and (out / RESULTS_FILE).is_file():

            check_same(read_json(out / TRAIN_META).get("identity"), train_identity(cfg, resolve_model(cfg.model)), out)
            return read_json(out / RESULTS_FILE)
        t0 = time.time()
        model_dir = train(cfg, resume=resume, overwrite=overwrite, verbose=verbose, stop_after_steps=stop_after_steps)
        if not is_main() or model_dir.name != "model":
            return None
        train_meta = read_json(out / TRAIN_META)
        ds = load_dataset(cfg.data)
        model, tok = load_hf(model_dir, device=cfg.device)
        results: dict[str, Any] = {"strategy": cfg.strategy, **evaluate(model, tok, ds, batch_size=cfg.eval_batch_size,
                                                                          floor=True).to_dict()}
        if cfg.strategy == "two-stage" and (out / "after_bio").is_dir():
            ab, _ = load_hf(out / "after_bio", device=cfg.device)
            results["after_bio"] = evaluate(ab, tok, ds, batch_size=cfg.eval_batch_size, floor=True).to_dict()
        results["train_wall_s"] = train_meta.get("wall_s")
        results["wall_s"] = time.time() - t0
        results["steps"] = train_meta.get("steps")
        results["config"] = cfg.to_dict()
        results["data_manifest"] = ds.manifest
        results["torch_version"] = torch.__version__
        results["torch_threads"] = torch.get_num_threads()
        write_json(out / RESULTS_FILE, results, indent=2, sort_keys=True)
        return results


def main(argv: list[str] | None = None) -> int:
    """One run in a process of its own; exit status 0 when it finished (or stopped where it was told to)."""
    ap = argparse.ArgumentParser(prog="python -m recall_circuits.runs.stages.finetune", description=__doc__)
    ap.add_argument("--config", required=True, help="TrainConfig fields as JSON")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    run_finetune(json.loads(args.config), resume=args.resume, verbose=not args.no_progress,
                 stop_after_steps=args.stop_after_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
