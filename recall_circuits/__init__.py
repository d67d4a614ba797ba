"""recall_circuits: how a language model recalls facts it was fine-tuned on, and why two-stage training fails
where mixed training generalises (a reference implementation of arXiv 2505.16178), on TransformerLens 4.x."""

from recall_circuits.errors import RecallCircuitsError

__version__ = "0.1.0"
__all__ = ["RecallCircuitsError", "__version__"]
