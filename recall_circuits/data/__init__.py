"""Data: the synthetic bioS people, their biographies (BIO) and questions (QA), with an ID/OOD split of people.

- :mod:`~recall_circuits.data.bios`: ``DataConfig``, ``generate``, ``write_dataset`` / ``load_dataset`` (a
  ``Dataset`` with a manifest and SHA-256 hashes), tokenisation of BIO and QA with role spans (subject, relation,
  value) and the length-bucketed batches training uses.
- :mod:`~recall_circuits.data.pools`: the value pools and templates the generator draws from (``data/pools`` in a
  checkout; edit a copy and pass ``DataConfig(pools=DIR)``), read and checked by ``load_pools``.
"""
