"""The reproduction's report: one self-contained offline HTML page (plotly.js and the circuitsvis bundle once) that
reads like a results section: what was run, the five directions with their verdicts and rules, then the figures."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from recall_circuits.runs.artefacts import write_text_atomic
from recall_circuits.runs.gradient_trace import PRETRAINED_LABEL
from recall_circuits.runs.verdicts import PREMISE_LEARNED
from recall_circuits.runs.viz import share_circuitsvis


def _measured_text(measured: Any) -> str:
    """A direction's numbers as 'name value' pairs (rules and nested tables left to summary.json)."""
    if not isinstance(measured, dict):
        return str(measured)
    return "; ".join(f"{k.replace('_', ' ')} {v:.3f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                     for k, v in measured.items() if k != "rule" and isinstance(v, (int, float)))


def _table(rows: list[list[Any]], header: list[str]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(path: Path, summary: dict[str, Any], run_dir: Path | None = None) -> None:
    """A self-contained HTML report (plotly inlined once; no external script, font or CDN reference)."""
    import plotly.graph_objects as go  # noqa: PLC0415
    import plotly.io as pio  # noqa: PLC0415

    runs = summary["runs"]
    metrics = ["qa_id_acc", "qa_ood_acc", "bio_recall_id", "bio_recall_ood"]
    what = []
    for role, m in (summary.get("models") or {}).items():
        digest = ", ".join(f"{f} sha256 {h[:12]}…" for f, h in m.get("sha256", {}).items())
        what.append([role, m.get("name") or m.get("path"), digest])
    if summary.get("data"):
        d = summary["data"]
        cfg = d.get("config") or {}
        what.append(["data", d["path"], f"{cfg.get('n_people')} people, seed {cfg.get('seed')}, "
                     f"{'full-name' if cfg.get('fullname') else 'pronoun'} biographies; qa.jsonl sha256 "
                     f"{(d['sha256'].get('qa.jsonl') or '')[:12]}…"])
    fig = go.Figure([go.Bar(name=s, x=metrics, y=[runs[s][m] for m in metrics]) for s in runs])
    fig.update_layout(barmode="group", title="QA accuracy and BIO recall by training strategy", yaxis_range=[0, 1])
    parts = (["<h2>What was run</h2>" + _table(what, ["", "model or data", "identity"])] if what else [])
    parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=True))
    if not all(d.get("premise_holds", True) for d in summary["directions"]):
        parts.insert(0, "<div class='banner'><b>Undecided.</b> The models did not learn what the paper's directions "
                     "presuppose (" + html.escape(PREMISE_LEARNED) + ", and a QA-OOD gap to explain), so the "
                     "directions below are marked undecided, whatever their rules compute.</div>")
    parts.append("<h2>The paper's five directions</h2>" + _table(
        [[d["name"], d.get("verdict", str(d["reproduced"])), _measured_text(d["measured"]), d["paper"],
          d["measured"].get("rule", "") if isinstance(d["measured"], dict) else ""]
         for d in summary["directions"]], ["direction", "verdict", "measured here", "paper", "rule"]))
    parts.append("<h2>Runs</h2>" + _table([[s, *[r.get(m) for m in (*metrics, "train_wall_s")]]
                                           for s, r in runs.items()], ["strategy", *metrics, "train_wall_s"]))
    if "after_bio" in runs.get("two-stage", {}):
        ab = runs["two-stage"]["after_bio"]
        parts.append("<p>Two-stage after its BIO phase: " + ", ".join(f"{m} {ab[m]:.3f}" for m in metrics) + "</p>")
    if summary.get("traces"):
        from recall_circuits.runs.artefacts import load_tensors  # noqa: PLC0415
        from recall_circuits.runs.viz import head_heatmap, shared_curve_figure  # noqa: PLC0415

        tr = summary["traces"]
        parts.append("<h2>Cross-task gradient trace</h2>")
        curves = {s: t["curve"] for s, t in tr.items()}
        pre = next((t["curve_pretrained"] for t in tr.values() if t.get("curve_pretrained")), None)
        if pre is not None:
            curves[PRETRAINED_LABEL] = pre
        parts.append("<p>|S_k|/k against k for each recipe, the pretrained model traced the same way (the curve a "
                     "fine-tuned one is read against: BIO and QA gradients overlap before any fine-tuning) and the "
                     "overlap k/P of two random k-sets.</p>")
        parts.append(pio.to_html(shared_curve_figure(curves), full_html=False, include_plotlyjs=False))
        for s, t in tr.items():
            if run_dir is not None and (run_dir / f"trace-{s}" / "result.safetensors").is_file():
                per_head = load_tensors(run_dir / f"trace-{s}")["shared_per_head"]
                fig = head_heatmap(per_head, f"{s}: Shared Size per head (k={t['k']})", "shared entries")
                parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False))
        conds = list(next(iter(tr.values()))["ablation"])
        parts.append("<h3>Restore ablation (QA accuracy with the set restored to pretrained values)</h3>" + _table(
            [[s, c, t["ablation"][c]["n_restored"], t["ablation"][c]["qa_id_acc"], t["ablation"][c]["qa_ood_acc"]]
             for s, t in tr.items() for c in conds], ["strategy", "restored set", "entries", "qa_id", "qa_ood"]))
    if summary.get("head_curves"):
        fig = go.Figure()
        for strat, curves in summary["head_curves"].items():
            for name, c in curves.items():
                fig.add_trace(go.Scatter(x=[p["n"] for p in c["points"]], y=[p["qa_ood_acc"] for p in c["points"]],
                                         mode="lines+markers", name=f"{strat}: {name}"))
        fig.update_layout(title="QA-OOD accuracy with the top-n heads restored to pretrained weights",
                          xaxis_title="heads restored", yaxis_title="QA-OOD accuracy", yaxis_range=[0, 1])
        parts.append("<h2>Head ablation</h2><p>" + html.escape(summary.get("head_gqa_note", "")) + "</p>"
                     + pio.to_html(fig, full_html=False, include_plotlyjs=False))
    if summary.get("attention"):
        rows = [[m, a["mean_similarity"], a["n_subject_linking"], a["n_relation_focusing"],
                 a["mean_mass"]["bio"]["subject"], a["mean_mass"]["qa"]["subject"], ", ".join(a["viewed_heads"])]
                for m, a in summary["attention"].items()]
        parts.append("<h2>BIO vs QA attention (predicting position, aligned by role)</h2>" + _table(
            rows, ["model", "mean BIO–QA similarity", "subject-linking heads", "relation-focusing heads",
                   "subject mass BIO", "subject mass QA", "heads viewed"]))
        if run_dir is not None:
            for m in summary["attention"]:
                f = run_dir / "attention" / "figures" / f"circuitsvis_{m}.html"
                if f.is_file():
                    body = f.read_text(encoding="utf-8")
                    body = body[body.index("<body>") + 6: body.rindex("</body>")]
                    parts.append(f"<details><summary>circuitsvis: {html.escape(m)}</summary>{body}</details>")
    cons = next((d for d in summary["directions"] if d["name"] == "consistency"), None)
    if cons and isinstance(cons["measured"], dict):
        m = cons["measured"]
        parts.append("<h2>Consistency of BIO and QA (OOD people)</h2>" + _table(
            [[s, m[f"{p}_gradient_cosine"], m[f"{p}_mean_representation_cosine"], m[f"{p}_subject_relation_share"],
              m[f"{p}_retrieval_acc_last_layer"]] for s, p in (("mixed", "mixed"), ("two-stage", "two_stage"))],
            ["strategy", "gradient cosine", "mean representation cosine", "input share on subject+relation",
             "cross-format retrieval (last layer)"]))
    probe = {m: p for m, p in (summary.get("consistency_probe") or {}).items() if p}
    if probe:
        rows = [[m, max(p["bio_to_qa"]), int(max(range(len(p["bio_to_qa"])), key=p["bio_to_qa"].__getitem__)),
                 max(p["qa_to_bio"]), p["chance"]] for m, p in probe.items()]
        parts.append("<h3>Linear probe for the value's first token, trained on one format, tested on the other</h3>"
                     + _table(rows, ["model", "best BIO→QA accuracy", "at layer", "best QA→BIO accuracy",
                                     "chance (majority)"]))
    if summary.get("gradient_consistency_along"):
        fig = go.Figure([go.Scatter(x=[p["step"] for p in pts], y=[p["gradient_cosine"] for p in pts],
                                    mode="lines+markers", name=m)
                         for m, pts in summary["gradient_consistency_along"].items()])
        fig.update_layout(title="Gradient consistency (cos ∇L_BIO, ∇L_QA) along training", xaxis_title="step",
                          yaxis_title="mean cosine (OOD people)")
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False))
    if summary.get("grafting"):
        rows = [[s, g["alpha"], g["grafted"]["qa_id_acc"], g["grafted"]["qa_ood_acc"], g.get("shared_share_of_graft"),
                 (g.get("acc_lost_without_shared") or {}).get("qa_ood_acc")] for s, g in summary["grafting"].items()]
        parts.append("<h2>Grafting</h2>" + _table(rows, ["strategy", "alpha = |γ|/P", "grafted qa_id",
                                                         "grafted qa_ood", "share of S in γ",
                                                         "qa_ood lost without S"]))
    if summary.get("patching"):
        rows = []
        for st, pt in summary["patching"].items():
            rows.append([st, sum(pt["clean_metric"]) / len(pt["clean_metric"]),
                         sum(pt["corrupted_metric"]) / len(pt["corrupted_metric"]), pt["attribution_vs_exact_corr"]])
        parts.append("<h2>Activation patching (QA, OOD people: clean person patched into a corrupted one)</h2>"
                     + _table(rows, ["strategy", "clean logit diff", "corrupted logit diff",
                                     "corr(attribution, exact) over cells"]))
        if run_dir is not None:
            for st in summary["patching"]:
                for fig_name in ("heads", "cross_format"):
                    f = run_dir / f"patching-{st}" / "figures" / f"{fig_name}.json"
                    if f.is_file():
                        fig = pio.from_json(f.read_text())
                        fig.update_layout(title=f"{st}: {fig.layout.title.text}")
                        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False))
    if summary.get("single_head"):
        rows = [[st, ", ".join(f"{d['head']} ({d['drop']:+.3f})" for d in (sh.get("top_ood_drop") or [])[:5]),
                 ", ".join(f"{d['head']} ({d['drop']:+.3f})" for d in (sh.get("top_id_logprob_drop") or []))]
                for st, sh in summary["single_head"].items()]
        parts.append("<h3>Single-head restores: the heads whose lone restore costs most</h3>" + _table(
            rows, ["strategy", "QA-OOD exact match drop", "QA-ID log P(answer) drop (nats)"]))
    if summary.get("sensitivity"):
        rows = []
        for r in summary["sensitivity"]:
            for st in ("two-stage", "mixed"):
                h = r[st] or {}
                rows.append([r["qa_phase_lr"], st, *[h.get(m, "not run") for m in
                                                    ("qa_id_acc", "qa_ood_acc", "bio_recall_id", "bio_recall_ood")]])
        parts.append("<h2>Sensitivity to the learning rate of the QA-training phase</h2><p>two-stage: the QA phase "
                     "from the same after-BIO model at this learning rate; mixed: the whole run at this learning "
                     "rate.</p>" + _table(rows, ["QA-phase lr", "strategy", "qa_id", "qa_ood", "bio_recall_id",
                                                "bio_recall_ood"]))
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;" \
            "padding:4px 8px;font-size:13px}.banner{background:#fff3cd;border:1px solid #e0c36c;padding:10px;" \
            "margin:1em 0}"
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>recall_circuits report</title>"
           f"<style>{style}</style></head><body><h1>recall_circuits reproduction ({summary.get('preset', '')})</h1>"
           + "".join(parts) + "</body></html>")
    write_text_atomic(path, share_circuitsvis(doc))
