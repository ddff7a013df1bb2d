"""TensorFlow side of the project: the tf.Transform preprocessing and the sentiment model (next issue).

Labels come from ``transforms.labels`` (the same definition the gold metrics use); training data is the
job's silver review Parquet, never a second cleaning path. TensorFlow is an optional extra
(``pip install -e .[training]``) so Beam workers that do not score need not install it.
"""
from beam_pipeline import quiet

quiet.install()   # TensorFlow's start-up chatter, whichever training module imports it first
