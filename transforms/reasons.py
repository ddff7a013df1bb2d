"""Dead-letter stages and reason codes: the one list every stage, test and the generator share.

A dead letter is a record the job could not turn into a silver row. It carries the stage that rejected
it and one of the reason codes below; a free-text ``detail`` says more (the field, the parser message).
"""

# stages
READ = "read"                  # a whole input file (record_type "file"): what could not be read of it
PARSE = "parse"                # bytes -> JSON object (reviews and products)
CLEAN = "clean"                # required fields and value rules (reviews)
CLEAN_PRODUCTS = "clean_products"
WINDOW = "window"              # streaming: every window of the record had closed when it arrived

# read-stage reasons (record_type "file"; the detail names the byte offset, source_position the first line
# not read whole); the lines before the fault are kept
TRUNCATED_FILE = "truncated_file"      # a compressed stream that ends before its end marker (a cut upload)
CORRUPT_FILE = "corrupt_file"          # bytes the decompressor rejects (corruption, not gzip at all)

# parse-stage reasons
INVALID_UTF8 = "invalid_utf8"          # the line is not valid UTF-8
TOO_LARGE = "too_large"                # the line is longer than --max_record_bytes
HTML_PAYLOAD = "html_payload"          # an HTML page / fragment instead of JSON (e.g. a 503 body)
MALFORMED_JSON = "malformed_json"      # not parseable JSON (truncated line, log line, ...)
NOT_AN_OBJECT = "not_an_object"        # valid JSON but not an object ([...], "x", 3)
WRONG_TYPE = "wrong_type"              # a field whose JSON type cannot be coerced; detail names the field
TOO_DEEP = "too_deep"                  # containers nested deeper than transforms.parse.MAX_NESTING_DEPTH
TOO_MANY_FIELDS = "too_many_fields"    # more than transforms.parse.MAX_RECORD_FIELDS object keys in all
REVIEW_TIME_OUT_OF_RANGE = "review_time_out_of_range"  # a number, but outside the hard review-time bound
EMPTY_EVENT = "empty_event"            # streaming: an event whose body is empty or whitespace

# clean-stage reasons (reviews)
MISSING_ASIN = "missing_asin"
MISSING_REVIEWER_ID = "missing_reviewer_id"
MISSING_OVERALL = "missing_overall"            # absent or null
OVERALL_NOT_NUMERIC = "overall_not_numeric"    # a string that is not a number ("five")
OVERALL_OUT_OF_RANGE = "overall_out_of_range"  # not within 1..5 (0 included: the seeds' "0 stars")
MISSING_REVIEW_TIME = "missing_review_time"    # unixReviewTime absent or null

# window-stage reason (streaming): latest window end + allowed lateness <= the source's watermark
TOO_LATE = "too_late"

PARSE_REASONS = (INVALID_UTF8, TOO_LARGE, HTML_PAYLOAD, MALFORMED_JSON, NOT_AN_OBJECT, WRONG_TYPE, TOO_DEEP,
                 TOO_MANY_FIELDS, REVIEW_TIME_OUT_OF_RANGE)
REVIEW_CLEAN_REASONS = (MISSING_ASIN, MISSING_REVIEWER_ID, MISSING_OVERALL, OVERALL_NOT_NUMERIC,
                        OVERALL_OUT_OF_RANGE, MISSING_REVIEW_TIME)
PRODUCT_CLEAN_REASONS = (MISSING_ASIN,)
FILE_REASONS = (TRUNCATED_FILE, CORRUPT_FILE)
STREAM_REASONS = (EMPTY_EVENT, TOO_LATE)  # only events can be empty or late
