"""Plotly figures (imported lazily by scripts; never by the core)."""

from __future__ import annotations

from typing import Any

import torch


def shared_curve_figure(curves: dict[str, Any], title: str = "Shared parameters |S_k|/k") -> Any:
    """|S_k|/k against k on log axes, one line per named curve (a ``SharedCurve`` or its ``to_dict()``), with the
    chance line k/P."""
    import plotly.graph_objects as go  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    curves = {name: c if isinstance(c, dict) else c.to_dict() for name, c in curves.items()}
    fig = go.Figure()
    for name, c in curves.items():
        # a log axis has no 0: a k with no shared entry is left out of the line (the tables keep it)
        y = [v if v > 0 else None for v in c["shared_fraction"]]
        fig.add_trace(go.Scatter(x=c["k"], y=y, mode="lines+markers", name=name, connectgaps=False))
    first = next(iter(curves.values()))
    fig.add_trace(go.Scatter(x=first["k"], y=first["chance_fraction"], mode="lines", name="chance k/P",
                             line={"dash": "dash", "color": "grey"}))
    fig.update_layout(title=title, xaxis={"type": "log", "title": "k (parameters in each task's top-k)"},
                      yaxis={"title": "|S_k| / k (log; zero left out)", "type": "log"})
    return fig


def head_heatmap(values: torch.Tensor, title: str, zlabel: str = "count") -> Any:
    import plotly.graph_objects as go  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    v = values.detach().float().cpu()
    fig = go.Figure(go.Heatmap(z=v.tolist(), x=[f"H{h}" for h in range(v.shape[1])],
                               y=[f"L{layer}" for layer in range(v.shape[0])], colorbar={"title": zlabel}))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", yaxis={"autorange": "reversed"})
    return fig


_CV_OPEN = '<script crossorigin type="module">'
_CV_CALL = "CircuitsVis.render("


def share_circuitsvis(doc: str) -> str:
    """One copy of the circuitsvis bundle in a page with several circuitsvis views.

    Each view from ``circuitsvis``'s ``local_src`` is a module script holding the whole bundle (~2.4 MB) followed by
    its ``CircuitsVis.render(...)`` call. The first bundle moves into one classic script that makes ``CircuitsVis``
    global; every view keeps only its render call (module scripts run after classic ones). Views whose bundle
    differs from the first keep their own. The page stays self-contained."""
    pieces = doc.split(_CV_OPEN)
    if len(pieces) < 3:
        return doc
    bundle, out = None, [pieces[0]]
    for piece in pieces[1:]:
        end = piece.find("</script>")
        body, rest = piece[:end], piece[end:]
        cut = body.rfind(_CV_CALL)
        head, call = (body[:cut], body[cut:]) if cut >= 0 else (body, "")
        if bundle is None:
            bundle = head
        out.append(body + rest if head != bundle or not call else call + rest)
    shared = f"<script>{bundle}\nwindow.CircuitsVis = CircuitsVis;</script>"
    first = doc.index(_CV_OPEN)
    return doc[:first] + shared + _CV_OPEN.join(out)[first:]


def offline_notebook_figures() -> None:
    """Make plotly figures in notebooks self-contained and light: plotly.js inlined once, with the first figure
    this kernel shows (the later ones use it from the page), no MathJax (plotly's own notebook renderer adds a
    MathJax ``<script src=...cdnjs...>``). Sets the default renderer to ``recall_circuits``."""
    import plotly.io as pio  # noqa: PLC0415  (plotly loads only when a figure is drawn)
    from plotly.io._base_renderers import MimetypeRenderer  # noqa: PLC0415  (plotly loads only when a figure is drawn)

    shipped = [False]

    class OfflineHTML(MimetypeRenderer):
        def to_mimebundle(self, fig_dict: dict) -> dict:
            html = pio.to_html(fig_dict, include_plotlyjs=not shipped[0], include_mathjax=False, full_html=False,
                               validate=False)
            shipped[0] = True
            return {"application/vnd.plotly.v1+json": fig_dict, "text/html": html}

    pio.renderers["recall_circuits"] = OfflineHTML()
    pio.renderers.default = "recall_circuits"
