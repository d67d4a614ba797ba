"""Consistency between the BIO and QA formats (docs/paper.md §6, the 2026 revision).

- Gradient consistency: for a person and attribute, the cosine between ∇θ L_BIO (the loss on the attribute's
  value tokens inside the biography) and ∇θ L_QA (the loss on the answer tokens), overall and per layer/module.
- Representation consistency: per layer, the residual stream (``resid_post``) at the BIO position that predicts
  the value and at the QA position that predicts the answer: mean cosine over pairs, linear CKA over the set, and
  cross-format retrieval (for each QA vector, is its nearest BIO vector, by cosine, the same person and
  attribute?) — a probe that needs no training; and a trained linear probe (multinomial logistic regression) that
  reads the value's first token from one format's vectors and is tested on the other format's
  (:func:`cross_format_probe`).
- Gradient consistency along training: the same cosine for every snapshot a run kept
  (``snapshot_every``; :func:`gradient_consistency_along`).
- Input signature: input × gradient attribution of the BIO value prediction (log-probability of its first token)
  to the input tokens; the share of |attribution| on subject + relation tokens vs the rest of the context.

Example::

    g = rc.gradient_consistency(model, dataset, people)      # GradientConsistency: g.overall, g.per_module
    rc.representation_consistency(model, dataset, people).to_dataframe()   # per layer: cosine, CKA, retrieval
    rc.input_signature(model, dataset, people).to_dataframe()              # input × gradient share by role
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from recall_circuits.attribution.trace import per_example_loss
from recall_circuits.compare.attention import aligned_pairs
from recall_circuits.data.bios import Dataset, tokenize_bio, tokenize_qa
from recall_circuits.errors import RecallCircuitsError
from recall_circuits.hints import Bridge, Tokenizer
from recall_circuits.models.loading import forget_graph, gradients_for, load_bridge
from recall_circuits.models.params import ParamSpace
from recall_circuits.results import Result
from recall_circuits.training.curve import run_points

log = logging.getLogger(__name__)


def _pair_examples(tokenizer: Tokenizer, dataset: Dataset, people: list[int]) -> list[tuple[dict, dict, str]]:
    bio_by = {e["person"]: e for e in dataset.bio() if e.get("copy", 0) == 0}
    qa_by = {(e["person"], e["attribute"]): e for e in dataset.qa()}
    out = []
    for pid in people:
        b = tokenize_bio(tokenizer, bio_by[pid])
        for fact in b["facts"]:
            labels = [-100] * len(b["input_ids"])
            for i in fact["value"]:
                labels[i] = b["input_ids"][i]
            q = tokenize_qa(tokenizer, qa_by[(pid, fact["attribute"])])
            out.append(({"input_ids": b["input_ids"], "labels": labels},
                        {"input_ids": q["input_ids"], "labels": q["labels"]}, fact["attribute"]))
    if not out:
        raise RecallCircuitsError("no (person, attribute) pairs")
    return out


def _grad(model: Bridge, space: ParamSpace, params: dict[str, Tensor], ex: dict[str, list[int]], *,
          logits: Tensor | None = None, keep_graph: bool = False) -> Tensor:
    """The flattened gradient of ``ex``'s label loss; ``logits``: the forward pass of ``ex["input_ids"]`` already
    made (its graph kept for another backward when ``keep_graph``)."""
    for p in params.values():
        p.grad = None
    if logits is None:
        logits = model(torch.tensor([ex["input_ids"]]))
    per_example_loss(logits, torch.tensor([ex["labels"]])).sum().backward(retain_graph=keep_graph)
    return space.flatten({k: cast(Tensor, p.grad) for k, p in params.items()}).float()


@dataclass(frozen=True, eq=False)
class GradientConsistency(Result):
    """Cosine of ∇L_BIO and ∇L_QA (:func:`gradient_consistency`): the mean over (person, attribute) pairs, each
    pair's, and per ``L{layer}.{module}`` (cosine of the inner products summed over pairs)."""

    overall: float
    per_pair: list[float]
    per_module: dict[str, float]
    n_pairs: int

    def to_dataframe(self) -> Any:
        """One row per layer·module: ``module``, ``cosine``."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        return pd.DataFrame([{"module": k, "cosine": v} for k, v in self.per_module.items()])


@dataclass(frozen=True, eq=False)
class RepresentationConsistency(Result):
    """BIO vs QA residual streams at the predicting positions, per layer (:func:`representation_consistency`):
    mean cosine, linear CKA, cross-format retrieval accuracy (chance ``chance_retrieval``), and ``probe``: the
    cross-format linear probe's accuracies per layer (``bio_to_qa``, ``qa_to_bio``, ...; empty without probe)."""

    cosine: list[float]
    cka: list[float]
    retrieval_acc: list[float]
    chance_retrieval: float
    n_pairs: int
    probe: dict[str, Any]

    def to_dataframe(self) -> Any:
        """One row per layer: ``layer``, ``cosine``, ``cka``, ``retrieval_acc`` and the probe's accuracies."""
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        per_layer = {k: v for k, v in self.probe.items() if isinstance(v, list)}
        return pd.DataFrame([{"layer": i, "cosine": c, "cka": k, "retrieval_acc": r,
                              **{f"probe_{n}": v[i] for n, v in per_layer.items()}}
                             for i, (c, k, r) in enumerate(zip(self.cosine, self.cka, self.retrieval_acc))])


