"""The Keras text classifier on tf-idf features, and the serving module that is exported.

The classifier is a logistic regression over the tf-idf weights of the vocabulary terms of each feature
group (words, character n-grams, summary words: a sparse linear layer per group, one weight per term, summed, plus a
bias), optionally an embedding bag (``dim`` > 1: the tf-idf-weighted sum of term vectors, then a dense
layer). Start simple: the linear model is the default.

In the linear model the layer after the term weights is fixed (identity kernel, only its bias trains).
A trainable kernel there would undo the L2 penalty on the term weights (shrink them, scale the kernel up
by as much: the same predictions at a lower penalty), which is what an earlier version did.

``ServingModule`` wraps the transform graph (tf.Transform's layer) and the classifier under one
signature, so the SavedModel alone turns raw text into a probability and a label:

    serving_default(summary: string[batch], review_text: string[batch])
        -> probability: float32[batch] (positive class), label: int32[batch] (probability >= threshold)

With an NB twin (``training --split all``'s default ``--ensemble nb``) the logit is the classifier's plus
that of a second linear model on the same terms naive-Bayes scaled (``nb_weights``: each term's tf-idf
weight times its log-count ratio from the training labels, each group's row back to unit length and its
GROUP_WEIGHTS); the ratios and the twin's weights are variables of the SavedModel too.

A 3-class model (``--classes 3``) adds ``probabilities`` [batch, 3] and its ``label`` is the most
probable class (0 negative, 1 neutral, 2 positive); the graph's scoring step takes binary models only.
"""
import keras
import numpy as np
import tensorflow as tf

from training.features import GROUP_WEIGHTS, ids_name, l2_normalize_rows, weights_name

# mini-batch optimizers: (class, default learning rate); the binary linear model is fitted by training.lbfgs
OPTIMIZERS = {"adam": (keras.optimizers.Adam, 0.003), "sgd": (keras.optimizers.SGD, 8.0)}


class SparseTermLayer(keras.layers.Layer):
    """One group's sparse term ids + tf-idf weights -> the weighted sum of per-term vectors (an embedding
    bag; a vector of width 1 is a linear model's coefficient). ``l2`` is Keras's: ``l2 * sum(w^2)`` joins
    the mean loss."""

    def __init__(self, vocab_size, dim=1, l2=0.0, group="word", initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim, self.l2, self.group = vocab_size, dim, l2, group
        self.initializer = initializer

    def build(self, input_shape):
        self.table = self.add_weight(name="terms", shape=(self.vocab_size, self.dim), initializer=self.initializer,
                                     regularizer=keras.regularizers.L2(self.l2) if self.l2 else None)

    def call(self, inputs):
        return bag(self.table, inputs[ids_name(self.group)], inputs[weights_name(self.group)])

    def compute_output_shape(self, input_shape):
        return (None, self.dim)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "dim": self.dim, "l2": self.l2,
                "group": self.group, "initializer": self.initializer}


def bag(table, ids, weights):
    """sum over a review's terms of weight * table[id] -> [batch, width] (reviews with no term: zeros)."""
    out = tf.nn.embedding_lookup_sparse(tf.convert_to_tensor(table), ids, weights, combiner="sum")
    # rows beyond the last row with a term are missing from the lookup: pad to the batch
    rows = tf.shape(ids, out_type=tf.int64)[0]
    return tf.pad(out, [[0, rows - tf.shape(out, out_type=tf.int64)[0]], [0, 0]])


def nb_weights(ids, weights, ratios, group_weight):
    """A group's tf-idf ``weights`` (SparseTensor, term ids ``ids``) -> each term's weight times its log-count
    ratio (``ratios``[id]), each row back to unit L2 length, then times ``group_weight``: the NB twin's
    features (the numpy twin: ``training.loco.nb_scaled``)."""
    scaled = tf.SparseTensor(weights.indices, weights.values * tf.gather(tf.cast(ratios, weights.values.dtype),
                                                                         ids.values), weights.dense_shape)
    normalized = l2_normalize_rows(scaled)
    return tf.SparseTensor(normalized.indices, normalized.values * group_weight, normalized.dense_shape)


