"""Packaging for the Amazon reviews Beam job.

Ships the code to Dataflow / Flink workers (``--setup_file=./setup.py``). The packages are listed
explicitly: ``transforms`` and ``runners`` are also names of unrelated PyPI projects, so
``find_packages`` could pick up the wrong thing on a worker image.
"""
from setuptools import setup

BEAM_VERSION = "2.77.0"  # the one place Beam's version is set

setup(
    name="amazon-reviews-beam",
    version="0.1.0",
    description="One Apache Beam graph for Amazon reviews: ADLS JSON or Event Hubs -> silver Parquet, "
                "windowed gold metrics, dead letters, and a tf.Transform sentiment model",
    python_requires=">=3.10,<3.13",
    packages=["beam_pipeline", "beam_pipeline.dashboard", "transforms", "training", "runners"],
    # the dashboard's page: served from the package, never from a CDN
    package_data={"beam_pipeline.dashboard": ["static/*.html", "static/*.js", "static/*.css"]},
    install_requires=[
        f"apache-beam[azure]=={BEAM_VERSION}",
        "pyarrow>=17,<26",
        "numpy>=1.26",
        "orjson>=3.9",
        "azure-storage-blob>=12.19",
        "azure-identity>=1.15",
        # Delta Lake tables (delta-rs): the commit step and every reader of the tables
        "deltalake>=1.6,<2",
        "implicit>=0.7.3", "scipy>=1.11", "threadpoolctl>=3",  # training.recommend (ALS, sparse kNN)
        # The local Event Hubs endpoint speaks through the SDK's own AMQP codec: pin what it is tested with.
        "azure-eventhub==5.15.1",
    ],
    extras_require={
        # vaderSentiment: its lexicon file only, for `python -m training.loco --lexicon` (a measured candidate)
        "training": ["tensorflow==2.21.0", "tensorflow-transform==1.21.0", "vaderSentiment>=3.3"],
        # workers that score with --sentiment_model need TensorFlow only (the model embeds its transform graph)
        "scoring": ["tensorflow==2.21.0"],
        # [gcp] lets the tests build the Dataflow graph offline (--dry_run) and lets you launch on Dataflow
        "dataflow": [f"apache-beam[gcp]=={BEAM_VERSION}"],
        # selenium drives Debian's chromium + chromium-driver in the dashboard's browser tests
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6", "duckdb>=1.0", f"apache-beam[gcp]=={BEAM_VERSION}", "selenium>=4.20"],
        "test": ["pytest>=8", "hypothesis>=6", "duckdb>=1.0", f"apache-beam[gcp]=={BEAM_VERSION}", "selenium>=4.20"],
    },
)