@dataclass(frozen=True, eq=False)
class InputSignature(Result):
    """Input × gradient of each BIO value prediction (:func:`input_signature`): the share of |attribution| on the
    subject and relation tokens, mean and per fact."""

    subject_relation_share: float
    per_fact: list[float]
    n_facts: int
    method: str

    def to_dataframe(self) -> Any:
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        return pd.DataFrame({"fact": range(len(self.per_fact)), "subject_relation_share": self.per_fact})


def gradient_consistency(model: Bridge, dataset: Dataset, people: list[int],
                         include: tuple[str, ...] = ("attn", "mlp")) -> GradientConsistency:
    """Mean cosine of ∇L_BIO and ∇L_QA per (person, attribute), overall and per layer·module."""
    space = ParamSpace(model, include=include)
    params = space.params(model)
    cos_all: list[float] = []
    per_mod: dict[str, list[float]] = {}
    pairs = _pair_examples(model.tokenizer, dataset, people)
    with gradients_for(model, params.values()):
        for i, (bio, qa, _) in enumerate(pairs):
            # a person's attributes share one biography: one forward pass, one backward per attribute's value
            if i == 0 or bio["input_ids"] != pairs[i - 1][0]["input_ids"]:
                bio_logits = model(torch.tensor([bio["input_ids"]]))
            last = i + 1 == len(pairs) or pairs[i + 1][0]["input_ids"] != bio["input_ids"]
            gb = _grad(model, space, params, bio, logits=bio_logits, keep_graph=not last)
            if last:
                bio_logits = None
            gq = _grad(model, space, params, qa)
            cos_all.append(float(torch.nn.functional.cosine_similarity(gb, gq, dim=0)))
            for info in space.infos:
                key = f"L{info.layer}.{info.module}"
                sl = slice(info.offset, info.offset + info.numel)
                acc = per_mod.setdefault(key, [0.0, 0.0, 0.0])
                acc[0] += float((gb[sl] * gq[sl]).sum())
                acc[1] += float(gb[sl].square().sum())
                acc[2] += float(gq[sl].square().sum())
    n_pairs = len(cos_all)
    per_module = {}
    for k, (dot, nb, nq) in per_mod.items():
        per_module[k] = dot / max(1e-30, (nb * nq) ** 0.5)  # cosine of the summed-over-pairs inner products
    return GradientConsistency(sum(cos_all) / n_pairs, cos_all, per_module, n_pairs)