def build_classifier(vocab_sizes, dim=1, l2=0.0, learning_rate=None, classes=2, optimizer="adam"):
    """``vocab_sizes``: {group: vocabulary size (the features drop terms outside it)}. Binary (one sigmoid
    output, the default) or ``classes``-way softmax (negative / neutral / positive). ``dim`` 1: linear;
    > 1: embedding bag of that width and a dense layer. ``l2`` is Keras's (``l2 * sum(w^2)``, half the
    training objective's convention); ``optimizer``/``learning_rate`` from OPTIMIZERS (default rate when
    None)."""
    optimizer_class, default_rate = OPTIMIZERS[optimizer]
    learning_rate = learning_rate or default_rate
    linear = dim == 1
    width = (classes if classes > 2 else 1) if linear else dim
    inputs = {}
    bags = []
    for group, size in vocab_sizes.items():
        ids = keras.Input(shape=(None,), sparse=True, dtype="int64", name=ids_name(group))
        weights = keras.Input(shape=(None,), sparse=True, dtype="float32", name=weights_name(group))
        inputs.update({ids_name(group): ids, weights_name(group): weights})
        bags.append(SparseTermLayer(size, width, l2, group, "zeros" if linear else "glorot_uniform",
                                    name=f"{group}_terms")(
            {ids_name(group): ids, weights_name(group): weights}))
    x = bags[0] if len(bags) == 1 else keras.layers.Add(name="terms")(bags)
    outputs = classes if classes > 2 else 1
    logit = keras.layers.Dense(outputs, name="logit",
                               kernel_initializer="identity" if linear else "glorot_uniform")
    x = logit(x)
    if linear:
        logit.kernel.trainable = False  # see the module docstring: only the bias learns here
    out = keras.layers.Activation("softmax" if classes > 2 else "sigmoid", name="probability")(x)
    model = keras.Model(inputs, out)
    if classes > 2:
        model.compile(optimizer=optimizer_class(learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    else:
        model.compile(optimizer=optimizer_class(learning_rate), loss="binary_crossentropy",
                      metrics=[keras.metrics.AUC(name="auc")])
    return model


class ServingModule(tf.Module):
    """The exported model: tf.Transform's layer, then the classifier's forward pass on its weights (copied
    into plain variables: the SavedModel needs neither Keras nor the training code to load)."""

    def __init__(self, classifier, tft_output, threshold, nb=None):
        """``nb``: None, or (the NB twin's classifier, {group: log-count ratios}) for the ensemble."""
        super().__init__()
        self.tft_layer = tft_output.transform_features_layer()
        self.groups = [layer.group for layer in classifier.layers if isinstance(layer, SparseTermLayer)]
        self.tables = [tf.Variable(classifier.get_layer(f"{g}_terms").get_weights()[0], trainable=False,
                                   name=f"{g}_terms") for g in self.groups]
        kernel, bias = classifier.get_layer("logit").get_weights()
        self.kernel = tf.Variable(kernel, trainable=False, name="kernel")
        self.bias = tf.Variable(bias, trainable=False, name="bias")
        self.threshold = tf.Variable(float(threshold), trainable=False, name="threshold")
        self.nb_tables, self.nb_ratios = [], []
        if nb is not None:
            nb_classifier, ratios = nb
            self.nb_tables = [tf.Variable(nb_classifier.get_layer(f"{g}_terms").get_weights()[0], trainable=False,
                                          name=f"nb_{g}_terms") for g in self.groups]
            self.nb_ratios = [tf.Variable(np.asarray(ratios[g], np.float32), trainable=False, name=f"nb_{g}_ratios")
                              for g in self.groups]
            nb_kernel, nb_bias = nb_classifier.get_layer("logit").get_weights()
            self.nb_kernel = tf.Variable(nb_kernel, trainable=False, name="nb_kernel")
            self.nb_bias = tf.Variable(nb_bias, trainable=False, name="nb_bias")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="summary"),
                                  tf.TensorSpec([None], tf.string, name="review_text")])
    def serve(self, summary, review_text):
        features = self.tft_layer({"summary": summary, "review_text": review_text})
        bags = [bag(table, features[ids_name(g)], features[weights_name(g)])
                for g, table in zip(self.groups, self.tables)]
        logits = tf.matmul(tf.add_n(bags), self.kernel) + self.bias
        if self.nb_tables:   # the ensemble: plus the NB twin's logit
            nb_bags = [bag(table, features[ids_name(g)],
                           nb_weights(features[ids_name(g)], features[weights_name(g)], ratios, GROUP_WEIGHTS[g]))
                       for g, table, ratios in zip(self.groups, self.nb_tables, self.nb_ratios)]
            logits += tf.matmul(tf.add_n(nb_bags), self.nb_kernel) + self.nb_bias
        if self.kernel.shape[-1] == 1:
            probability = tf.reshape(tf.sigmoid(logits), [-1])
            return {"probability": probability, "label": tf.cast(probability >= self.threshold, tf.int32)}
        probabilities = tf.nn.softmax(logits)  # 3 classes: negative, neutral, positive
        return {"probability": probabilities[:, -1], "probabilities": probabilities,
                "label": tf.cast(tf.argmax(probabilities, axis=1), tf.int32)}


def export(classifier, tft_output, threshold, path, nb=None):
    module = ServingModule(classifier, tft_output, threshold, nb)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
    return path
