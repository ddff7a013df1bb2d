"""Pure logic of the reviews job: no I/O and no Beam here.

Everything in this package works on ``pyarrow`` record batches / tables (reviews, the hot path) or on
plain dicts (product metadata and dead letters, a tenth of the volume), so batch and streaming modes,
the trainer and the tests all import the same rules from one place.
"""
