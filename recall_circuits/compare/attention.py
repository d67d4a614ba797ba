"""BIO vs QA attention, aligned by role (docs/paper.md §5).

For a person and attribute, the BIO text and the QA prompt differ in length and layout, so they are aligned by
role: the position that predicts the value (BIO) / the answer (QA), the subject tokens (BIO: the mention in the
attribute's sentence — the name or a pronoun — plus the name in the first sentence; QA: the name), and the relation
tokens. Per head, the attention mass from the predicting position is split into subject / relation / first / other
(the four sum to 1). "first" is position 0 — the BOS token, or, for a model without one (SmolLM2), the first text
token, where the attention sink lands; it is never counted as subject or relation (in a biography that is the
first token of the name). Heads are labelled "subject linking" or "relation focusing" when that role takes at least
``threshold`` of their mass in both formats, and a per-head similarity of the two profiles is reported
(1 − Jensen–Shannon divergence, base 2).

Example::

    res = rc.role_masses(model, dataset, people=[0, 1, 2])   # a RoleMasses
    res.mean.shape      # [2 formats, n_layers, n_heads, 4 roles]
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from recall_circuits import checks
from recall_circuits.data.bios import Dataset, tokenize_bio, tokenize_qa
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.hints import Bridge, Tokenizer
from recall_circuits.results import Result, head_rows

ROLES = ("subject", "relation", "first", "other")
FORMATS = ("bio", "qa")


def aligned_pairs(tokenizer: Tokenizer, dataset: Dataset, people: list[int], attributes: list[str] | None = None
                  ) -> list[dict[str, Any]]:
    """Role-aligned (BIO, QA) token data per (person, attribute)."""
    bio_by_person = {e["person"]: e for e in dataset.bio() if e.get("copy", 0) == 0}
    qa_by_key = {(e["person"], e["attribute"]): e for e in dataset.qa()}
    pairs = []
    for pid in people:
        if pid not in bio_by_person:
            raise RecallCircuitsError(f"person {pid} has no biography")
        bio = tokenize_bio(tokenizer, bio_by_person[pid])
        name_tokens = bio["facts"][0]["subject"] if bio["facts"] else []
        for fact in bio["facts"]:
            if attributes and fact["attribute"] not in attributes:
                continue
            qa = tokenize_qa(tokenizer, qa_by_key[(pid, fact["attribute"])])
            b_roles = {"subject": sorted(set(fact["subject"]) | set(name_tokens)), "relation": fact["relation"]}
            q_roles = {"subject": qa["roles"]["subject"], "relation": qa["roles"]["relation"]}
            for fmt, roles, pos in (("bio", b_roles, fact["predict_pos"]), ("qa", q_roles, qa["predict_pos"])):
                if not roles["subject"] or not roles["relation"]:
                    raise RecallCircuitsError(f"person {pid}, {fact['attribute']}: no alignable "
                                              f"{'subject' if not roles['subject'] else 'relation'} tokens in {fmt}")
                if any(i > pos for r in roles.values() for i in r):
                    raise RecallCircuitsError(f"person {pid}, {fact['attribute']}: role tokens after the predicting "
                                              f"position in {fmt}")
            pairs.append({"person": pid, "attribute": fact["attribute"],
                          "target": qa["input_ids"][qa["predict_pos"] + 1],   # first answer token
                          "bio": {"ids": bio["input_ids"][: fact["predict_pos"] + 1], "pos": fact["predict_pos"],
                                  **b_roles},
                          "qa": {"ids": qa["input_ids"][: qa["predict_pos"] + 1], "pos": qa["predict_pos"],
                                 **q_roles}})
    if not pairs:
        raise RecallCircuitsError("no (person, attribute) pairs to compare")
    return pairs


def _masses_for(model: Bridge, items: list[dict[str, Any]], batch_size: int
                ) -> Float[Tensor, "n n_layers n_heads 4"]:
    L = model.cfg.n_layers
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(L)]
    out = []
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        n = max(len(it["ids"]) for it in chunk)
        ids = torch.zeros((len(chunk), n), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, it in enumerate(chunk):
            ids[i, : len(it["ids"])] = torch.tensor(it["ids"])
            mask[i, : len(it["ids"])] = 1
        with torch.inference_mode():
            _, cache = model.run_with_cache(ids, attention_mask=mask, names_filter=names)
        pat = torch.stack([cache[nm] for nm in names], dim=1)  # [batch, layer, head, dest, src]
        for i, it in enumerate(chunk):
            row = pat[i, :, :, it["pos"], :].float()  # [layer, head, src]
            role_of = torch.full((n,), 3, dtype=torch.long)  # other
            role_of[len(it["ids"]):] = -1
            role_of[torch.tensor(it["relation"], dtype=torch.long)] = 1
            role_of[torch.tensor(it["subject"], dtype=torch.long)] = 0
            role_of[0] = 2  # BOS or attention sink, whatever token it is
            m = torch.stack([row[..., role_of == r].sum(-1) for r in range(4)], dim=-1)
            out.append(m)
    return torch.stack(out)


@dataclass(frozen=True, eq=False)
class RoleMasses(Result):
    """Attention from the predicting position by role (:func:`role_masses`).

    ``per_example``: ``[format, pair, layer, head, role]`` attention mass (formats ``bio``, ``qa``; roles
    ``subject``, ``relation``, ``first`` (the first token), ``other``); ``mean`` its mean over pairs; ``similarity``
    ``[layer, head]`` = 1 − Jensen–Shannon divergence of the BIO and QA role profiles; ``labels`` the heads called
    ``subject linking`` or ``relation focusing``; ``pairs`` the (person, attribute) of each pair."""

    per_example: Float[Tensor, "format pair layer head role"]
    mean: Float[Tensor, "format layer head role"]
    similarity: Float[Tensor, "layer head"]
    labels: dict[str, str]
    roles: list[str]
    formats: list[str]
    pairs: list[list[Any]]

    def to_dataframe(self) -> Any:
        """One row per (head, format, role): ``layer``, ``head``, ``label``, ``format``, ``role``, ``value`` (mean
        mass), ``similarity`` and ``kind`` (the head's label, or empty)."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        rows = []
        for i, fmt in enumerate(self.formats):
            for j, role in enumerate(self.roles):
                for r in head_rows(self.mean[i, ..., j], format=fmt, role=role):
                    rows.append({**r, "similarity": float(self.similarity[r["layer"], r["head"]]),
                                 "kind": self.labels.get(r["label"], "")})
        return pd.DataFrame(rows)


def role_masses(model: Bridge, dataset: Dataset, people: list[int] | Tensor, attributes: list[str] | None = None, *,
                batch_size: int = 16, threshold: float = 0.3) -> RoleMasses:
    """Per-head role masses in both formats, their similarity, and head labels."""
    tok = model.tokenizer
    checks.bridge(model)
    people = checks.people(people, dataset.person_ids())
    if attributes is not None:
        checks.members(attributes, dataset.config.attributes, "attributes")
    pairs = aligned_pairs(tok, dataset, people, attributes)
    per = torch.stack([_masses_for(model, [p[f] for p in pairs], batch_size) for f in FORMATS])  # [2,n,L,H,4]
    mean = per.mean(1)
    sim = 1 - js_divergence(mean[0], mean[1])
    labels = {}
    for layer in range(mean.shape[1]):
        for head in range(mean.shape[2]):
            sub, rel = mean[:, layer, head, 0], mean[:, layer, head, 1]
            if (sub >= threshold).all() and sub.min() >= rel.min():
                labels[f"L{layer}H{head}"] = "subject linking"
            elif (rel >= threshold).all():
                labels[f"L{layer}H{head}"] = "relation focusing"
    return RoleMasses(per, mean, sim, labels, list(ROLES), list(FORMATS),
                      [[p["person"], p["attribute"]] for p in pairs])


def js_divergence(p: Tensor, q: Tensor, eps: float = 1e-12) -> Tensor:
    """Jensen–Shannon divergence (base 2, in [0, 1]) over the last axis."""
    p = p.clamp_min(0) / p.sum(-1, keepdim=True).clamp_min(eps)
    q = q.clamp_min(0) / q.sum(-1, keepdim=True).clamp_min(eps)
    m = (p + q) / 2

    def kl(a: Tensor, b: Tensor) -> Tensor:
        return (a * ((a + eps) / (b + eps)).log2()).sum(-1)

    return (kl(p, m) + kl(q, m)) / 2


def circuitsvis_page(model: Bridge, pair: dict[str, Any], heads: list[tuple[int, int]], title: str) -> str:
    """Side-by-side circuitsvis views (BIO | QA) of the chosen heads for one aligned pair, from ``.local_src``
    (no CDN reference)."""
    import circuitsvis as cv  # noqa: PLC0415  (circuitsvis loads only when its page is drawn)

    blocks = []
    for fmt in FORMATS:
        ids = torch.tensor([pair[fmt]["ids"]])
        names = sorted({f"blocks.{layer}.attn.hook_pattern" for layer, _ in heads})
        with torch.inference_mode():
            _, cache = model.run_with_cache(ids, names_filter=names)
        pats = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0, head] for layer, head in heads])
        toks = [model.tokenizer.decode([t]) for t in pair[fmt]["ids"]]
        view = cv.attention.attention_heads(attention=pats, tokens=toks,
                                            attention_head_names=[f"L{layer}H{head}" for layer, head in heads])
        blocks.append(f"<div style='flex:1;min-width:0'><h3>{fmt.upper()}</h3>{view.local_src}</div>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h2>{html.escape(title)}</h2><div style='display:flex;gap:16px'>{''.join(blocks)}</div></body></html>")
