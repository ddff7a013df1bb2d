"""Train, evaluate and export the sentiment model from silver review Parquet.

    silver reviews --(training.data)--> examples + deterministic split
      --(tf.Transform on Beam: analyzers over the TRAINING split only)--> TFRecords + transform output
      --(Keras, class weights, early stopping on validation)--> classifier
      --> threshold chosen on validation --> SavedModel (transform graph embedded)
      --> the SavedModel evaluated on the raw texts of the test split (unseen categories by default), next
          to two baselines fitted on the same training split in the same run, and paired with each
      --> report.json + report.md + model_card.md
"""
import functools
import json
import logging
import os
import shutil
import threading
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

from training import data as data_mod
from training import lbfgs
try:
    from training import evaluate
except ImportError:  # pragma: no cover
    evaluate = None
from training.features import GROUP_WEIGHTS, GROUPS, LABEL, ids_name, preprocessing_fn, weights_name
from training.model import OPTIMIZERS, build_classifier, export, nb_weights

LOG = logging.getLogger("training")
RAW_FEATURE_SPEC = {"summary": tf.io.FixedLenFeature([], tf.string),
                    "review_text": tf.io.FixedLenFeature([], tf.string),
                    LABEL: tf.io.FixedLenFeature([], tf.int64)}
SPLIT_NAMES = ("train", "validation", "test")
MODEL_KIND = ("logistic regression on tf-idf of words + bigrams + negation scope, character 3-5-grams and the "
              "summary's own words + bigrams")


def _record_batches(ex, rows=4096):
    """The examples as Arrow record batches in the TFXIO layout tf.Transform reads natively (one
    ``list<binary>`` / ``list<int64>`` value per row): Beam then moves a few large batches between stages
    instead of one pickled dict per review, which was most of tf.Transform's time (docs/model.md)."""
    def one_each(values, type_):
        return pa.ListArray.from_arrays(pa.array(np.arange(len(values) + 1, dtype=np.int32)), pa.array(values, type_))
    out = []
    for lo in range(0, len(ex), rows):
        hi = min(lo + rows, len(ex))
        out.append(pa.RecordBatch.from_arrays(
            [one_each([s.encode("utf-8") for s in ex.summary[lo:hi]], pa.binary()),
             one_each([r.encode("utf-8") for r in ex.review_text[lo:hi]], pa.binary()),
             one_each(np.asarray(ex.label[lo:hi], dtype=np.int64), pa.int64())],
            names=["summary", "review_text", LABEL]))
    return out


def _staged_batches(ex, workdir, name):
    """Writes the examples as Arrow IPC files (one per record batch) -> their paths: the graph then carries
    file names, not the data (beam.Create pickles and bz2-compresses its values into the graph)."""
    folder = os.path.join(workdir, "examples", name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    paths = []
    for i, batch in enumerate(_record_batches(ex)):
        paths.append(os.path.join(folder, f"{i:05d}.arrow"))
        with pa.OSFile(paths[-1], "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
    return paths


def _read_batches(path):
    with pa.OSFile(path, "rb") as source:  # read into memory: the batches outlive the file handle
        yield from pa.ipc.open_file(source).read_all().to_batches()


def _tensor_adapter_config(schema):
    arrow_schema = pa.schema([("summary", pa.list_(pa.binary())), ("review_text", pa.list_(pa.binary())),
                              (LABEL, pa.list_(pa.int64()))])
    return tensor_adapter.TensorAdapterConfig(
        arrow_schema, tensor_representation_util.InferTensorRepresentationsFromSchema(schema))


def transform(examples, workdir, norm="l2"):
    """tf.Transform over Beam: analyzers on the training split, the transform applied to every split,
    written as TFRecords (``workdir/tfrecords/<split>-*``) plus the transform output (``workdir/transform``)."""
    tft_dir, records = os.path.join(workdir, "transform"), os.path.join(workdir, "tfrecords")
    for d in (tft_dir, records):
        shutil.rmtree(d, ignore_errors=True)
    config = _tensor_adapter_config(schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC))
    # one thread of bundles: multi_threading ran the analysis ~15 % faster, but its results varied from
    # run to run (a smaller character vocabulary once, another threshold every time; docs/performance.md)
    options = PipelineOptions(["--runner=FnApiRunner"])
    with beam.Pipeline(options=options) as p, tft_beam.Context(temp_dir=os.path.join(workdir, "tft_tmp")):
        splits = {name: p | f"List{name}" >> beam.Create(_staged_batches(examples.take(name), workdir, name))
                      | f"Read{name}" >> beam.FlatMap(_read_batches) for name in SPLIT_NAMES}
        (train, train_md), transform_fn = ((splits["train"], config)
                                           | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
                                               functools.partial(preprocessing_fn, norm=norm),
                                               output_record_batches=True))
        transformed = {"train": train}
        for name in ("validation", "test"):
            transformed[name], _ = (((splits[name], config), transform_fn)
                                    | f"Transform{name}" >> tft_beam.TransformDataset(output_record_batches=True))
        for name, pcoll in transformed.items():
            _ = ((pcoll, train_md) | f"Encode{name}" >> tft_beam.EncodeTransformedDataset()
                 | f"Write{name}" >> beam.io.WriteToTFRecord(os.path.join(records, name)))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(tft_dir)
    return tft_dir, records


