"""The reproduction's report: one self-contained offline HTML page (plotly.js and the circuitsvis bundle once) that
reads like a results section. First what was run (models and data with their identities, preset, wall times, each
recipe's training loss over windows of steps) and the headline accuracies with their intervals; then one section per
direction of the paper, each with a one-sentence verdict, our numbers beside the paper's, the figure that shows it
and the rule that decided it; then the further analyses (grafting, patching, single heads, attention, learning-rate
sensitivity). A reproduction of the ``cpu`` preset also shows where the pre-registered regime search that sets the
preset stands (``summary["search"]``): a sentence in the headline, and its table and gaps after it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from recall_circuits.artefacts import load_tensors, write_text_atomic
from recall_circuits.files import TENSORS_FILE
from recall_circuits.runs.stages.trace import PRETRAINED_LABEL
from recall_circuits.runs.summary import Direction, ReproductionSummary
from recall_circuits.runs.verdicts import PREMISE_LEARNED
from recall_circuits.training.curve import windows_figure
from recall_circuits.viz import head_heatmap, share_circuitsvis, shared_curve_figure

ACCURACIES = {"qa_id_acc": "QA-ID", "qa_ood_acc": "QA-OOD", "qa_floor_acc": "QA-OOD chance floor",
              "bio_recall_id": "BIO recall ID", "bio_recall_ood": "BIO recall OOD"}
TITLES = {
    "qa_ood_gap": "Mixed training answers questions about people whose QA it never saw; two-stage does not",
    "shared_fraction": "Mixed training makes more shared parameters (moved by both the BIO and the QA loss)",
    "head_concentration": "The shared parameters concentrate in a few attention heads, more so under mixed",
    "restore_ablation": "Restoring the shared parameters to pretrained values destroys mixed training's recall",
    "consistency": "Mixed training makes the two formats' gradients and representations more alike",
}


def _f(v: Any, digits: int = 3) -> str:
    """Floats to ``digits`` places; counts, text and the rest as they are."""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _with_ci(value: Any, ci: Any) -> str:
    """``0.030 [0.010, 0.050]`` (the value alone when there is no interval)."""
    return f"{_f(value)} [{_f(ci[0])}, {_f(ci[1])}]" if ci else _f(value)


def _interval(d: dict[str, float]) -> str:
    """A ``{"value", "low", "high"}`` interval as :func:`_with_ci` writes it."""
    return _with_ci(d["value"], (d["low"], d["high"]))


def _pct(v: float | int) -> str:
    return f"{100 * v:.0f}%"


def _measured(summary: ReproductionSummary, name: str) -> dict[str, Any] | None:
    """The numbers direction ``name`` measured, or None when it was not run."""
    d = next((d for d in summary["directions"] if d["name"] == name), None)
    return d["measured"] if d and isinstance(d["measured"], dict) else None


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_f(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _floor_sentence(m: dict[str, Any]) -> str:
    """The QA-OOD chance floor (each OOD question scored against another OOD person's answer), when measured."""
    if m.get("mixed_above_floor") is None or m.get("two_stage_above_floor") is None:
        return ""
    return (f" Answering with another OOD person's answers scores {_f(m['mixed_qa_floor'])} (mixed) and "
            f"{_f(m['two_stage_qa_floor'])} (two-stage), the chance floor: QA-OOD above it by "
            f"{_interval(m['mixed_above_floor'])} and {_interval(m['two_stage_above_floor'])}.")


def _sentence(d: Direction) -> str:
    """What this run measured for direction ``d``, in one sentence."""
    m = d["measured"]
    if not isinstance(m, dict):
        return "Not run in this reproduction."
    name = d["name"]
    if name == "qa_ood_gap":
        return (f"Mixed answers {_f(m['mixed_qa_ood'])} of the QA-OOD questions and two-stage "
                f"{_f(m['two_stage_qa_ood'])} (exact match): a gap of {_with_ci(m['gap'], m.get('gap_ci95'))}, "
                f"with QA-ID {_f(m['mixed_qa_id'], 2)} (mixed) and {_f(m['two_stage_qa_id'], 2)} (two-stage) and "
                f"BIO recall at least {_f(m['min_bio_recall'], 2)}.{_floor_sentence(m)}")
    if name == "shared_fraction":
        pre = "" if m.get("pretrained") is None else f", the pretrained model {_f(m['pretrained'])}"
        return (f"At k = {m['k']:,}, |S_k|/k is {_f(m['mixed'])} under mixed and {_f(m['two_stage'])} under two-stage "
                f"(ratio {_f(m['ratio_mixed_over_stage'], 2)}{pre}; two random k-sets overlap at "
                f"{_f(m['chance'], 4)}).")
    if name == "head_concentration":
        return (f"The top 10% of heads hold {_pct(m['mixed_top10pct_head_share'])} of the attention-shared entries "
                f"under mixed and {_pct(m['two_stage_top10pct_head_share'])} under two-stage (Gini "
                f"{_f(m['mixed_head_gini'], 2)} vs {_f(m['two_stage_head_gini'], 2)}).")
    if name == "restore_ablation":
        mo, to = m["mixed_qa_ood"], m["two_stage_qa_ood"]
        return (f"Restoring S costs mixed {_pct(m['mixed_rel_qa_ood_drop_shared'])} of its QA-OOD accuracy "
                f"({_f(mo['none'])} → {_f(mo['shared'])}) and two-stage "
                f"{_pct(m['two_stage_rel_qa_ood_drop_shared'])} "
                f"({_f(to['none'])} → {_f(to['shared'])}); the costliest random same-size set costs mixed "
                f"{_pct(m['mixed_rel_qa_ood_drop_random_max'])}.")
    if name == "consistency":
        return (f"Mixed vs two-stage: gradient cosine {_f(m['mixed_gradient_cosine'])} vs "
                f"{_f(m['two_stage_gradient_cosine'])}, mean representation cosine "
                f"{_f(m['mixed_mean_representation_cosine'])} vs {_f(m['two_stage_mean_representation_cosine'])}, "
                f"BIO input share on subject + relation {_f(m['mixed_subject_relation_share'])} vs "
                f"{_f(m['two_stage_subject_relation_share'])}.")
    return ""


def _verdict_word(d: Direction) -> str:
    v = d.get("verdict", "not run")
    css = {"reproduced": "yes", "not reproduced": "no"}.get(v, "undecided")
    return f"<b class='{css}'>{html.escape(v[0].upper() + v[1:])}</b>"


def _verdict(d: Direction, learned: bool = True) -> str:
    """The verdict in bold, and for "undecided" which premise failed and what the rule alone gives."""
    if d.get("verdict") != "undecided":
        return _verdict_word(d) + "."
    why = ("the models did not learn what they were trained on (QA-ID or BIO recall below 0.9)" if not learned
           else "there is no QA-OOD gap for it to explain")
    rule = "holds" if d.get("rule_outcome") else "does not hold"
    return f"{_verdict_word(d)}: {why}; its rule, applied to these numbers anyway, {rule}."


def _direction(i: int, d: Direction, figures: list[str], learned: bool) -> str:
    m = d["measured"]
    rule = m.get("rule", "") if isinstance(m, dict) else ""
    return (f"<section><h2>{i}. {html.escape(TITLES.get(d['name'], d['name']))}</h2>"
            f"<p class='verdict'>{_verdict(d, learned)} <b>Here:</b> {html.escape(_sentence(d))}</p>"
            f"<p><b>Paper:</b> {html.escape(d['paper'])}</p>"
            + "".join(figures)
            + (f"<p class='rule'><b>Rule</b> ({html.escape(d['name'])}): {html.escape(rule)}. <b>Premise:</b> "
               f"{html.escape(d.get('premise', ''))}.</p>" if rule else "")
            + "</section>")


def _plot(fig: Any) -> str:
    import plotly.io as pio  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    return pio.to_html(fig, full_html=False, include_plotlyjs=False)


def _training_table(training: dict[str, dict[str, Any]]) -> str:
    """Each recipe's fine-tuning settings: passes, rate and schedule, batch, embedding, precision, steps."""
    def passes(s: str, t: dict[str, Any]) -> str:
        if s == "two-stage":
            bio = t["epochs"] if t.get("bio_epochs") is None else t["bio_epochs"]
            return f"{bio} BIO, then {t['epochs']} QA"
        return f"{t['epochs']} (QA ×{t.get('mix_qa_repeat') or 1} per pass)"

    rows = [[s, passes(s, t), f"{t['lr']:g}" + (f" (QA phase {t['qa_lr']:g})" if t.get("qa_lr") else ""),
             f"{t['schedule']} after {t['warmup_frac']:.0%} warm-up", t["batch_size"],
             "frozen" if t.get("freeze_embeddings") else "trained",
             "bfloat16 autocast" if t.get("bf16") else "float32", t["seed"], t.get("steps")]
            for s, t in training.items() if t.get("epochs") is not None]
    return _table(rows, ["recipe", "passes", "learning rate", "schedule", "batch", "tied embedding", "precision",
                         "seed", "optimiser steps"]) if rows else ""


def _what_was_run(summary: ReproductionSummary) -> str:
    rows = []
    for role, m in (summary.get("models") or {}).items():
        digest = ", ".join(f"{f} sha256 {h[:12]}…" for f, h in m.get("sha256", {}).items())
        rows.append([role, m.get("name") or m.get("path"), digest])
    if summary.get("data"):
        d = summary["data"]
        cfg = d.get("config") or {}
        rows.append(["data", d["path"], f"{cfg.get('n_people')} people, seed {cfg.get('seed')}, "
                     f"{'full-name' if cfg.get('fullname') else 'pronoun'} biographies; qa.jsonl sha256 "
                     f"{(d['sha256'].get('qa.jsonl') or '')[:12]}…"])
    walls = [f"{s} fine-tuning {r['train_wall_s'] / 60:.1f} min" for s, r in summary["runs"].items()
             if isinstance(r.get("train_wall_s"), (int, float))]
    wall = summary.get("wall_s_this_invocation")
    if isinstance(wall, (int, float)):
        walls.append(f"the last invocation of the reproduction {wall / 60:.1f} min "
                     "(stages it found complete were not computed again)")
    out = f"<h2>What was run</h2><p>Preset <b>{html.escape(str(summary.get('preset', '')))}</b>.</p>"
    out += _table(rows, ["", "model or data", "identity"]) if rows else ""
    out += _training_table(summary.get("training") or {})
    out += (f"<p>Wall time: {html.escape('; '.join(walls))}.</p>" if walls else "")
    return out + _training_loss(summary.get("training_loss") or {})


def _training_loss(losses: dict[str, list[dict[str, Any]]]) -> str:
    """Each recipe's training loss over windows of steps (``TrainingLog.windows``): a model evaluated just after
    its loss came back up (a spike of a constant learning rate) shows here before it shows in its accuracies."""
    first = next((r for rows in losses.values() for r in rows), None)
    if first is None:
        return ""
    fig = windows_figure(losses, first["last_step"] - first["first_step"] + 1, with_max=False)
    qa_last = {recipe: max((r for r in rows if r["format"] == "qa"), key=lambda r: r["last_step"])["mean"]
               for recipe, rows in losses.items() if any(r["format"] == "qa" for r in rows)}
    last = "; ".join(f"{recipe} {v:.3g}" for recipe, v in qa_last.items())
    note = f" Mean QA loss over the last window: {html.escape(last)}." if last else ""
    return ("<h3>Training loss</h3><p>By batch format, from each recipe's <code>metrics.jsonl</code>."
            f"{note}</p>" + _plot(fig))


def _headline(summary: ReproductionSummary) -> str:
    import plotly.graph_objects as go  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    runs = summary["runs"]
    named = []
    if "after_bio" in runs.get("two-stage", {}):
        named.append(("two-stage, after its BIO phase", runs["two-stage"]["after_bio"]))
    named += [(s, r) for s, r in runs.items()]
    rows = [[s, *[_with_ci(r.get(k), (r.get("ci95") or {}).get(k)) for k in ACCURACIES]] for s, r in named]
    fig = go.Figure()
    for s, r in named:
        ci = r.get("ci95") or {}
        ys = [r.get(k) for k in ACCURACIES]
        err = {"type": "data", "symmetric": False,
               "array": [ci[k][1] - y if k in ci else 0 for k, y in zip(ACCURACIES, ys)],
               "arrayminus": [y - ci[k][0] if k in ci else 0 for k, y in zip(ACCURACIES, ys)]}
        fig.add_trace(go.Bar(name=s, x=list(ACCURACIES.values()), y=ys, error_y=err))
    fig.update_layout(barmode="group",
                      title="Exact-match accuracy by recipe (bars: 95% bootstrap interval over people)",
                      xaxis_title="measure", yaxis_title="accuracy", yaxis_range=[0, 1.05], height=420)
    gap = _measured(summary, "qa_ood_gap")
    gap_line = (f"<p><b>QA-OOD gap, mixed − two-stage:</b> {_with_ci(gap['gap'], gap.get('gap_ci95'))} (paired "
                "over the same people).</p>" if gap else "")
    above = [(s, r["qa_ood_above_floor"]) for s, r in named if r.get("qa_ood_above_floor")]
    if above:
        gap_line += ("<p><b>QA-OOD above its chance floor</b> (the same questions scored against another OOD "
                     "person's answers; paired over people): " + "; ".join(
                         f"{html.escape(s)} {_interval(iv)}" for s, iv in above) + ".</p>")
    search = summary.get("search")
    search_line = f"<p><b>{html.escape(_search_sentence(search))}</b></p>" if search else ""
    return ("<h2>Headline accuracies</h2><p>Greedy exact match; 95% percentile-bootstrap intervals over people in "
            "brackets. QA-OOD asks about people whose questions no recipe trained on.</p>"
            + _table(rows, ["recipe", *ACCURACIES.values()]) + gap_line + search_line + _plot(fig)
            + (_search(search) if search else ""))


def _search_sentence(search: dict[str, Any]) -> str:
    """Where the regime search stands, in one sentence (plain text)."""
    rows, n = search["rows"], len(search["planned"])
    done = sum(1 for pid in rows if pid in search["planned"])
    chosen = rows.get(search["chosen"]) if search["chosen"] else None
    if chosen is None:
        state = ("no pair yet meets the premise (both recipes answer the trained questions and memorise the "
                 "biographies)")
    elif search["reached"]:
        state = (f"pair {search['chosen']} reaches the target: mixed − two-stage on QA-OOD "
                 f"{_interval(chosen['gap'])}")
    else:
        state = (f"no pair reaches the target of {search['target_gap']:.2f}; the largest gap with the premise "
                 f"holding is {search['chosen']}'s, "
                 f"{_interval(chosen['gap'])}")
    preset = (f"this preset is pair {search['preset_pair']}'s setting" if search.get("preset_pair") else
              "this preset is the one that preceded the search (the search has not set it yet)")
    return f"Regime search: {done} of {n} pre-registered pairs done; {state}; {preset}."


def _search(search: dict[str, Any]) -> str:
    """The regime search's rows (the table of docs/results.md, shortened) and their gaps against the target."""
    import plotly.graph_objects as go  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    rows = search["rows"]
    table = []
    for pid, p in rows.items():
        s = p["setting"]
        table.append([pid, s.get("why", ""), s["epochs"], s["schedule"], "frozen" if s["frozen"] else "trained",
                      s["qa_share"], "full name" if s["fullname"] else "pronoun", s["people"], s["seed"],
                      *[_interval(p[k]) for k in ("mixed_qa_id", "stage_qa_id", "mixed_qa_ood", "stage_qa_ood", "gap")],
                      "holds" if p["premise_ok"] else "fails", "yes" if p["qualifies"] else "no"])
    gaps = [p["gap"] for p in rows.values()]
    fig = go.Figure(go.Bar(
        x=list(rows), y=[g["value"] for g in gaps],
        marker_color=["#1a7f37" if p["qualifies"] else "#888" if p["premise_ok"] else "#ddd" for p in rows.values()],
        error_y={"type": "data", "symmetric": False, "array": [g["high"] - g["value"] for g in gaps],
                 "arrayminus": [g["value"] - g["low"] for g in gaps]}))
    fig.add_hline(y=search["target_gap"], line_dash="dash", annotation_text=f"target {search['target_gap']:.2f}")
    fig.update_layout(title="QA-OOD gap (mixed − two-stage) of each finished pair, 95% interval over people",
                      xaxis_title="pair", yaxis_title="gap", height=380)
    rule = (f"A pair qualifies when both recipes answer the trained questions (QA-ID ≥ {search['min_qa_id']}), both "
            f"memorise the biographies (BIO recall ≥ {search['min_bio']}; two-stage after its BIO phase) and mixed − "
            f"two-stage on QA-OOD exact match ≥ {search['target_gap']}; the default is the cheapest qualifying pair, "
            "or, when none qualifies, the largest gap with the premise holding. Both recipes of a pair share every "
            "setting. The plan, the rule and every row are in docs/results.md.")
    return ("<h2>The regime search</h2><p class='rule'>" + html.escape(rule) + "</p>"
            + _table(table, ["pair", "what it tries", "passes", "schedule", "embedding", "QA share", "biographies",
                             "people", "seed", "mixed QA-ID", "two-stage QA-ID", "mixed QA-OOD", "two-stage QA-OOD",
                             "gap", "premise", "qualifies"])
            + (_plot(fig) if rows else ""))


def _head_curves_figure(strategy: str, curves: dict[str, Any]) -> Any:
    """QA-ID and QA-OOD accuracy against the number of top heads restored, one line per ranking; the random
    rankings as a band (their min to max)."""
    import plotly.graph_objects as go  # noqa: PLC0415  (plotly loads only when a figure is drawn)
    from plotly.subplots import make_subplots  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    fig = make_subplots(rows=1, cols=2, subplot_titles=("QA-ID", "QA-OOD"), shared_yaxes=True)
    rand = [c for name, c in curves.items() if name.startswith("random")]
    for col, key in ((1, "qa_id_acc"), (2, "qa_ood_acc")):
        if rand:
            ns = [p["n"] for p in rand[0]["points"]]
            vals = [[c["points"][i][key] for c in rand] for i in range(len(ns))]
            fig.add_trace(go.Scatter(x=ns, y=[max(v) for v in vals], mode="lines", line={"width": 0},
                                     showlegend=False, hoverinfo="skip"), row=1, col=col)
            fig.add_trace(go.Scatter(x=ns, y=[min(v) for v in vals], mode="lines", line={"width": 0},
                                     fill="tonexty", fillcolor="rgba(128,128,128,0.3)",
                                     name=f"random rankings ({len(rand)}), min–max", showlegend=col == 1),
                          row=1, col=col)
        for i, (name, c) in enumerate((n, c) for n, c in curves.items() if not n.startswith("random")):
            fig.add_trace(go.Scatter(x=[p["n"] for p in c["points"]], y=[p[key] for p in c["points"]],
                                     mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                                     line={"color": ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")[i % 4]}),
                          row=1, col=col)
    fig.update_layout(title=f"{strategy}: accuracy with the top-n heads of each ranking restored to pretrained "
                      "weights", yaxis_range=[0, 1.05], height=380)
    fig.update_xaxes(title_text="heads restored (n)")
    fig.update_yaxes(title_text="accuracy", col=1)
    return fig


def _trace_figures(summary: ReproductionSummary, run_dir: Path | None) -> dict[str, list[str]]:
    """The figures of the trace-based directions: the |S_k|/k curves, the per-head Shared Size maps, the restore
    ablation table and the head-ablation curves."""
    tr = summary.get("traces") or {}
    figs: dict[str, list[str]] = {"shared_fraction": [], "head_concentration": [], "restore_ablation": []}
    if not tr:
        return figs
    curves = {s: t["curve"] for s, t in tr.items() if t.get("curve")}
    pre = next((t["curve_pretrained"] for t in tr.values() if t.get("curve_pretrained")), None)
    if pre is not None:
        curves[PRETRAINED_LABEL] = pre
    if curves:
        figs["shared_fraction"] += [
            "<p>|S_k|/k against k for each recipe, beside the pretrained model traced the same way (BIO and QA "
            "gradients overlap before any fine-tuning: this curve, not k/P, is what a fine-tuned one is read "
            "against) and the overlap k/P of two random k-sets.</p>",
            _plot(shared_curve_figure(curves, "Shared parameters |S_k|/k against k"))]
    for s, t in tr.items():
        if run_dir is not None and (run_dir / f"trace-{s}" / TENSORS_FILE).is_file():
            per_head = load_tensors(run_dir / f"trace-{s}")["shared_per_head"]
            figs["head_concentration"].append(_plot(head_heatmap(
                per_head, f"{s}: Shared Size per head (shared entries in the head's Q, K, V, O slices, k={t['k']})",
                "shared entries")))
    abl = {s: t["ablation"] or {} for s, t in tr.items()}
    conds = list(next(iter(abl.values())))
    figs["restore_ablation"].append(
        "<h3>Restore ablation: QA accuracy with each set restored to its pretrained values</h3>" + _table(
            [[s, c, a[c].get("n_restored", ""), a[c]["qa_id_acc"], a[c]["qa_ood_acc"]]
             for s, a in abl.items() for c in conds],
            ["recipe", "restored set", "entries", "QA-ID", "QA-OOD"]))
    if summary.get("head_curves"):
        figs["restore_ablation"].append("<h3>Restoring whole heads, ranked by each score</h3><p>"
                                        + html.escape(summary.get("head_gqa_note", "")) + "</p>")
        figs["restore_ablation"] += [_plot(_head_curves_figure(s, c)) for s, c in summary["head_curves"].items()]
    return figs


def _consistency_figures(summary: ReproductionSummary) -> list[str]:
    import plotly.graph_objects as go  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    out = []
    m = _measured(summary, "consistency")
    if m:
        out.append(_table(
            [[s, m[f"{p}_gradient_cosine"], m[f"{p}_mean_representation_cosine"], m[f"{p}_subject_relation_share"],
              m[f"{p}_retrieval_acc_last_layer"]] for s, p in (("mixed", "mixed"), ("two-stage", "two_stage"))],
            ["recipe", "gradient cosine", "mean representation cosine", "BIO input share on subject + relation",
             "cross-format retrieval (last layer)"]))
    probe = {name: p for name, p in (summary.get("consistency_probe") or {}).items() if p}
    if probe:
        fig = go.Figure()
        for name, pr in probe.items():
            fig.add_trace(go.Scatter(y=pr["bio_to_qa"], mode="lines", name=f"{name}: BIO → QA"))
            fig.add_trace(go.Scatter(y=pr["qa_to_bio"], mode="lines", name=f"{name}: QA → BIO",
                                     line={"dash": "dot"}))
        chance = next(iter(probe.values()))["chance"]
        fig.add_hline(y=chance, line_dash="dash", line_color="grey", annotation_text="chance (majority)")
        fig.update_layout(title="Linear probe for the value's first token, trained on one format and tested on the "
                          "other", xaxis_title="layer", yaxis_title="probe accuracy", height=380)
        out.append(_plot(fig))
    along = summary.get("gradient_consistency_along")
    if along:
        fig = go.Figure([go.Scatter(x=[p["step"] for p in pts], y=[p["gradient_cosine"] for p in pts],
                                    mode="lines+markers", name=m) for m, pts in along.items()])
        fig.update_layout(title="Gradient consistency (cos ∇L_BIO, ∇L_QA) along training", xaxis_title="step",
                          yaxis_title="mean cosine (OOD people)", height=380)
        out.append(_plot(fig))
    return out


def _further(summary: ReproductionSummary, run_dir: Path | None) -> list[str]:
    """The analyses that support the directions: grafting, patching, single heads, attention, sensitivity."""
    import plotly.io as pio  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    parts = ["<h2>Further analyses</h2>"]
    if summary.get("grafting"):
        rows = [[s, g["alpha"], g["grafted"]["qa_id_acc"], g["grafted"]["qa_ood_acc"], g.get("shared_share_of_graft"),
                 (g.get("acc_lost_without_shared") or {}).get("qa_ood_acc")] for s, g in summary["grafting"].items()]
        parts.append("<h3>Grafting: the smallest set of fine-tuned weights that keeps the skill</h3>" + _table(
            rows, ["recipe", "alpha = |γ|/P", "grafted QA-ID", "grafted QA-OOD", "share of S in γ",
                   "QA-OOD lost without S"]))
    if summary.get("patching"):
        rows = [[st, sum(pt["clean_metric"]) / len(pt["clean_metric"]),
                 sum(pt["corrupted_metric"]) / len(pt["corrupted_metric"]), pt["attribution_vs_exact_corr"]]
                for st, pt in summary["patching"].items()]
        parts.append("<h3>Activation patching (QA, OOD people: a clean person's activations written into a "
                     "corrupted run)</h3>" + _table(rows, ["recipe", "clean logit difference",
                                                          "corrupted logit difference",
                                                          "corr(attribution, exact) over cells"]))
        if run_dir is not None:
            for st in summary["patching"]:
                for fig_name in ("heads", "cross_format"):
                    f = run_dir / f"patching-{st}" / "figures" / f"{fig_name}.json"
                    if f.is_file():
                        fig = pio.from_json(f.read_text())
                        fig.update_layout(title=f"{st}: {fig.layout.title.text}")
                        parts.append(_plot(fig))
    if summary.get("single_head"):
        rows = [[st, ", ".join(f"{d['head']} ({d['drop']:+.3f})" for d in (sh.get("top_ood_drop") or [])[:5]),
                 ", ".join(f"{d['head']} ({d['drop']:+.3f})" for d in (sh.get("top_id_logprob_drop") or []))]
                for st, sh in summary["single_head"].items()]
        parts.append("<h3>Single-head restores: the heads whose lone restore costs most</h3>" + _table(
            rows, ["recipe", "QA-OOD exact-match drop", "QA-ID log P(answer) drop (nats)"]))
    if summary.get("attention"):
        rows = [[m, a["mean_similarity"], a["n_subject_linking"], a["n_relation_focusing"],
                 a["mean_mass"]["bio"]["subject"], a["mean_mass"]["qa"]["subject"], ", ".join(a["viewed_heads"])]
                for m, a in summary["attention"].items()]
        parts.append("<h3>BIO vs QA attention (from the predicting position, aligned by role)</h3>" + _table(
            rows, ["model", "mean BIO–QA similarity", "subject-linking heads", "relation-focusing heads",
                   "subject mass BIO", "subject mass QA", "heads viewed"]))
        if run_dir is not None:
            for m in summary["attention"]:
                f = run_dir / "attention" / "figures" / f"circuitsvis_{m}.html"
                if f.is_file():
                    body = f.read_text(encoding="utf-8")
                    body = body[body.index("<body>") + 6: body.rindex("</body>")]
                    parts.append(f"<details><summary>circuitsvis: {html.escape(m)}</summary>{body}</details>")
    if summary.get("sensitivity"):
        rows = []
        for r in summary["sensitivity"]:
            for st in ("two-stage", "mixed"):
                h = r[st] or {}
                rows.append([r["qa_phase_lr"], st, *[h.get(m, "not run") for m in ACCURACIES]])
        parts.append("<h3>Sensitivity to the learning rate of the QA-training phase</h3><p>two-stage: the QA phase "
                     "from the same after-BIO model at this learning rate; mixed: the whole run at this learning "
                     "rate.</p>" + _table(rows, ["QA-phase lr", "recipe", *ACCURACIES.values()]))
    return parts if len(parts) > 1 else []


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}section{border-top:2px solid #ddd;"
         "margin-top:1.5em}.banner{background:#fff3cd;border:1px solid #e0c36c;padding:10px;margin:1em 0}"
         ".verdict{font-size:16px}.yes{color:#1a7f37}.no{color:#b42318}.undecided{color:#9a6700}"
         ".rule{color:#555;font-size:13px}")


def write_report(path: Path, summary: ReproductionSummary, run_dir: Path | None = None) -> None:
    """A self-contained HTML report (plotly.js inlined once; no external script, font or CDN reference)."""
    from plotly.offline import get_plotlyjs  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    directions = summary["directions"]
    parts = []
    learned = bool(directions[0].get("premise_holds", True))     # the QA-OOD gap's premise: the models learned
    if not learned:
        parts.append("<div class='banner'><b>Undecided.</b> The models did not learn what the paper's directions "
                     "presuppose (" + html.escape(PREMISE_LEARNED) + "), so every direction below is marked "
                     "undecided, whatever its rule computes.</div>")
    elif not all(d.get("premise_holds", True) for d in directions):
        parts.append("<div class='banner'><b>No QA-OOD gap to explain.</b> Both recipes learned what they were "
                     "trained on, but mixed training does not generalise to OOD people better than two-stage "
                     "here, so the mechanism directions, which explain that gap, are marked undecided, whatever "
                     "their rules compute.</div>")
    if summary.get("stale"):
        parts.append("<div class='banner'><b>Rendered from stages computed from other inputs</b> than this version "
                     "of the library would use (" + html.escape(", ".join(f"{k}: {v}" for k, v in
                                                                          summary["stale"].items()))
                     + "): their numbers are those of the inputs that computed them.</div>")
    parts.append("<p>Verdicts: " + "; ".join(f"{i}. {html.escape(d['name'])} {_verdict_word(d)}"
                                             for i, d in enumerate(directions, 1)) + ".</p>")
    parts.append(_what_was_run(summary))
    parts.append(_headline(summary))
    figures = _trace_figures(summary, run_dir)
    figures["consistency"] = _consistency_figures(summary)
    parts += [_direction(i, d, figures.get(d["name"], []), learned) for i, d in enumerate(directions, 1)]
    parts += _further(summary, run_dir)
    js = f"<script>{get_plotlyjs()}</script>"      # plotly.js once, before every figure
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>recall_circuits report</title>"
           f"<style>{STYLE}</style></head><body>{js}<h1>recall_circuits reproduction "
           f"({html.escape(str(summary.get('preset', '')))} preset)</h1>" + "".join(parts) + "</body></html>")
    write_text_atomic(path, share_circuitsvis(doc))
