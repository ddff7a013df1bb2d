"""Training examples from the pipeline's own silver reviews: labels from ``transforms.labels`` and a
deterministic split (never random per run).

A review's category is the stem of the file it came from (``--category=source``: the real data has one
file per category, ``All_Beauty.jsonl.gz`` -> ``All_Beauty``) or its product's ``main_cat``. Splits:

    category  the categories named by --holdout_categories (or, without it, the quarter of categories
              whose stable hash is smallest) are the test set, never seen in training; validation is the
              next ~15 % of categories in the same order (``validation="categories"``, so early stopping
              and the threshold are judged on unseen categories too, never on the test ones) or a hash of
              the review key within the training categories (``validation="hash"``)
    hash      test / validation / training by a hash of the review key (reviewer, product, review time)
    time      the latest reviews are the test set, the ones before them validation
    all       every labelled review is training data, no validation or test split: the final refit, after
              leave-one-category-out cross-validation (training.loco) has fixed the features, L2 and
              threshold rule
"""
import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import keys, labels

SPLITS = ("category", "hash", "time", "all")
CATEGORY_SOURCES = ("source", "main_cat")
KEY = ("reviewer_id", "asin", "unix_review_time")
_EXTENSIONS = re.compile(r"(\.jsonl?|\.json|\.gz|\.bz2)+$")


@dataclass
class Examples:
    summary: np.ndarray        # object arrays of str
    review_text: np.ndarray
    label: np.ndarray          # int64: 0/1 (binary) or 0/1/2 (three classes)
    category: np.ndarray
    split: np.ndarray          # "train" | "validation" | "test"

    def take(self, split):
        m = self.split == split
        return Examples(self.summary[m], self.review_text[m], self.label[m], self.category[m], self.split[m])

    def __len__(self):
        return len(self.label)


def read_silver(root):
    """The silver review table under ``root`` (a batch run's Delta table, or a streaming run's Parquet);
    ValueError, one line naming ``--silver``, when there is none."""
    cols = ["summary", "review_text", "overall", "main_cat", "source", *KEY]
    from beam_pipeline.tables import read_folder
    if "://" not in str(root) and not os.path.isdir(root):
        raise ValueError(f"--silver {root}: " + ("not a folder" if os.path.exists(root) else "no such folder"))
    try:
        return read_folder(root, columns=cols)
    except (pa.ArrowInvalid, FileNotFoundError) as err:   # pyarrow's many-line message names no option
        raise ValueError(f"--silver {root} holds no silver reviews table (expected a batch run's "
                         f"OUTPUT/silver/reviews with the columns {', '.join(cols)})") from err


def category_of(table, source="source"):
    if source == "main_cat":
        return pc.fill_null(table["main_cat"], "(none)").to_numpy(zero_copy_only=False).astype(object)
    return np.array([_EXTENSIONS.sub("", os.path.basename(s or "")) for s in table["source"].to_pylist()], dtype=object)


def _key_fraction(table):
    """A stable number in [0, 1) per review, from its key: the same review always lands in the same split."""
    h = keys.hash_columns(table, list(KEY))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def holdout_categories(categories, fraction=0.25):
    """The categories held out when none are named: the ``fraction`` with the smallest stable hash."""
    names = sorted(set(categories))
    if len(names) < 2:
        return []
    h = keys.hash_strings(pa.array(names, pa.string()))
    k = max(1, int(round(fraction * len(names))))
    return sorted(np.asarray(names, dtype=object)[np.argsort(h, kind="stable")[:k]].tolist())


def examples(table, *, classes=2, split="category", holdout=None, category_source="source",
             validation_fraction=0.1, test_fraction=0.15, validation="categories"):
    """Silver rows -> Examples with labels and splits; 3-star rows are left out of binary training."""
    if classes == 2:
        label = labels.polarity(table["overall"])
        keep = pc.is_valid(label)
        table, label = table.filter(keep), label.filter(keep)
    else:
        label = labels.sentiment_id(table["overall"])
    y = np.asarray(label.to_numpy(zero_copy_only=False), dtype=np.int64)
    cats = category_of(table, category_source)
    frac = _key_fraction(table)
    out = np.full(len(y), "train", dtype=object)
    if split == "category":
        held = set(holdout if holdout else holdout_categories(cats))
        test = np.isin(cats, list(held))
        out[test] = "test"
        rest = sorted(set(cats[~test]))
        if validation == "categories" and len(rest) >= 3:
            # model choices (early stopping, threshold) judged on categories unseen in training as well,
            # never on the test ones: the next categories in stable-hash order
            order = np.asarray(rest, dtype=object)[np.argsort(keys.hash_strings(pa.array(rest, pa.string())),
                                                              kind="stable")]
            k = max(1, int(round(0.15 * len(set(cats)))))
            out[np.isin(cats, list(order[:k]))] = "validation"
        else:
            out[~test & (frac < validation_fraction)] = "validation"
    elif split == "hash":
        out[frac < test_fraction] = "test"
        out[(frac >= test_fraction) & (frac < test_fraction + validation_fraction)] = "validation"
    elif split == "all":
        pass
    elif split == "time":
        t = table["unix_review_time"].to_numpy()
        order = np.lexsort((frac, t))  # ties broken by the key hash, not by row order
        n = len(t)
        n_test, n_val = int(round(test_fraction * n)), int(round(validation_fraction * n))
        out[order[n - n_test:]] = "test"
        out[order[n - n_test - n_val:n - n_test]] = "validation"
    else:
        raise ValueError(f"split must be one of {SPLITS}")
    text = lambda c: np.asarray(pc.fill_null(table[c], "").to_numpy(zero_copy_only=False), dtype=object)  # noqa: E731
    return Examples(text("summary"), text("review_text"), y, cats, out)
