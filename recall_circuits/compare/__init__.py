"""Comparisons of the two formats: how a model treats the same fact written as BIO and asked as QA.

- :mod:`~recall_circuits.compare.attention`: ``role_masses`` (``RoleMasses``): attention from the predicting
  position to the subject, relation and other tokens, per head, in each format.
- :mod:`~recall_circuits.compare.consistency`: gradient consistency (``GradientConsistency``, and along training:
  ``ConsistencyAlong``), representation consistency (cosine, CKA, retrieval, a cross-format probe) and the input
  signature (input × gradient by role).
"""