def dataset(records, split, tft_output, batch_size, shuffle=False, seed=0):
    spec = tft_output.transformed_feature_spec()
    files = tf.io.gfile.glob(os.path.join(records, f"{split}-*"))
    ds = tf.data.TFRecordDataset(files)
    if shuffle:
        ds = ds.shuffle(50_000, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x: tf.io.parse_example(x, spec))
    names = [n for g in GROUPS for n in (ids_name(g), weights_name(g))]
    return ds.map(lambda f: ({n: f[n] for n in names}, f[LABEL])) \
        .prefetch(tf.data.AUTOTUNE)


def class_weights(y, classes=2):
    """Balanced class weights (n / (classes * n_c)): every class weighs as much as the others in the loss."""
    counts = np.bincount(y, minlength=classes).astype(float)
    return {c: float(len(y) / (classes * counts[c])) if counts[c] else 1.0 for c in range(classes)}


def _predict(classifier, records, split, tft_output, batch_size):
    ds = dataset(records, split, tft_output, batch_size)
    scores, labels = [], []
    for features, y in ds:
        out = classifier(features, training=False).numpy()
        scores.append(out.reshape(-1) if out.shape[-1] == 1 else out)
        labels.append(y.numpy())
    return (np.concatenate(labels) if labels else np.zeros(0, np.int64),
            np.concatenate(scores) if scores else np.zeros(0))


