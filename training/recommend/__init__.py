"""Product recommendations from the pipeline's reviews (issue 18, item 3).

Modules: ``data`` (raw files or silver -> interactions, through the pipeline's own parse/clean),
``split`` (leave-last-out), ``metrics`` (Recall/NDCG, bootstrap), ``models`` (random, popularity, item-kNN,
ALS, content, recent popularity, hybrid), ``evaluate`` (the offline protocol and validation tuning),
``export`` (Delta tables and the serving lookup), ``trending`` (the seed's trending-brands rule).
CLI: ``python -m training.recommend --help``.
"""
from training.recommend.trending import trending_for_brands

__all__ = ["trending_for_brands"]
