"""Explicit Arrow schemas: what the parser expects, what silver holds, what a dead letter looks like.

Column names in silver are snake_case; the raw names of the 2014/2018 Amazon schemas are kept only in
``RAW_REVIEW_SCHEMA`` (the parser's explicit schema and the canonical columns every parsed row is mapped
onto) and those of the 2023 schema in ``RAW_REVIEW_2023_SCHEMA`` (read, then mapped: see
``transforms.parse``; which schema a record follows: ``transforms.schema_versions``). ``year`` and
``month`` are the hive partition columns of silver reviews: they live in the directory names
(``year=2016/month=3``), not in the files.
"""
import pyarrow as pa

# Fields read with a fixed type. ``style`` is an object with free-form keys ("Size:", "Format:"), so the
# parser infers it as a struct per block and the cleaner turns it into a map.
RAW_REVIEW_SCHEMA = pa.schema([
    ("overall", pa.float64()),
    ("verified", pa.bool_()),
    ("reviewerID", pa.string()),
    ("asin", pa.string()),
    ("reviewerName", pa.string()),
    ("reviewText", pa.string()),
    ("summary", pa.string()),
    ("unixReviewTime", pa.int64()),
    ("vote", pa.string()),
    ("image", pa.list_(pa.string())),
    ("helpful", pa.list_(pa.int64())),  # 2014 schema: [helpful votes, total votes]
])
RAW_REVIEW_FIELDS = tuple(RAW_REVIEW_SCHEMA.names) + ("style",)

# The Amazon Reviews 2023 review fields and the types the parser maps them from (``asin`` is shared, above).
# Arrow infers them (declaring them would cost every 2018 line); the parser checks the inferred types.
IMAGE_2023_TYPE = pa.struct([
    ("small_image_url", pa.string()),
    ("medium_image_url", pa.string()),
    ("large_image_url", pa.string()),
    ("attachment_type", pa.string()),
])
RAW_REVIEW_2023_SCHEMA = pa.schema([
    ("rating", pa.float64()),
    ("title", pa.string()),
    ("text", pa.string()),
    ("images", pa.list_(IMAGE_2023_TYPE)),
    ("parent_asin", pa.string()),
    ("user_id", pa.string()),
    ("timestamp", pa.int64()),            # milliseconds since the epoch
    ("helpful_vote", pa.int64()),
    ("verified_purchase", pa.bool_()),
])

# Where the record came from and what it held beyond its schema (reviews and products).
SCHEMA_FIELDS = pa.schema([
    ("schema_version", pa.string()),  # "2014", "2018" or "2023" (products: "2018" or "2023")
    ("_rescued_data", pa.string()),   # JSON object of the fields the record's schema does not know; null: none
])

# Lineage carried from the source through cleaning (dropped from silver only where said).
LINEAGE_SCHEMA = pa.schema([
    ("source", pa.string()),          # file path, or "eventhub:<hub>/<partition>"
    ("source_position", pa.int64()),  # 1-based line number, or the event's sequence number
])

PRODUCT_FIELDS = pa.schema([
    ("brand", pa.string()),
    ("main_cat", pa.string()),
    ("price", pa.float64()),
    ("title", pa.string()),
])

# Added by the sentiment model (``--sentiment_model``, beam_pipeline/scoring.py); null when no model scored
# the run. Always present, so the silver table keeps one schema whichever runs wrote its files.
PREDICTION_FIELDS = pa.schema([
    ("predicted_sentiment", pa.string()),      # "positive" / "negative": the model's label
    ("sentiment_probability", pa.float64()),   # the model's probability of the positive class
])

SILVER_REVIEW_SCHEMA = pa.schema([
    ("reviewer_id", pa.string()),
    ("asin", pa.string()),            # the product key everywhere (joins, buckets, gold): 2023 parent_asin
    ("overall", pa.float64()),
    ("verified", pa.bool_()),
    ("vote", pa.int64()),
    ("unix_review_time", pa.int64()),
    ("review_time", pa.timestamp("ms", tz="UTC")),  # Parquet has no seconds unit
    ("review_date", pa.date32()),
    ("year", pa.int32()),
    ("month", pa.int32()),
    ("reviewer_name", pa.string()),
    ("summary", pa.string()),
    ("review_text", pa.string()),
    ("review_text_from_summary", pa.bool_()),
    ("review_length_words", pa.int32()),
    ("style", pa.map_(pa.string(), pa.string())),
    ("image_urls", pa.list_(pa.string())),
    ("image_count", pa.int32()),
    ("variant_asin", pa.string()),    # 2023: the record's own asin (``asin`` is its parent_asin); else null
    *SCHEMA_FIELDS,
    *LINEAGE_SCHEMA,
    *PRODUCT_FIELDS,
    *PREDICTION_FIELDS,
])
REVIEW_PARTITION_COLUMNS = ("year", "month")
# The schema of the Parquet files under silver/reviews/year=*/month=*/ (partition columns removed).
SILVER_REVIEW_FILE_SCHEMA = pa.schema([f for f in SILVER_REVIEW_SCHEMA if f.name not in REVIEW_PARTITION_COLUMNS])
# Columns the cleaner produces before the product join (and before scoring).
CLEAN_REVIEW_SCHEMA = pa.schema([f for f in SILVER_REVIEW_SCHEMA
                                 if f.name not in PRODUCT_FIELDS.names + PREDICTION_FIELDS.names])

SILVER_PRODUCT_SCHEMA = pa.schema([
    ("asin", pa.string()),            # 2023 metadata: parent_asin
    ("title", pa.string()),
    ("brand", pa.string()),
    ("main_cat", pa.string()),
    ("categories", pa.list_(pa.string())),
    ("price", pa.float64()),
    ("price_min", pa.float64()),
    ("price_max", pa.float64()),
    ("image_count", pa.int32()),
    ("rank", pa.int64()),
    ("rank_category", pa.string()),
    ("date_first_available", pa.date32()),
    *SCHEMA_FIELDS,
    *LINEAGE_SCHEMA,
])

DEAD_LETTER_SCHEMA = pa.schema([
    ("record_type", pa.string()),     # "review" or "product"
    ("stage", pa.string()),           # transforms.reasons stage
    ("reason", pa.string()),          # transforms.reasons reason code
    ("detail", pa.string()),          # free text: field name, parser message
    ("source", pa.string()),
    ("source_position", pa.int64()),
    ("payload", pa.string()),         # the raw record, UTF-8 with invalid bytes backslash-escaped, cut
    ("payload_bytes", pa.int64()),    # length of the raw record in bytes
    ("payload_truncated", pa.bool_()),
])