def _fit_keras(classifier, records, tft_output, train_y, classes, monitor, epochs, batch_size, patience, seed,
               progress):
    """Mini-batch training (--optimizer adam / sgd) with early stopping on the validation split."""
    history = classifier.fit(
        dataset(records, "train", tft_output, batch_size, shuffle=True, seed=seed), epochs=epochs,
        validation_data=dataset(records, "validation", tft_output, 1024),
        class_weight=class_weights(train_y, classes), verbose=0, callbacks=[
            tf.keras.callbacks.EarlyStopping(monitor=monitor, mode="max" if classes == 2 else "min",
                                             patience=patience, restore_best_weights=True),
            tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: progress(
                f"epoch {e + 1}: " + " ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()))))])
    best = max(history.history["val_auc"]) if classes == 2 else -min(history.history["val_loss"])
    return {"epochs_run": len(history.history["loss"]), "best_validation": float(best)}


def train(silver, output, *, split="category", holdout=None, category_source="source", epochs=30, batch_size=256,
          learning_rate=None, l2=3e-6, dim=1, patience=3, seed=0, n_boot=1000, baselines=True, workdir=None,
          norm="l2", validation="categories", classes=2, optimizer="auto", max_iterations=500, early_stopping=None,
          threshold_rule="cv-categories", inner_folds=2, ensemble="nb", progress=print):
    """The whole run; returns the report dict (also written as report.json / report.md under ``output``).

    ``l2``: the objective is the class-weighted mean log loss + ``l2 / 2 * |w|^2`` over the term weights
    (the baselines' convention). ``early_stopping``: None = off for lbfgs (it fits to the minimum; the
    validation AUC is only reported), on for adam/sgd. The default features, L2 and fit were chosen by
    leave-one-category-out cross-validation over the non-test categories of the real data
    (bench/model_selection.py)."""
    if optimizer == "auto":  # L-BFGS where the loss is convex: the binary linear model
        optimizer = "lbfgs" if classes == 2 and dim == 1 else "adam"
    if optimizer != "lbfgs" and optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be auto, lbfgs or one of {sorted(OPTIMIZERS)}")
    learning_rate = None if optimizer == "lbfgs" else learning_rate or OPTIMIZERS[optimizer][1]
    if early_stopping is None:
        early_stopping = optimizer != "lbfgs"
    if not early_stopping and optimizer != "lbfgs":
        raise ValueError("adam and sgd always stop early on the validation split; only lbfgs can fit to the minimum")
    t_start = time.monotonic()
    tf.keras.utils.set_random_seed(seed)
    workdir = workdir or os.path.join(output, "_work")
    table = data_mod.read_silver(silver)
    ex = data_mod.examples(table, classes=classes, split=split, holdout=holdout, category_source=category_source,
                           validation=validation)
    counts = {s: int((ex.split == s).sum()) for s in SPLIT_NAMES}
    progress(f"examples: {len(ex):,} labelled reviews ({'3-star excluded' if classes == 2 else '3 classes'}) = train {counts['train']:,} + validation "
             f"{counts['validation']:,} + test {counts['test']:,}; split by {split}"
             + (f", test categories: {', '.join(sorted(set(ex.take('test').category)))}; validation categories: "
                f"{', '.join(sorted(set(ex.take('validation').category)))}" if split == "category" else ""))
    if split == "all":
        if classes != 2 or optimizer != "lbfgs" or early_stopping:
            raise ValueError("--split all refits the binary linear model with L-BFGS to the minimum (no validation split)")
    elif min(counts.values()) == 0:
        raise ValueError(f"an empty split: {counts}; use more data or another --split")
    os.makedirs(output, exist_ok=True)   # only now: a refused run leaves no folder behind
    if split == "all":
        return _train_all(ex, silver, output, workdir, l2=l2, norm=norm, max_iterations=max_iterations,
                          threshold_rule=threshold_rule, inner_folds=inner_folds, t_start=t_start, progress=progress,
                          ensemble=ensemble)

    t0 = time.monotonic()
    tft_dir, records = transform(ex, workdir, norm)
    tft_output = tft.TFTransformOutput(tft_dir)
    vocab = {g: max(1, tft_output.vocabulary_size_by_name(g)) for g in GROUPS}  # terms outside it are dropped
    transform_s = time.monotonic() - t0
    progress("tf.Transform: vocabularies of " + " and ".join(f"{n:,} {g} terms" for g, n in vocab.items())
             + f" from the training split ({transform_s:.1f} s)")

    train_y = ex.take("train").label
    # lbfgs fits the weights itself (training.lbfgs); the compiled optimizer then goes unused
    classifier = build_classifier(vocab, dim=dim, l2=l2 / 2, learning_rate=learning_rate, classes=classes,
                                  optimizer="adam" if optimizer == "lbfgs" else optimizer)
    monitor = "val_auc" if classes == 2 else "val_loss"
    t0 = time.monotonic()
    if optimizer == "lbfgs":
        whole = lambda split: next(iter(dataset(records, split, tft_output, 1 << 30)))  # noqa: E731
        fitted = lbfgs.fit(classifier, whole("train"), whole("validation"), class_weights(train_y, classes),
                           max_iter=max_iterations, patience=patience, early_stopping=early_stopping,
                           progress=progress)
        fit_summary = {"iterations_run": fitted["iterations"], "best_iteration": fitted["best_iteration"],
                       "best_validation": fitted["best_validation"], "check_every": fitted["check_every"]}
    else:
        fit_summary = _fit_keras(classifier, records, tft_output, train_y, classes, monitor, epochs, batch_size,
                                 patience, seed, progress)
    train_s = time.monotonic() - t0
    progress(f"fitted ({optimizer}): " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in fit_summary.items()) + f" ({train_s:.1f} s)")

    if classes == 2:
        val_y, val_p = _predict(classifier, records, "validation", tft_output, 1024)
        threshold = evaluate.choose_threshold(val_y, val_p, metric="macro_f1")
    else:
        threshold = 0.5  # unused: the label is the most probable class

    model_dir = os.path.join(output, "saved_model")
    shutil.rmtree(model_dir, ignore_errors=True)
    export(classifier, tft_output, threshold, model_dir)
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    te = ex.take("test")
    throughput = scoring_throughput(signature, te)
    progress(f"exported {model_dir}" + (f" (threshold {threshold:.3f} chosen on validation)" if classes == 2 else
                                        " (label = most probable of 3 classes)")
             + f"; scoring {throughput:,.0f} reviews/s")
    if classes == 2:  # what ships is evaluated: the exported model on the raw test texts, in ``te`` order
        served = serve(signature, te)
        reports = {"model": evaluate.report(te.label, served, threshold, n_boot=n_boot, seed=seed)}
        reports["model"]["threshold"] = float(threshold)
    else:
        test_y, test_p = _predict(classifier, records, "test", tft_output, 1024)
        reports = {"model": evaluate.report_multiclass(test_y, test_p, n_boot=n_boot, seed=seed)}

    baseline_s = {}
    if baselines and classes == 2:  # the baselines are binary
        from training.baselines import SeedsBaseline, TfidfBigramBaseline
        tr, va = ex.take("train"), ex.take("validation")
        reports["model"]["versus"] = {}
        for name, cls in (("seeds_hashing_tfidf_lr", SeedsBaseline), ("tfidf_1_2gram_lr", TfidfBigramBaseline)):
            t0 = time.monotonic()
            base = cls().fit(tr.summary, tr.review_text, tr.label)
            th = evaluate.choose_threshold(va.label, base.predict_proba(va.summary, va.review_text), metric="macro_f1")
            scores = base.predict_proba(te.summary, te.review_text)
            reports[name] = evaluate.report(te.label, scores, th, n_boot=n_boot, seed=seed)
            d, (lo, hi) = evaluate.paired_auc_difference(te.label, served, scores, n=n_boot, seed=seed)
            reports["model"]["versus"][name] = {"roc_auc_difference": d, "ci": [lo, hi]}
            reports[name]["threshold"] = float(th)
            reports[name]["l2"] = base.l2_
            baseline_s[name] = round(time.monotonic() - t0, 2)
            progress(f"baseline {name}: L2 {base.l2_:g}, test AUC {reports[name]['roc_auc']:.4f} "
                     f"({baseline_s[name]:.1f} s); model minus it: {d:+.4f} [{lo:+.4f}, {hi:+.4f}] (paired bootstrap)")

    report = {
        "data": {"silver": silver, "examples": counts, "split": split, "category_source": category_source,
                 "test_categories": sorted(set(ex.take("test").category)),
                 "validation_categories": sorted(set(ex.take("validation").category)), "validation": validation,
                 "train_categories": sorted(set(ex.take("train").category)),
                 "label_rule": ("rating >= 4 positive (1), <= 2 negative (0), 3 excluded (transforms/labels.py)"
                                if classes == 2 else "rating <= 2 negative (0), 3 neutral (1), >= 4 positive (2) "
                                "(transforms/labels.py)")},
        "model": {"kind": MODEL_KIND if dim == 1 else f"embedding bag dim {dim}",
                  "vocabulary": vocab,
                  **fit_summary, "optimizer": optimizer, "classes": classes,
                  "early_stopping_on": monitor if early_stopping else None,
                  "class_weights": class_weights(train_y, classes),
                  "threshold": float(threshold), "learning_rate": learning_rate, "l2": l2, "batch_size": batch_size,
                  "tfidf_norm": norm},
        "results": reports,
        "timing": {"transform_s": round(transform_s, 2), "train_s": round(train_s, 2), "baselines_s": baseline_s,
                   "total_s": round(time.monotonic() - t_start, 2), "scoring_reviews_per_s": round(throughput, 1)},
        "saved_model": model_dir,
    }
    write_report(report, output)
    return report


class _Beside:
    """``fn()`` on a daemon thread: ``result()`` waits for it and returns its value or raises its error. A
    daemon, so an error or Ctrl-C in the main thread ends the command without waiting for it (a
    ThreadPoolExecutor's worker would be joined at exit)."""

    def __init__(self, fn, name):
        self._out = {}
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._out["value"] = fn()
        except BaseException as err:  # noqa: B036 - handed to the caller of result()
            self._out["error"] = err

    def result(self):
        self._thread.join()
        if "error" in self._out:
            raise self._out["error"]
        return self._out["value"]


ENSEMBLES = ("nb", "none")
ENSEMBLE_KIND = (", plus (logits added) a second logistic regression on the same terms naive-Bayes scaled (each "
                 "term's tf-idf weight times its log-count ratio in the training labels, rows back to unit length)")


def nb_twin_features(features, y, vocab):
    """The transformed training batch ({group_ids, group_weights: SparseTensor}) and its labels -> (the NB
    twin's features, {group: log-count ratios}). A term's ratio counts the positive and the negative reviews
    holding it (``training.loco.log_count_ratios``; tf.Transform's rows hold each term once)."""
    from training import loco
    out, ratios = dict(features), {}
    for g, size in vocab.items():
        ids = features[ids_name(g)]
        label = y[ids.indices[:, 0].numpy()]
        term = ids.values.numpy()
        ratios[g] = loco.log_count_ratios(np.bincount(term[label == 1], minlength=size),
                                          np.bincount(term[label == 0], minlength=size))
        out[weights_name(g)] = nb_weights(ids, features[weights_name(g)], ratios[g], GROUP_WEIGHTS[g])
    return out, ratios


def _train_all(ex, silver, output, workdir, *, l2, norm, max_iterations, threshold_rule, inner_folds, t_start,
               progress, ensemble="nb"):
    """``--split all``: the exported model refitted on every labelled review. With ``ensemble`` "nb" (the
    default, chosen by leave-one-category-out cross-validation: docs/model.md) the exported logit is the
    linear model's plus an NB-scaled twin's (``training.model.nb_weights``); "none": the linear model alone.
    The threshold comes from the rule the cross-validation chose (training.loco): applied to out-of-category
    scores of every review from ``inner_folds`` groups of categories, each scored by the numpy twin of the
    procedure fitted on the other categories. The exported model is then checked against the numpy twin
    refitted on all the same reviews (report["equivalence"]). The numpy side (threshold and twin) runs on a
    thread next to tf.Transform, which keeps one core busy (scipy's sparse products release the GIL)."""
    from training import loco
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}")
    kind = "model+nb" if ensemble == "nb" else "model"
    reviews = loco.Reviews(ex.summary, ex.review_text, ex.label,
                           np.array([c.lower() for c in ex.category], dtype=object), ex.category)

    def numpy_side():
        t0 = time.monotonic()
        tc = loco.TermCounts(reviews.summary, reviews.review_text)
        everything = np.ones(len(reviews), dtype=bool)
        if threshold_rule == "0.5":
            threshold = 0.5
        else:
            inner = loco.inner_scores(tc, kind, reviews, everything, inner_folds)
            threshold = loco.choose(threshold_rule, reviews.label, inner, reviews.category)
        threshold_s = time.monotonic() - t0
        progress(f"threshold {threshold:.4f} by rule {threshold_rule} over {inner_folds} inner folds of "
                 f"{len(set(reviews.category))} categories ({kind}, numpy twin; {threshold_s:.1f} s)")
        t0 = time.monotonic()
        twin_p = loco.fit_and_score(tc, kind, everything, everything, reviews.label)
        progress(f"numpy twin refitted on all reviews ({time.monotonic() - t0:.1f} s)")
        return threshold, threshold_s, twin_p, time.monotonic() - t0

    side = _Beside(numpy_side, "numpy-twin")
    t0 = time.monotonic()
    tft_dir, records = transform(ex, workdir, norm)
    tft_output = tft.TFTransformOutput(tft_dir)
    vocab = {g: max(1, tft_output.vocabulary_size_by_name(g)) for g in GROUPS}
    transform_s = time.monotonic() - t0
    progress("tf.Transform: vocabularies of " + " and ".join(f"{n:,} {g} terms" for g, n in vocab.items())
             + f" from all {len(ex):,} reviews ({transform_s:.1f} s)")
    t0 = time.monotonic()
    features, y = next(iter(dataset(records, "train", tft_output, 1 << 30)))
    classifier = build_classifier(vocab, dim=1, l2=l2 / 2, learning_rate=None, classes=2, optimizer="adam")
    fitted = lbfgs.fit(classifier, (features, y), (features, y), class_weights(ex.label),
                       max_iter=max_iterations, early_stopping=False, progress=progress)
    progress(f"fitted (lbfgs) on all reviews: {fitted['iterations']} iterations ({time.monotonic() - t0:.1f} s)")
    nb, nb_fitted = None, None
    if ensemble == "nb":
        t1 = time.monotonic()
        nb_features, ratios = nb_twin_features(features, y.numpy(), vocab)
        nb_classifier = build_classifier(vocab, dim=1, l2=loco.NB_L2 / 2, learning_rate=None, classes=2,
                                         optimizer="adam")
        nb_fitted = lbfgs.fit(nb_classifier, (nb_features, y), (nb_features, y), class_weights(ex.label),
                              max_iter=max_iterations, early_stopping=False, progress=progress)
        nb = (nb_classifier, ratios)
        progress(f"fitted the NB twin (lbfgs, L2 {loco.NB_L2:g}): {nb_fitted['iterations']} iterations "
                 f"({time.monotonic() - t1:.1f} s)")
    train_s = time.monotonic() - t0
    t0 = time.monotonic()
    threshold, threshold_s, twin_p, twin_s = side.result()
    waited_s = time.monotonic() - t0
    model_dir = os.path.join(output, "saved_model")
    shutil.rmtree(model_dir, ignore_errors=True)
    export(classifier, tft_output, threshold, model_dir, nb=nb)
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    throughput = scoring_throughput(signature, ex)
    served = serve(signature, ex)
    # the exported model equals a refit of the numpy twin on the same reviews
    equivalence = {"max_abs_probability_difference": float(np.max(np.abs(served - twin_p))),
                   "labels_agreeing": float(np.mean((served >= threshold) == (twin_p >= threshold))),
                   "rows": len(ex), "procedure": kind}
    progress(f"exported {model_dir} (threshold {threshold:.4f}); scoring {throughput:,.0f} reviews/s; against the "
             f"numpy twin refitted on the same reviews: max |p - p_twin| {equivalence['max_abs_probability_difference']:.4f}, "
             f"labels agreeing {equivalence['labels_agreeing']:.4%}")
    counts = {"train": len(ex), "validation": 0, "test": 0}
    report = {
        "data": {"silver": silver, "examples": counts, "split": "all", "category_source": "source",
                 "train_categories": sorted(set(ex.category)), "test_categories": [], "validation_categories": [],
                 "label_rule": "rating >= 4 positive (1), <= 2 negative (0), 3 excluded (transforms/labels.py)"},
        "model": {"kind": MODEL_KIND + (ENSEMBLE_KIND if nb else ""), "vocabulary": vocab,
                  "ensemble": ensemble, "procedure": kind,
                  "iterations_run": fitted["iterations"], "optimizer": "lbfgs", "classes": 2, "early_stopping_on": None,
                  "class_weights": class_weights(ex.label), "threshold": float(threshold),
                  "threshold_rule": threshold_rule, "inner_folds": inner_folds, "l2": l2, "tfidf_norm": norm,
                  **({"nb_l2": loco.NB_L2, "nb_iterations_run": nb_fitted["iterations"]} if nb else {})},
        "results": {}, "equivalence": equivalence,
        # the numpy side ran on a thread next to tf.Transform and the fits: its times overlap theirs;
        # waited_s is how long the export waited for it
        "timing": {"threshold_s": round(threshold_s, 2), "twin_s": round(twin_s, 2), "waited_s": round(waited_s, 2),
                   "transform_s": round(transform_s, 2),
                   "train_s": round(train_s, 2), "total_s": round(time.monotonic() - t_start, 2),
                   "scoring_reviews_per_s": round(throughput, 1)},
        "saved_model": model_dir,
    }
    with open(os.path.join(output, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, sort_keys=True, default=float)
    lines = ["# Sentiment model: the all-data refit", "",
             f"Trained on every labelled review ({len(ex):,}; {len(set(ex.category))} source categories), no held-out "
             "split: how well this procedure generalises to unseen categories is measured by leave-one-category-out "
             "cross-validation (`python -m training.loco`, bench/results/loco/report.md), which fixed the "
             f"features, the form ({'the NB ensemble, procedure model+nb' if nb else 'the linear model alone'}), "
             f"L2 ({l2:g}) and threshold rule ({threshold_rule}: threshold {threshold:.4f} from "
             f"{inner_folds} inner folds of categories).", "",
             f"Exported model vs the numpy twin refitted on the same reviews: max |p - p_twin| "
             f"{equivalence['max_abs_probability_difference']:.4f}, labels agreeing {equivalence['labels_agreeing']:.4%}.",
             "", f"Timing: {report['timing']}"]
    with open(os.path.join(output, "report.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    loco_md = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "results", "loco",
                           "report.md")
    card = ["# Model card: review sentiment from star ratings (all-data refit)", "",
            "## What it does",
            "Takes a review's raw `summary` and `review_text` and returns the probability that the review is positive "
            f"and a 0/1 label at threshold {threshold:.4f}. SavedModel signature `serving_default(summary: "
            "string[batch], review_text: string[batch]) -> probability: float32[batch], label: int32[batch]`; the "
            "tf.Transform graph is inside.", "",
            "## Data and model",
            f"Every labelled review of the silver table `{silver}` ({len(ex):,}; rating >= 4 positive, <= 2 negative, 3 "
            f"left out), categories {', '.join(sorted(set(ex.category)))}. {report['model']['kind']}; L2 {l2:g}"
            + (f" (the twin's {loco.NB_L2:g})" if nb else "") + "; "
            f"balanced class weights; L-BFGS to the minimum ({fitted['iterations']} iterations"
            + (f", the twin {nb_fitted['iterations']}" if nb else "") + "). Threshold rule "
            f"{threshold_rule}, chosen by leave-one-category-out cross-validation.", "",
            "## How well it generalises to unseen categories",
            "There is no held-out split in this fit. The figure is leave-one-category-out cross-validation of the "
            "same procedure (`python -m training.loco`, every category held out in turn, everything refitted on "
            "the others):", ""]
    if os.path.exists(loco_md):
        with open(loco_md, encoding="utf-8") as fh:
            card.append(fh.read())
    else:
        card.append("(bench/results/loco/report.md is absent: run `make loco`.)")
    card += ["", "## Limits",
             "* Labels come from star ratings, not from reading the text; 3-star reviews have no label.",
             "* A bag of words, bigrams and character n-grams: sarcasm and negation at a distance are missed.",
             "* Rating-skewed samples (Office_Products, amazon2023 Books) are part of the training data; the "
             "threshold rule weighs each category once, but class balance in a new category still moves precision "
             "and recall."]
    with open(os.path.join(output, "model_card.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(card) + "\n")
    return report


def serve(fn, ex, batch=4096):
    """P(positive) from the exported model's ``serving_default`` signature for the raw texts of ``ex``, in
    its row order."""
    out = [fn(summary=tf.constant(list(ex.summary[i:i + batch])),
              review_text=tf.constant(list(ex.review_text[i:i + batch])))["probability"].numpy()
           for i in range(0, len(ex), batch)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def scoring_throughput(fn, ex, batch=4096, repeats=3):
    """Reviews/s of the exported ``serving_default`` signature on raw text (the first ``batch`` reviews of
    ``ex``)."""
    s, r = tf.constant(list(ex.summary[:batch])), tf.constant(list(ex.review_text[:batch]))
    fn(summary=s, review_text=r)  # warm-up (tracing)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(summary=s, review_text=r)
    return repeats * len(ex.summary[:batch]) / (time.perf_counter() - t0)


def _test_set(d):
    if d["split"] == "category":
        return f"test categories, never seen in training: {', '.join(d['test_categories'])}"
    return f"test reviews chosen by {'review-key hash' if d['split'] == 'hash' else 'time (the latest)'}, " \
           f"from the same categories as training ({', '.join(d['test_categories'])})"


def write_report(report, output):
    with open(os.path.join(output, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, sort_keys=True, default=float)
    lines = ["# Sentiment model: evaluation", "",
             f"Test split: {report['data']['split']}; {_test_set(report['data'])}. "
             f"Examples: {report['data']['examples']}.",
             f"Label rule: {report['data']['label_rule']}. "
             + ("Thresholds chosen on the validation split." if report["model"]["classes"] == 2 else
                "Label = the most probable class."), "",
             (evaluate.markdown_table(report["results"]) if report["model"]["classes"] == 2
              else _multiclass_table(report["results"]["model"])), "",
             *_versus_lines(report["results"]["model"]),
             f"Timing: {report['timing']}"]
    with open(os.path.join(output, "report.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    write_model_card(report, output)


def _versus_lines(r):
    if not r.get("versus"):
        return []
    lines = ["Model ROC AUC minus each baseline's on the same test reviews (95 % paired bootstrap interval):",
             ""]
    lines += [f"* {name}: {v['roc_auc_difference']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]"
              for name, v in r["versus"].items()]
    return lines + [""]


def _multiclass_table(r):
    rows = ["| class | precision | recall | F1 | support | ROC AUC (one vs rest) |", "|---|---:|---:|---:|---:|---:|"]
    for c in r["per_class"]:
        rows.append(f"| {c['name']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']:,} | "
                    f"{r['roc_auc_per_class'][c['name']] or float('nan'):.3f} |")
    ci = r["ci"]
    fmt = lambda name: f"[{ci[name][0]:.3f}, {ci[name][1]:.3f}]"  # noqa: E731
    rows += ["", f"Mean one-vs-rest ROC AUC {r['roc_auc_ovr']:.3f} {fmt('roc_auc_ovr')}, accuracy {r['accuracy']:.3f} "
             f"{fmt('accuracy')}, balanced accuracy {r['balanced_accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f} "
             f"{fmt('macro_f1')} (95 % bootstrap intervals); confusion matrix (rows: true class) "
             f"{r['confusion_matrix']}"]
    return "\n".join(rows)


def _fit_words(m):
    if m["optimizer"] == "lbfgs" and not m["early_stopping_on"]:
        return (f"no early stopping: fitted to the minimum in {m['iterations_run']} iterations, validation AUC "
                f"{m['best_validation']:.4f}")
    if m["optimizer"] == "lbfgs":
        return (f"checked every {m['check_every']} iterations; best at iteration {m['best_iteration']} of "
                f"{m['iterations_run']}")
    return f"after {m['epochs_run']} epochs"


def write_model_card(report, output):
    d, m, r, t = report["data"], report["model"], report["results"]["model"], report["timing"]
    lines = [
        "# Model card: review sentiment from star ratings", "",
        "## What it does",
        "Takes a review's raw `summary` and `review_text` and returns the probability that the review is "
        "positive, and a label: 0/1 at a threshold chosen on validation data for the binary model "
        f"({m['threshold']:.3f}), the most probable of negative/neutral/positive for a 3-class one. SavedModel signature `serving_default(summary: string[batch], review_text: "
        "string[batch]) -> probability: float32[batch], label: int32[batch]`; the tf.Transform graph "
        "(normalisation, vocabularies, tf-idf) is inside, so nothing else is needed to load it.", "",
        "## Data",
        f"Silver reviews of the project's own batch job (`{d['silver']}`): {d['examples']} labelled reviews. "
        f"Label: {d['label_rule']}. Split: {d['split']}; training categories: {', '.join(d['train_categories'])}; "
        f"{_test_set(d)}. Analyzers (vocabulary, document frequencies) were computed on the training split "
        "only.", "",
        "## Model",
        f"{m['kind']}; vocabularies (terms in at least 2 training reviews): "
        + ", ".join(f"{n:,} {g} terms" for g, n in m["vocabulary"].items())
        + f"; balanced class weights {m['class_weights']}; "
        + ("full-batch L-BFGS (the loss is convex), " if m["optimizer"] == "lbfgs" else
           f"{m['optimizer'].upper()} (learning rate {m['learning_rate']}, batch {m['batch_size']}), ")
        + f"L2 {m['l2']} (mean loss + l2/2 |w|^2), "
        + (f"early stopping on {m['early_stopping_on']} " if m["early_stopping_on"] else "")
        + f"({_fit_words(m)}). The default features, L2 and fit were chosen on the "
        "non-test categories of the real data (leave-one-category-out cross-validation), never on the test "
        "split.", "",
        "## Results on the test split",
        f"ROC AUC {r.get('roc_auc', r.get('roc_auc_ovr')):.4f}, macro-F1 {r['macro_f1']:.4f}, accuracy {r['accuracy']:.4f}, balanced "
        f"accuracy {r['balanced_accuracy']:.4f} (95 % bootstrap intervals and the baselines in report.md). "
        f"Training {t['train_s']} s, tf.Transform {t['transform_s']} s, scoring {t['scoring_reviews_per_s']:,.0f} "
        "reviews/s (one process, batches of 4,096).", "",
        "## Limits",
        "* Labels come from star ratings, not from reading the text: a 5-star review complaining about "
        "shipping is \"positive\". 3-star reviews are left out of training and have no label.",
        "* A bag of words, bigrams and character n-grams: no word order beyond pairs and the 3 words after a "
        "negator; sarcasm and negation at a distance are missed.",
        "* English reviews of the categories above; other languages and domains are out of scope, and the "
        "threshold was chosen on the validation split's data, so class balance shifts in new "
        "categories move precision and recall.",
        "* HTML entities other than the common ones are dropped rather than decoded at serving time.",
    ]
    with open(os.path.join(output, "model_card.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