@dataclass(frozen=True, eq=False)
class ConsistencyAlong(Result):
    """Gradient consistency along a training run (:func:`gradient_consistency_along`): at each kept ``step``, the
    ``phase`` it was in (``bio``, ``qa``, ``mixed`` or None when unknown), the mean cosine of ∇L_BIO and ∇L_QA over
    the pairs, and the checkpoint it was measured on."""

    step: list[int]
    phase: list[str | None]
    gradient_cosine: list[float]
    path: list[str]

    def to_dataframe(self) -> Any:
        import pandas as pd  # noqa: PLC0415  (pandas loads only for a DataFrame)

        return pd.DataFrame({"step": self.step, "phase": self.phase, "gradient_cosine": self.gradient_cosine,
                             "path": self.path})

    def to_points(self) -> list[dict[str, Any]]:
        """One dict per step (``step``, ``phase``, ``gradient_cosine``, ``path``): the form summaries keep."""
        return [{"step": s, "phase": p, "gradient_cosine": c, "path": q}
                for s, p, c, q in zip(self.step, self.phase, self.gradient_cosine, self.path)]


def gradient_consistency_along(run_dir: str, dataset: Dataset, people: list[int],
                               include: tuple[str, ...] = ("attn", "mlp"), *, device: str = "cpu",
                               dtype: str = "float32", known: dict[str, float] | None = None) -> ConsistencyAlong:
    """:func:`gradient_consistency` for every snapshot a training run kept (``snapshot_every``) and its final model,
    in step order, each with the phase it was taken in. ``known``: checkpoint folder → overall cosine already
    measured on the same people, device and dtype (e.g. the final model's), not measured again."""
    points, phase = run_points(run_dir)
    cosines = []
    known = {str(Path(k).resolve()): v for k, v in (known or {}).items()}
    for step in sorted(points):
        if (have := known.get(str(Path(points[step]).resolve()))) is not None:
            log.info("gradient consistency along %s: step %d (the checkpoint already measured)", run_dir, step)
            cosines.append(have)
            continue
        log.info("gradient consistency along %s: step %d", run_dir, step)
        g = gradient_consistency(load_bridge(str(points[step]), device=device, dtype=dtype), dataset, people, include)
        cosines.append(g.overall)
    steps = sorted(points)
    return ConsistencyAlong(steps, [phase.get(s) for s in steps], cosines, [str(points[s]) for s in steps])


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between two [n, d] representation sets (Kornblith et al. 2019)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    hsic = (x.T @ y).square().sum()
    return float(hsic / ((x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()).clamp_min(1e-30))


def fit_probe(x: Tensor, y: Tensor, n_classes: int, *, l2: float = 1e-2, iters: int = 200
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS, deterministic) → (weights
    [d + 1, n_classes], training mean, training std) for :func:`probe_predict`."""
    x = x.double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8) if len(x) > 1 else torch.ones(x.shape[1], dtype=x.dtype)
    z = torch.cat([(x - mu) / sd, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.zeros(z.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w, y) + l2 * w[:-1].square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), mu, sd


def probe_predict(probe: tuple[Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
    w, mu, sd = probe
    z = torch.cat([(x.double() - mu) / sd, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    return (z @ w).argmax(1)


def cross_format_probe(bio: Tensor, qa: Tensor, labels: Tensor, *, l2: float = 1e-2) -> dict[str, float]:
    """A linear probe for ``labels`` trained on one format's vectors [n, d] and tested on the other's (same
    (person, attribute) rows), both directions; chance = the most frequent label's share."""
    classes, y = torch.unique(labels, return_inverse=True)
    k = len(classes)
    out = {}
    for src, dst, name in ((bio, qa, "bio_to_qa"), (qa, bio, "qa_to_bio")):
        pr = fit_probe(src, y, k, l2=l2)
        out[name] = float((probe_predict(pr, dst) == y).double().mean())
        out[f"{name}_train"] = float((probe_predict(pr, src) == y).double().mean())
    out["chance"] = float(torch.bincount(y).max()) / len(y)
    return out


@torch.inference_mode()
def _predicting_residuals(model: Bridge, pairs: list[dict[str, Any]]) -> dict[str, Tensor]:
    """``resid_post`` of every layer at each pair's BIO and QA predicting positions → {fmt: [L, n, d_model]}."""
    L = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(L)]
    reps = {f: torch.zeros(L, len(pairs), model.cfg.d_model) for f in ("bio", "qa")}
    for i, p in enumerate(pairs):
        for f in ("bio", "qa"):
            _, cache = model.run_with_cache(torch.tensor([p[f]["ids"]]), names_filter=names)
            for layer, n in enumerate(names):
                reps[f][layer, i] = cache[n][0, p[f]["pos"]].float()
    return reps


