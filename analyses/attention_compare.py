r"""BIO vs QA attention, aligned by role, for several models (e.g. Mix-tuned, Stage-tuned, pretrained).

    python analyses/attention_compare.py --models mixed=runs/reproduce/mixed/model \
        two-stage=runs/reproduce/two-stage/model pretrained=smollm2-135m \
        --data runs/reproduce/data --out runs/attention

Writes per-head role masses and BIO–QA similarity (result.safetensors), labels (summary.json), plotly heatmaps
and side-by-side circuitsvis pages (figures/, offline).
"""

from __future__ import annotations

import argparse
import logging

from recall_circuits.cli import comma_list, model_set_parser, script

log = logging.getLogger("attention_compare")


def build_parser() -> argparse.ArgumentParser:
    ap = model_set_parser(__doc__)
    ap.add_argument("--attributes", type=comma_list(str, "attribute names"),
                    help="comma-separated attribute names (default: all)")
    ap.add_argument("--view-heads", type=int, default=4, help="heads drawn side by side in the circuitsvis pages")
    ap.add_argument("--threshold", type=float, default=0.3,
                    help="role mass above which a head counts as attending to a role")
    return ap


@script(build_parser)
def main(args: argparse.Namespace) -> int:
    from recall_circuits.models.loading import parse_model_specs
    from recall_circuits.runs.stages.attention import AttentionConfig, run

    run(AttentionConfig(parse_model_specs(args.models), args.data, args.out, n_people=args.people, split=args.split,
                        attributes=args.attributes, n_view_heads=args.view_heads, threshold=args.threshold,
                        overwrite=args.overwrite, verbose=args.progress, device=args.device, dtype=args.dtype))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
