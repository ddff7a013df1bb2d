"""The Keras text classifier on tf-idf features, and the serving module that is exported.

The classifier is a logistic regression over the tf-idf weights of the vocabulary terms (a sparse
linear layer: one weight per term), optionally an embedding bag (``dim`` > 1: the tf-idf-weighted sum of
term vectors, then a dense layer). Start simple: the linear model is the default.

``ServingModule`` wraps the transform graph (tf.Transform's layer) and the classifier under one
signature, so the SavedModel alone turns raw text into a probability and a label:

    serving_default(summary: string[batch], review_text: string[batch])
        -> probability: float32[batch] (positive class), label: int32[batch] (probability >= threshold)

A 3-class model (``--classes 3``) adds ``probabilities`` [batch, 3] and its ``label`` is the most
probable class (0 negative, 1 neutral, 2 positive); the graph's scoring step takes binary models only.
"""
import keras
import tensorflow as tf

from training.features import TERM_IDS, TERM_WEIGHTS


class SparseTermLayer(keras.layers.Layer):
    """Sparse term ids + tf-idf weights -> the weighted sum of per-term vectors (an embedding bag)."""

    def __init__(self, vocab_size, dim=1, l2=0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim, self.l2 = vocab_size, dim, l2

    def build(self, input_shape):
        self.table = self.add_weight(name="terms", shape=(self.vocab_size, self.dim), initializer="zeros"
                                     if self.dim == 1 else "glorot_uniform",
                                     regularizer=keras.regularizers.L2(self.l2) if self.l2 else None)

    def call(self, inputs):
        ids, weights = inputs[TERM_IDS], inputs[TERM_WEIGHTS]
        out = tf.nn.embedding_lookup_sparse(tf.convert_to_tensor(self.table), ids, weights, combiner="sum")
        # rows beyond the last row with a term are missing from the lookup: pad to the batch
        rows = tf.shape(ids, out_type=tf.int64)[0]
        return tf.pad(out, [[0, rows - tf.shape(out, out_type=tf.int64)[0]], [0, 0]])

    def compute_output_shape(self, input_shape):
        return (None, self.dim)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "dim": self.dim, "l2": self.l2}


def build_classifier(vocab_size, dim=1, l2=1e-6, learning_rate=0.01, classes=2):
    """Binary (one sigmoid output, the default) or ``classes``-way softmax (negative / neutral / positive)."""
    if classes > 2:
        return _build_multiclass(vocab_size, dim, l2, learning_rate, classes)
    return _build_binary(vocab_size, dim, l2, learning_rate)


def _inputs():
    return (keras.Input(shape=(None,), sparse=True, dtype="int64", name=TERM_IDS),
            keras.Input(shape=(None,), sparse=True, dtype="float32", name=TERM_WEIGHTS))


def _build_multiclass(vocab_size, dim, l2, learning_rate, classes):
    ids, weights = _inputs()
    x = SparseTermLayer(vocab_size, max(dim, classes) if dim > 1 else classes, l2, name="terms")(
        {TERM_IDS: ids, TERM_WEIGHTS: weights})
    out = keras.layers.Dense(classes, activation="softmax", name="logit")(x)
    model = keras.Model({TERM_IDS: ids, TERM_WEIGHTS: weights}, out)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _build_binary(vocab_size, dim=1, l2=1e-6, learning_rate=0.01):
    ids, weights = _inputs()
    x = SparseTermLayer(vocab_size, dim, l2, name="terms")({TERM_IDS: ids, TERM_WEIGHTS: weights})
    # linear model (dim 1): the term weights are the coefficients, the logit layer starts as the identity
    x = keras.layers.Dense(1, name="logit", kernel_initializer="ones" if dim == 1 else "glorot_uniform")(x)
    out = keras.layers.Activation("sigmoid", name="probability")(x)
    model = keras.Model({TERM_IDS: ids, TERM_WEIGHTS: weights}, out)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    return model


class ServingModule(tf.Module):
    """The exported model: tf.Transform's layer, then the classifier's forward pass on its weights (copied
    into plain variables: the SavedModel needs neither Keras nor the training code to load)."""

    def __init__(self, classifier, tft_output, threshold):
        super().__init__()
        self.tft_layer = tft_output.transform_features_layer()
        self.table = tf.Variable(classifier.get_layer("terms").get_weights()[0], trainable=False, name="terms")
        kernel, bias = classifier.get_layer("logit").get_weights()
        self.kernel = tf.Variable(kernel, trainable=False, name="kernel")
        self.bias = tf.Variable(bias, trainable=False, name="bias")
        self.threshold = tf.Variable(float(threshold), trainable=False, name="threshold")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="summary"),
                                  tf.TensorSpec([None], tf.string, name="review_text")])
    def serve(self, summary, review_text):
        features = self.tft_layer({"summary": summary, "review_text": review_text})
        ids, weights = features[TERM_IDS], features[TERM_WEIGHTS]
        bag = tf.nn.embedding_lookup_sparse(self.table, ids, weights, combiner="sum")
        bag = tf.pad(bag, [[0, tf.shape(summary)[0] - tf.shape(bag)[0]], [0, 0]])
        logits = tf.matmul(bag, self.kernel) + self.bias
        if self.kernel.shape[-1] == 1:
            probability = tf.reshape(tf.sigmoid(logits), [-1])
            return {"probability": probability, "label": tf.cast(probability >= self.threshold, tf.int32)}
        probabilities = tf.nn.softmax(logits)  # 3 classes: negative, neutral, positive
        return {"probability": probabilities[:, -1], "probabilities": probabilities,
                "label": tf.cast(tf.argmax(probabilities, axis=1), tf.int32)}


def export(classifier, tft_output, threshold, path):
    module = ServingModule(classifier, tft_output, threshold)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
    return path