def representation_consistency(model: Bridge, dataset: Dataset, people: list[int], *, probe: bool = True
                               ) -> RepresentationConsistency:
    """Per layer: mean cosine, linear CKA, cross-format retrieval accuracy and (``probe``) the cross-format linear
    probe for the value's first token, of BIO vs QA predicting positions."""
    pairs = aligned_pairs(model.tokenizer, dataset, people)
    L = model.cfg.n_layers
    reps = {f: t.clone() for f, t in _predicting_residuals(model, pairs).items()}  # plain tensors (probe trains)
    cos, cka, retr = [], [], []
    for layer in range(L):
        b, q = reps["bio"][layer], reps["qa"][layer]
        cos.append(float(torch.nn.functional.cosine_similarity(b, q, dim=1).mean()))
        cka.append(linear_cka(b, q))
        sim = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
        retr.append(float((sim.argmax(1) == torch.arange(len(pairs))).float().mean()))
    probe_res: dict[str, Any] = {}
    if probe:
        labels = torch.tensor([p["target"] for p in pairs])
        res = [cross_format_probe(reps["bio"][layer], reps["qa"][layer], labels) for layer in range(L)]
        probe_res = {k: [r[k] for r in res] for k in res[0] if k != "chance"}
        probe_res["chance"] = res[0]["chance"]
        probe_res["target"] = "first token of the attribute value / answer"
    return RepresentationConsistency(cos, cka, retr, 1 / len(pairs), len(pairs), probe_res)


def input_signature(model: Bridge, dataset: Dataset, people: list[int]) -> InputSignature:
    """Share of |input × gradient| on subject + relation tokens for each BIO value prediction (mean over facts)."""
    pairs = aligned_pairs(model.tokenizer, dataset, people)
    bio_by = {e["person"]: tokenize_bio(model.tokenizer, e) for e in dataset.bio() if e.get("copy", 0) == 0}
    shares = []
    store: dict[str, Tensor] = {}

    def keep(module: Any, inputs: Any, output: Tensor) -> Tensor:
        out = output.detach().requires_grad_(True)
        store["emb"] = out
        return out

    for p in pairs:
        t = bio_by[p["person"]]
        fact = next(f for f in t["facts"] if f["attribute"] == p["attribute"])
        pos = fact["predict_pos"]
        ids = torch.tensor([t["input_ids"][: pos + 1]])
        target = t["input_ids"][pos + 1]
        handle = model.embed.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                logp = model(ids)[0, -1].float().log_softmax(-1)[target]
                (g,) = torch.autograd.grad(logp, [store["emb"]])
        finally:
            handle.remove()
            forget_graph(model)
        attr = (g * store["emb"].detach())[0].sum(-1).abs()      # [pos]
        roles = set(p["bio"]["subject"]) | set(p["bio"]["relation"])
        total = float(attr.sum())
        shares.append(float(attr[sorted(roles)].sum()) / total if total > 0 else 0.0)
    return InputSignature(sum(shares) / len(shares), shares, len(shares),
                          "input x gradient on the token embeddings (summed over d_model, absolute)")
