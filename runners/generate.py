"""Synthetic Amazon reviews and product metadata (2018 schema) with known defects, for tests and benchmarks.

    python -m runners.generate --out DIR --reviews N [--files K] [--seed S] [--gzip]
                               [--dirty-rate 0.01] [--duplicate-rate 0.01] [--products-missing-rate 0.02]

Writes
    DIR/reviews/part-0000i-of-0000K.jsonl[.gz]        N review lines in all (JSON lines, bytes)
    DIR/metadata/products-00000-of-00001.jsonl[.gz]   product metadata lines
    DIR/manifest.json                                 options, the expected counts of the job (silver rows,
                                                      dead letters by reason, duplicates, join matches), every
                                                      injected defect by kind, sha256 of every file

No real data is used or shipped: all text comes from the small word lists and sentence templates in
runners/generate.py, with the review text's sentiment following the star rating (positive for 4-5 stars,
negative for 1-2, mixed for 3). Reviewer and asin ids come from Zipf-like pools (~N/4 reviewers, ~N/40 asins). Only ``random.Random(seed)`` is used and nothing
depends on str hashing, so the same arguments give byte-identical files in any process.

Review rows. A base row gets at most one defect; ~dirty_rate of the base rows get one, each kind an equal
share (every kind at least once when N >= 1000; ``huge_line`` at most 1 per 100k rows). Dead kinds and the
dead letter the job must write for them (stage/reason, see transforms/reasons.py):

    truncated_json        a good line cut short                         parse/malformed_json
    log_line              "ERROR 2018-07-01 ... upstream timeout", CSV  parse/malformed_json
    html_page             "<html><body><h1>503 ...</h1></body></html>"  parse/html_payload
    invalid_utf8          raw invalid bytes inside reviewText           parse/invalid_utf8
    huge_line             reviewText making the line ~1.1 MB (> 1 MiB)  parse/too_large
    json_array            [1, 2, 3], "just a string", 42                parse/not_an_object
    wrong_type            reviewText {"text": ...} or image a number    parse/wrong_type
    missing_asin          key removed                                   clean/missing_asin
    missing_reviewer_id   key removed                                   clean/missing_reviewer_id
    overall_null          "overall": null                               clean/missing_overall
    overall_absent        key removed                                   clean/missing_overall
    overall_not_numeric   "overall": "five"                             clean/overall_not_numeric
    overall_zero          "overall": 0.0                                clean/overall_out_of_range
    overall_out_of_range  6.0, 10.0 or -1.0                             clean/overall_out_of_range
    missing_review_time   unixReviewTime and reviewTime removed         clean/missing_review_time

Kinds the job must clean and keep (they count as silver rows):

    overall_string "4.0", vote_commas "1,234", verified_string "true"/"false", review_time_string
    "1388534400", style_string (the style object JSON-encoded as a string), html_text (tags and entities in
    reviewText, summary in <b>), review_text_null (reviewText null or absent, summary present),
    image_corrupt (an "88" entry among the image URLs), schema_2014 (helpful [h, t], no verified/style/
    image/vote).

Exact duplicates: ~duplicate_rate of the N lines are byte-identical copies of good (non-dead) lines, shuffled
anywhere. (reviewerID, asin, unixReviewTime) is unique over the base rows, so only these copies share a
content key.

Products: one line per asin referenced by a good review, except ~products_missing_rate of those asins
(their reviews stay unmatched after the join). ~10 x dirty_rate of the products (10 % at the default) carry
one dirty value each (img/empty/&amp; main_cat, range/empty/CSS-junk/thousands price, empty/"Unknown"/
"Visit Amazon's X Page"/"By\\n X" brand, <span> or entity title, a </span></span></span> sentinel in
category); all are kept. Dead: product_malformed (truncated line, parse/malformed_json) and
product_missing_asin (clean_products/missing_asin), ~dirty_rate of the products each, for asins no review
references. ~duplicate_rate of the product lines are exact copies of good ones.

manifest.json (sorted keys): for "reviews" and "products", records_in (= lines) = silver_rows + dead +
duplicates, dead_by_reason {reason: n}, defects {kind: n}, defect_outcomes {kind: "stage/reason" or
"silver"}; reviews also matched_products / unmatched_products (silver review rows whose asin has / lacks a
product line); "files" {relative path: {lines, bytes, sha256}} of the files as written.
"""
import argparse
import bisect
import datetime as _dt
import gzip as _gzip
import hashlib
import itertools
import json
import os
import random
import string
import sys
import time

import orjson

from transforms import reasons as R

MAX_RECORD_BYTES = 1048576          # the job's default --max_record_bytes; huge lines exceed it
HUGE_TEXT_CHARS = 1_100_000         # reviewText length of a huge line (~1.1 MB)
GZIP_LEVEL = 6
PROGRESS_EVERY = 100_000
FIRST_DAY = _dt.date(2010, 1, 1)
LAST_DAY = _dt.date(2018, 12, 31)
ID_CHARS = string.ascii_uppercase + string.digits
ALNUM = string.ascii_letters + string.digits
REVIEW_IMG = "https://images-na.ssl-images-amazon.com/images/I/{}._SY88.jpg"
PRODUCT_IMG = "https://images-na.ssl-images-amazon.com/images/I/{}._SS40_.jpg"
_INVALID_MARK = "@@INVALID_BYTES@@"

# ---------------------------------------------------------------------------------------------------------
# defect catalogue
# ---------------------------------------------------------------------------------------------------------
# kind -> (stage, reason) of the dead letter the job must write
REVIEW_DEAD_KINDS = {
    "truncated_json": (R.PARSE, R.MALFORMED_JSON),
    "log_line": (R.PARSE, R.MALFORMED_JSON),
    "html_page": (R.PARSE, R.HTML_PAYLOAD),
    "invalid_utf8": (R.PARSE, R.INVALID_UTF8),
    "huge_line": (R.PARSE, R.TOO_LARGE),
    "json_array": (R.PARSE, R.NOT_AN_OBJECT),
    "wrong_type": (R.PARSE, R.WRONG_TYPE),
    "missing_asin": (R.CLEAN, R.MISSING_ASIN),
    "missing_reviewer_id": (R.CLEAN, R.MISSING_REVIEWER_ID),
    "overall_null": (R.CLEAN, R.MISSING_OVERALL),
    "overall_absent": (R.CLEAN, R.MISSING_OVERALL),
    "overall_not_numeric": (R.CLEAN, R.OVERALL_NOT_NUMERIC),
    "overall_zero": (R.CLEAN, R.OVERALL_OUT_OF_RANGE),
    "overall_out_of_range": (R.CLEAN, R.OVERALL_OUT_OF_RANGE),
    "missing_review_time": (R.CLEAN, R.MISSING_REVIEW_TIME),
}
# kinds the job cleans and keeps
REVIEW_CLEANED_KINDS = ("overall_string", "vote_commas", "verified_string", "review_time_string", "style_string",
                        "html_text", "review_text_null", "image_corrupt", "schema_2014")
REVIEW_KINDS = tuple(REVIEW_DEAD_KINDS) + REVIEW_CLEANED_KINDS

PRODUCT_DEAD_KINDS = {
    "product_malformed": (R.PARSE, R.MALFORMED_JSON),
    "product_missing_asin": (R.CLEAN_PRODUCTS, R.MISSING_ASIN),
}
PRODUCT_VALUE_KINDS = ("main_cat_img", "main_cat_empty", "main_cat_amp", "price_range", "price_empty",
                       "price_junk", "price_thousands", "brand_empty", "brand_unknown", "brand_visit_page",
                       "brand_by_newline", "title_span", "title_entities", "category_sentinel")
PRODUCT_KINDS = tuple(PRODUCT_DEAD_KINDS) + PRODUCT_VALUE_KINDS

# ---------------------------------------------------------------------------------------------------------
# synthetic vocabulary (our own; no real review text)
# ---------------------------------------------------------------------------------------------------------
COLORS = [" Black", " White", " Navy", " Red", " Gray", " Blue", " Pink", " Green"]
# main_cat, category path, asin weight, nouns, aspects, style options {key: values}
CATEGORIES = [
    ("Office Products", ["Office Products", "Office & School Supplies", "Writing & Correction Supplies"], 20,
     ["pen", "stapler", "notebook", "desk organizer", "label maker", "highlighter set", "binder", "planner",
      "calculator", "paper shredder"],
     ["ink", "grip", "paper", "hinge", "spine", "clip", "cover"],
     {"Color:": COLORS, "Size:": [" 12 Count", " 24 Count", " 1 Pack", " 3 Pack"]}),
    ("All Beauty", ["Beauty & Personal Care", "Skin Care", "Face"], 14,
     ["face cream", "shampoo", "lipstick", "serum", "hair dryer", "nail polish", "body lotion", "cleanser"],
     ["scent", "texture", "bottle", "pump", "formula", "color"],
     {"Size:": [" 8 Fl Oz", " 1.7 Ounce", " 16 oz", " 3.4 Fl Oz"], "Scent:": [" Lavender", " Unscented",
                                                                             " Coconut", " Citrus"]}),
    ("AMAZON FASHION", ["Clothing, Shoes & Jewelry", "Women", "Clothing"], 16,
     ["dress", "t-shirt", "jacket", "watch", "handbag", "scarf", "hoodie", "belt"],
     ["fit", "fabric", "stitching", "zipper", "sizing", "color"],
     {"Size:": [" Small", " Medium", " Large", " X-Large"], "Color:": COLORS}),
    ("Appliances", ["Appliances", "Parts & Accessories"], 8,
     ["water filter", "dryer vent", "ice maker", "range hood filter", "washer hose", "refrigerator shelf"],
     ["fit", "seal", "installation", "motor", "filter", "hose"],
     {"Style:": [" 1 Pack", " 2 Pack", " 3 Pack"], "Size:": [" Standard", " Large"]}),
    ("Gift Cards", ["Gift Cards", "Gift Card Recipients"], 4,
     ["gift card", "gift card tin", "birthday gift card", "e-gift card"],
     ["design", "delivery", "balance", "packaging"],
     {"Gift Amount:": [" 25", " 50", " 100"], "Format:": [" Email", " Print at Home", " Gift Box"]}),
    ("Magazine Subscriptions", ["Magazine Subscriptions", "Professional & Educational Journals"], 4,
     ["magazine", "subscription", "journal", "quarterly"],
     ["articles", "photos", "delivery", "ads", "recipes", "layout"],
     {"Format:": [" Print Magazine", " Kindle Edition"]}),
    ("Home & Kitchen", ["Home & Kitchen", "Kitchen & Dining", "Cookware"], 20,
     ["skillet", "knife set", "coffee maker", "towel set", "cutting board", "storage bin", "pillow", "kettle"],
     ["handle", "coating", "lid", "finish", "size", "edge"],
     {"Size:": [" 10 Inch", " 12 Inch", " Queen", " King"], "Color:": COLORS}),
    ("Toys & Games", ["Toys & Games", "Puzzles", "Jigsaw Puzzles"], 14,
     ["puzzle", "board game", "building set", "plush toy", "remote control car", "card game"],
     ["pieces", "instructions", "box", "colors", "rules", "battery"],
     {"Style:": [" 500 Pieces", " 1000 Pieces", " Classic"], "Color:": COLORS}),
]

WORDS = {
    "love": ["love", "really like", "adore", "am impressed with", "enjoy", "am thrilled with"],
    "they_love": ["love", "really like", "adore", "enjoy", "are thrilled with", "use"],
    "padj": ["excellent", "great", "fantastic", "sturdy", "perfect", "wonderful", "solid", "beautiful",
             "comfortable", "reliable", "amazing", "well made", "superb", "lovely"],
    "nadj": ["terrible", "flimsy", "awful", "poor", "useless", "broken", "cheap", "horrible", "disappointing",
             "defective", "bad", "junky"],
    "mild": ["small", "thin", "loose", "stiff", "plain", "slow", "noisy", "average", "so-so"],
    "padv": ["perfectly", "great", "flawlessly", "really well", "as expected", "beautifully", "like a charm"],
    "people": ["anyone", "my friends", "everyone", "other buyers", "my family", "any parent"],
    "person": ["wife", "husband", "daughter", "son", "mom", "dad", "sister", "friend", "coworker", "grandson"],
    "time": ["two days", "a week", "three weeks", "a month", "two months", "one use", "a few days"],
    "pexcl": ["Highly recommend", "Love it", "Absolutely love it", "Best purchase ever", "So happy with it",
              "Great product", "Could not be happier"],
    "nexcl": ["Do not buy", "Very disappointed", "Complete junk", "What a letdown", "Save your money",
              "Avoid this one"],
    "really": ["definitely", "highly", "happily", "absolutely"],
    "fast": ["quickly", "on time", "early", "fast", "right away"],
    "nth": ["second", "third", "fourth"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"],
    "n": ["two", "three", "four", "five", "six", "seven"],
    "freq": ["every day", "daily", "once a week", "at work", "at home", "most days", "on weekends"],
}
POSITIVE = [
    "I {love} this {noun}.", "The {aspect} is {padj}.", "{pexcl}!", "Works {padv}.",
    "Would {really} recommend it to {people}.", "Bought this for my {person} and they {they_love} it.",
    "Really {padj} quality for the price.", "Exactly as described and arrived {fast}.",
    "This is my {nth} one and I will buy again.", "The {aspect} feels {padj} and {padj}.",
    "Very happy with this {noun}.", "No complaints at all.", "Much better than the {noun} I had before.",
    "Great value, the {aspect} is {padj}.", "Love the {aspect}.", "Five stars \u2014 no complaints.",
    "My {person} says it is {padj}.", "It has held up {padv} for {time}.", "Love it \U0001F44D",
]
NEGATIVE = [
    "The {aspect} is {nadj}.", "{nexcl}.", "It stopped working after {time}.",
    "I would not recommend this {noun} to anyone.", "Returned it {time} later.", "Total waste of money.",
    "The {aspect} broke after {time}.", "Very disappointed with this {noun}.",
    "Cheaply made and the {aspect} is {nadj}.", "Not worth the price at all.",
    "It looks nothing like the picture.", "Customer service never answered my emails.",
    "Arrived damaged and the {aspect} was {nadj}.", "I regret buying this {noun}.",
    "Worst {noun} I have ever owned.", "My {person} thought it was {nadj} too.", "Never again \U0001F44E",
]
MIXED = [
    "The {aspect} is {padj} but the {aspect} is {nadj}.", "It is okay for the price.",
    "Not bad, but not great either.", "It does the job, nothing special.", "Some things I like, some I do not.",
    "The {aspect} could be better.", "Decent {noun}, though the {aspect} is a bit {mild}.",
    "Average quality, about what I expected.", "It works, but I expected more.",
    "Three stars because the {aspect} is {mild}.", "Good {aspect}, {mild} {aspect}.",
]
NEUTRAL = [
    "I ordered it in {month}.", "It arrived in {n} days.", "I use it {freq}.",
    "I bought it to replace an old {noun}.", "My {person} picked the color.", "Shipping took about a week.",
    "I have had it for {time} now.", "It came in a plain box.", "I read the reviews before buying.",
    "This was for a {month} birthday.", "The {aspect} is as pictured.",
]
# rating -> (positive, negative, mixed, neutral) sentence weights
SENTIMENT_MIX = {5: (75, 0, 5, 20), 4: (60, 3, 15, 22), 3: (20, 20, 45, 15), 2: (5, 60, 15, 20),
                 1: (0, 78, 4, 18)}
SUMMARIES = {
    5: ["Five Stars", "Love it!", "Great {noun}", "Exactly what I needed", "Highly recommend", "Best {noun} ever",
        "Just perfect", "Excellent quality", "Awesome {noun}", "Absolutely love this {noun}"],
    4: ["Four Stars", "Good {noun}", "Pretty good", "Works well", "Nice {noun}", "Good value", "Happy with it",
        "Solid {noun} overall"],
    3: ["Three Stars", "It's okay", "Decent for the price", "Not bad", "Average {noun}", "Could be better",
        "Mixed feelings", "Just okay {noun}"],
    2: ["Two Stars", "Disappointed", "Not as described", "Cheap {noun}", "Not great", "Poor quality",
        "Expected much more"],
    1: ["One Star", "Waste of money", "Broke after a week", "Do not buy", "Terrible {noun}", "Total junk",
        "Returned it immediately"],
}
# overall 5, 4, 3, 2, 1
RATING_VALUES = (5, 4, 3, 2, 1)
RATING_WEIGHTS = (60, 18, 9, 5, 8)
# number of sentences 1..15
SENTENCE_WEIGHTS = (20, 18, 14, 11, 9, 7, 5, 4, 3, 2.5, 2, 1.5, 1.2, 1, 0.8)

FIRST_NAMES = ["John", "Mary", "James", "Linda", "Robert", "Susan", "Michael", "Karen", "David", "Lisa",
               "William", "Nancy", "Richard", "Betty", "Joseph", "Sandra", "Thomas", "Ashley", "Chris", "Emily",
               "Daniel", "Donna", "Matthew", "Carol", "Anthony", "Amanda", "Mark", "Melissa", "Paul", "Deborah",
               "Steven", "Laura", "Kevin", "Rebecca", "Brian", "Sharon", "Jason", "Cynthia", "Gary", "Kathy"]
LAST_NAMES = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson", "Taylor",
              "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker",
              "Hall", "Young", "Allen", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson"]
ENTITY_NAMES = ["J &amp; K", "Mom &amp; Dad", "Bob &amp; Sue {last}", "{first} &quot;{short}&quot; {last}",
                "A &amp; B Crafts", "{first} &amp; {first2}", "The {last}&#39;s"]
BRANDS = ["Acme", "Northwind", "Bluebird", "Zentro", "Kestrel", "Orbix", "Lumen", "Verdant", "Halcyon",
          "Pinecrest", "Solace", "Trident", "Novella", "Quillmark", "Brightway", "Copperleaf", "Everpeak",
          "Foxglove", "Granite Bay", "Harborline", "Ironwood", "Juniper Lane", "Kinetica", "Larkspur",
          "Meridian", "Nimbus", "Oakridge", "Palisade", "Redfern", "Silverline", "Tidewater", "Umbra",
          "Vantage", "Willowby", "Yarrow", "Zephyrine"]
TITLE_ADJ = ["Premium", "Classic", "Deluxe", "Compact", "Professional", "Everyday", "Heavy Duty", "Soft",
             "Ultra", "Essential", "Original", "Portable"]
PRODUCT_BLURBS = ["Made from durable materials for everyday use.", "Perfect for home, office or travel.",
                  "Easy to clean and simple to store.", "Backed by a one year limited warranty.",
                  "Designed and tested by our team.", "Satisfaction guaranteed or your money back.",
                  "Includes everything you need to get started.", "Lightweight and easy to carry."]
PRICE_JUNK = [".a-section{margin:0}", ".a-box-inner{background-color:#fff}",
              "#alohaBuyBoxWidget .selected{background-color:#fffbf3;border-color:#e77600}",
              "{display:none}.a-icon-prime{width:50px}"]
CATEGORY_JUNK = ["Compare with similar items", "Go to Your Orders to start the return and print the label",
                 "This item is not eligible for international shipping"]
LOG_LINES = ["ERROR 2018-{mm:02d}-{dd:02d} {hh:02d}:{mi:02d}:{ss:02d} upstream timeout (partition {p})",
             "WARN exporter: retrying batch {p} after 503 from upstream",
             "asin,overall,reviewerID,unixReviewTime",
             "{asin},{overall},{rid},{ts}",
             "INFO 2018-{mm:02d}-{dd:02d} export of partition {p} finished",
             "Traceback (most recent call last):"]
HTML_PAGES = ["<html><body><h1>503 Service Unavailable</h1></body></html>",
              "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
              "Gateway</h1></center></body></html>",
              "<html><head><title>Robot Check</title></head><body><p>Enter the characters you see below</p>"
              "</body></html>",
              "<?xml version=\"1.0\"?><Error><Code>ServerBusy</Code></Error>"]
NOT_OBJECTS = ["[1, 2, 3]", "\"just a string\"", "42", "[]", "[{{\"asin\": \"{asin}\", \"overall\": 5.0}}]"]
INVALID_BYTES = [b"\xff\xfe", b"caf\xe9", b"\x80\x81", b"\xc3\x28"]
ENTITY_SNIPPETS = ["Pros &amp; cons below.", "It is 8&quot; wide &amp; 11&quot; tall.",
                   "I &lt;3 it&nbsp;&nbsp;honestly.", "The seller&rsquo;s note said &quot;thank you&quot;.",
                   "Don&#39;t skip the manual &amp; the warranty card."]


def _html_escape(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def _fill(rng, template, noun, aspects):
    """Fill {placeholders} of a template; each occurrence draws its own word."""
    out = []
    for lit, field, _spec, _conv in string.Formatter().parse(template):
        out.append(lit)
        if field is None:
            continue
        if field == "noun":
            out.append(noun if noun is not None else rng.choice(CATEGORY_NOUNS_ALL))
        elif field == "aspect":
            out.append(rng.choice(aspects))
        else:
            out.append(rng.choice(WORDS[field]))
    text = "".join(out)
    return text[:1].upper() + text[1:]


CATEGORY_NOUNS_ALL = sorted({n for c in CATEGORIES for n in c[3]})


def _cum(weights):
    return list(itertools.accumulate(weights))


def _zipf_cum(n, s, offset):
    """Cumulative Zipf-Mandelbrot weights 1/(rank+offset)^s for ranks 1..n."""
    return list(itertools.accumulate(1.0 / (k + offset) ** s for k in range(1, n + 1)))


def _new_ids(rng, n, prefix, length, taken=()):
    seen, out = set(taken), []
    while len(out) < n:
        x = prefix + "".join(rng.choices(ID_CHARS, k=length))
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _shares(rng, kinds, total, at_least_one, caps=None):
    """Split ``total`` over ``kinds`` in equal shares (the remainder to randomly picked kinds)."""
    caps = caps or {}
    k = len(kinds)
    base, rem = divmod(total, k) if k else (0, 0)
    extra = set(rng.sample(range(k), rem)) if rem else set()
    out = {}
    for i, kind in enumerate(kinds):
        n = base + (1 if i in extra else 0)
        if at_least_one:
            n = max(1, n)
        if kind in caps:
            n = min(n, caps[kind])
        out[kind] = n
    return out


class _HashingWriter:
    """File-like sink that counts and hashes the bytes that reach the file (after gzip, if any)."""

    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, b):
        self.raw.write(b)
        self.sha.update(b)
        self.bytes += len(b)
        return len(b)

    def flush(self):
        self.raw.flush()


class _PartWriter:
    def __init__(self, path, gz):
        self.path = path
        self.raw = open(path, "wb")
        self.hw = _HashingWriter(self.raw)
        self.out = (_gzip.GzipFile(filename="", mode="wb", fileobj=self.hw, mtime=0, compresslevel=GZIP_LEVEL)
                    if gz else self.hw)
        self.buf = []
        self.lines = 0

    def add(self, line):
        self.buf.append(line)
        self.lines += 1
        if len(self.buf) >= 20000:
            self._drain()

    def _drain(self):
        if self.buf:
            self.buf.append(b"")
            self.out.write(b"\n".join(self.buf))
            self.buf = []

    def close(self):
        self._drain()
        if self.out is not self.hw:
            self.out.close()
        self.raw.close()
        return {"lines": self.lines, "bytes": self.hw.bytes, "sha256": self.hw.sha.hexdigest()}


def _remove_stale(folder):
    os.makedirs(folder, exist_ok=True)
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and (name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz"))):
            os.remove(path)


# ---------------------------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------------------------
class _Vocab:
    """Everything precomputed once: sentence and summary pools per (category, rating), styles, days."""

    def __init__(self, rng, pool_size=700):
        self.sent_pools = []       # [cat][rating] -> list of sentences
        self.summary_pools = []    # [cat][rating] -> list of summaries
        self.styles = []           # [cat] -> list of style dicts
        for main_cat, _path, _w, nouns, aspects, style_opts in CATEGORIES:
            by_rating, summ = {}, {}
            for r in RATING_VALUES:
                groups = (POSITIVE, NEGATIVE, MIXED, NEUTRAL)
                cw = _cum(SENTIMENT_MIX[r])
                pool = []
                for _ in range(pool_size):
                    g = groups[bisect.bisect(cw, rng.random() * cw[-1])]
                    pool.append(_fill(rng, rng.choice(g), rng.choice(nouns), aspects))
                by_rating[r] = pool
                summ[r] = [_fill(rng, t, n, aspects) if "{noun}" in t else t
                           for t in SUMMARIES[r] for n in nouns]
            self.sent_pools.append(by_rating)
            self.summary_pools.append(summ)
            keys = sorted(style_opts)
            styles = []
            for _ in range(40):
                chosen = [k for k in keys if rng.random() < 0.7] or [keys[0]]
                styles.append({k: rng.choice(style_opts[k]) for k in chosen})
            self.styles.append(styles)
        self.sent_cw = _cum(SENTENCE_WEIGHTS)
        # days 2010-01-01 .. 2018-12-31, later years more frequent
        n_days = (LAST_DAY - FIRST_DAY).days + 1
        self.day_ts, self.day_str, day_w = [], [], []
        epoch = _dt.date(1970, 1, 1)
        for i in range(n_days):
            d = FIRST_DAY + _dt.timedelta(days=i)
            self.day_ts.append((d - epoch).days * 86400)
            self.day_str.append(f"{d.month:02d} {d.day}, {d.year}")
            day_w.append(1.35 ** (d.year - FIRST_DAY.year))
        self.day_cw = _cum(day_w)
        self.n_days = n_days


def _reviewer_name(rng):
    u = rng.random()
    if u < 0.30:
        return "Amazon Customer"
    if u < 0.32:
        return "Kindle Customer"
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    if u < 0.335:
        return rng.choice(ENTITY_NAMES).format(first=first, first2=rng.choice(FIRST_NAMES), last=last,
                                               short=first[:2].upper())
    if u < 0.55:
        return f"{first} {last}"
    if u < 0.75:
        return f"{first} {last[0]}."
    if u < 0.85:
        return first
    if u < 0.93:
        return f"{first[0]}. {last}"
    return f"{first.lower()}{last.lower()[:3]}{rng.randrange(1, 99)}"


def _image_urls(rng, k, template=REVIEW_IMG):
    return [template.format("".join(rng.choices(ALNUM, k=10)) + "L") for _ in range(k)]


def _truncate(rng, full):
    """A proper prefix of a serialized object (never valid JSON), cut on a UTF-8 character boundary."""
    cut = rng.randrange(max(2, len(full) // 10), len(full) - 1)
    while cut > 1 and (full[cut] & 0xC0) == 0x80:
        cut -= 1
    return full[:cut]


def generate(out_dir, reviews, files=4, seed=42, dirty_rate=0.01, duplicate_rate=0.01, gzip=False,
             products_missing_rate=0.02, progress=None):
    """Write the review parts, the product file and manifest.json under ``out_dir``; return the manifest.

    ``progress``: optional callable ``progress(lines_written, total_lines)``, called every 100,000 review lines.
    """
    n_total = int(reviews)
    if n_total < 1:
        raise ValueError("reviews must be >= 1")
    if files < 1:
        raise ValueError("files must be >= 1")
    for name, v in (("dirty_rate", dirty_rate), ("duplicate_rate", duplicate_rate),
                    ("products_missing_rate", products_missing_rate)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be within 0..1")
    if duplicate_rate >= 1.0:
        raise ValueError("duplicate_rate must be < 1")
    files = min(int(files), n_total)
    rng = random.Random(seed)
    dumps = orjson.dumps
    big = n_total >= 1000

    # ---- plan: duplicates, defects ----
    n_dup = round(n_total * duplicate_rate)
    if big and duplicate_rate > 0:
        n_dup = max(1, n_dup)
    n_base = n_total - n_dup
    n_dirty = round(n_base * dirty_rate)
    huge_cap = max(1, n_total // 100_000) if big else 0
    counts = _shares(rng, REVIEW_KINDS, n_dirty, big and dirty_rate > 0, {"huge_line": huge_cap})
    while sum(counts.values()) > n_base:       # tiny N with a large rate
        k = max(REVIEW_KINDS, key=lambda x: counts[x])
        counts[k] -= 1
    plan = [k for k in REVIEW_KINDS for _ in range(counts[k])]
    positions = rng.sample(range(n_base), len(plan))
    defect_of = dict(zip(positions, plan))
    dead_kinds = set(REVIEW_DEAD_KINDS)
    n_dead = sum(counts[k] for k in REVIEW_DEAD_KINDS)
    if n_dup and n_base - n_dead <= 0:
        raise ValueError("no good rows left to duplicate: lower dirty_rate")
    dup_src = []
    for _ in range(n_dup):
        while True:
            b = rng.randrange(n_base)
            if defect_of.get(b) not in dead_kinds:
                dup_src.append(b)
                break
    seq = list(range(n_base))
    seq.extend(dup_src)
    rng.shuffle(seq)
    cached = set(dup_src)

    # ---- pools ----
    vocab = _Vocab(rng, pool_size=300 + min(2700, n_base // 200))  # more distinct sentences at scale
    n_rev = max(50, n_base // 4)
    n_asin = max(50, n_base // 40)
    reviewer_ids = _new_ids(rng, n_rev, "A", 13)
    reviewer_names = [_reviewer_name(rng) for _ in range(n_rev)]
    asins = _new_ids(rng, n_asin, "B0", 8)
    cat_cw = _cum(c[2] for c in CATEGORIES)
    asin_cat = [bisect.bisect(cat_cw, rng.random() * cat_cw[-1]) for _ in range(n_asin)]
    rev_idx = rng.choices(range(n_rev), cum_weights=_zipf_cum(n_rev, 0.75, 10.0), k=n_base)
    asin_idx = rng.choices(range(n_asin), cum_weights=_zipf_cum(n_asin, 1.0, 3.0), k=n_base)
    rating_idx = rng.choices(RATING_VALUES, weights=RATING_WEIGHTS, k=n_base)
    day_idx = rng.choices(range(vocab.n_days), cum_weights=vocab.day_cw, k=n_base)
    day_cw, day_total, n_days = vocab.day_cw, vocab.day_cw[-1], vocab.n_days
    sent_cw, sent_total = vocab.sent_cw, vocab.sent_cw[-1]
    used = set()
    good_per_asin = [0] * n_asin
    huge_text_cache = {}

    def make_line(b):
        ri, ai, r = rev_idx[b], asin_idx[b], rating_idx[b]
        day = day_idx[b]
        key = (ri * n_asin + ai) * n_days + day
        while key in used:
            day = bisect.bisect(day_cw, rng.random() * day_total)
            key = (ri * n_asin + ai) * n_days + day
        used.add(key)
        kind = defect_of.get(b)
        cat = asin_cat[ai]
        pool = vocab.sent_pools[cat][r]
        n_sent = bisect.bisect(sent_cw, rng.random() * sent_total) + 1
        text = " ".join(rng.choices(pool, k=n_sent))
        summary = rng.choice(vocab.summary_pools[cat][r])
        if kind is None or kind not in dead_kinds:
            good_per_asin[ai] += 1
        if kind == "schema_2014":
            t = rng.randrange(0, 12)
            d = {"reviewerID": reviewer_ids[ri], "asin": asins[ai], "reviewerName": reviewer_names[ri],
                 "helpful": [rng.randint(0, t), t], "reviewText": text, "overall": float(r),
                 "summary": summary, "unixReviewTime": vocab.day_ts[day], "reviewTime": vocab.day_str[day]}
            return dumps(d)
        d = {"overall": float(r), "verified": rng.random() < 0.9, "reviewTime": vocab.day_str[day],
             "reviewerID": reviewer_ids[ri], "asin": asins[ai]}
        if rng.random() < 0.4 or kind == "style_string":
            d["style"] = rng.choice(vocab.styles[cat])
        d["reviewerName"] = reviewer_names[ri]
        d["reviewText"] = text
        d["summary"] = summary
        d["unixReviewTime"] = vocab.day_ts[day]
        if rng.random() < 0.15 or kind == "vote_commas":
            d["vote"] = str(min(999, int(rng.paretovariate(1.3)) + 1))
        if rng.random() < 0.05 or kind == "image_corrupt":
            d["image"] = _image_urls(rng, rng.randint(1, 3))
        if kind is None:
            return dumps(d)
        return _apply_defect(rng, kind, d, pool, huge_text_cache)

    # ---- reviews ----
    rev_dir = os.path.join(out_dir, "reviews")
    meta_dir = os.path.join(out_dir, "metadata")
    _remove_stale(rev_dir)
    _remove_stale(meta_dir)
    ext = ".jsonl.gz" if gzip else ".jsonl"
    file_info = {}
    per_file = [n_total // files + (1 if k < n_total % files else 0) for k in range(files)]
    cache = {}
    pos = 0
    written = 0
    for k, cnt in enumerate(per_file):
        rel = f"reviews/part-{k:05d}-of-{files:05d}{ext}"
        w = _PartWriter(os.path.join(out_dir, rel), gzip)
        for b in seq[pos:pos + cnt]:
            if b in cached:
                line = cache.get(b)
                if line is None:
                    line = cache[b] = make_line(b)
            else:
                line = make_line(b)
            w.add(line)
            written += 1
            if progress is not None and written % PROGRESS_EVERY == 0:
                progress(written, n_total)
        pos += cnt
        file_info[rel] = w.close()
    del seq, cache, used

    silver = n_base - n_dead
    dead_by_reason = {}
    for kind, (_stage, reason) in REVIEW_DEAD_KINDS.items():
        if counts[kind]:
            dead_by_reason[reason] = dead_by_reason.get(reason, 0) + counts[kind]

    # ---- products ----
    referenced = [ai for ai in range(n_asin) if good_per_asin[ai]]
    n_missing = round(len(referenced) * products_missing_rate)
    if big and products_missing_rate > 0:
        n_missing = max(1, n_missing)
    n_missing = min(n_missing, len(referenced))
    missing = set(rng.sample(referenced, n_missing))
    product_ais = [ai for ai in referenced if ai not in missing]
    matched = sum(good_per_asin[ai] for ai in product_ais)
    n_prod = len(product_ais)

    value_rate = min(1.0, 10 * dirty_rate)
    pcounts = _shares(rng, PRODUCT_VALUE_KINDS, round(n_prod * value_rate), big and value_rate > 0)
    order = list(range(n_prod))
    rng.shuffle(order)
    pkind = {}
    amp_ok = [i for i in order if "&" in CATEGORIES[asin_cat[product_ais[i]]][0]]
    pcounts["main_cat_amp"] = min(pcounts["main_cat_amp"], len(amp_ok))
    for i in amp_ok[:pcounts["main_cat_amp"]]:
        pkind[i] = "main_cat_amp"
    free = [i for i in order if i not in pkind]
    j = 0
    for kind in PRODUCT_VALUE_KINDS:
        if kind == "main_cat_amp":
            continue
        take = min(pcounts[kind], len(free) - j)
        pcounts[kind] = take
        for i in free[j:j + take]:
            pkind[i] = kind
        j += take
    n_pdead_each = round(n_prod * dirty_rate)
    if big and dirty_rate > 0:
        n_pdead_each = max(1, n_pdead_each)
    for kind in PRODUCT_DEAD_KINDS:
        pcounts[kind] = n_pdead_each

    good_lines = [dumps(_product(rng, asins[ai], asin_cat[ai], asins, pkind.get(i)))
                  for i, ai in enumerate(product_ais)]
    fresh = _new_ids(rng, 2 * n_pdead_each, "B0", 8, taken=asins)
    dead_lines = []
    for x in range(n_pdead_each):
        dead_lines.append(_truncate(rng, dumps(_product(rng, fresh[2 * x], rng.randrange(len(CATEGORIES)),
                                                        asins, None))))
        p = _product(rng, fresh[2 * x + 1], rng.randrange(len(CATEGORIES)), asins, None)
        del p["asin"]
        dead_lines.append(dumps(p))
    n_pdup = round(n_prod * duplicate_rate) if n_prod else 0
    if big and duplicate_rate > 0 and n_prod:
        n_pdup = max(1, n_pdup)
    all_lines = good_lines + dead_lines + [good_lines[rng.randrange(n_prod)] for _ in range(n_pdup)]
    rng.shuffle(all_lines)
    rel = f"metadata/products-00000-of-00001{ext}"
    w = _PartWriter(os.path.join(out_dir, rel), gzip)
    for line in all_lines:
        w.add(line)
    file_info[rel] = w.close()

    manifest = {
        "generator": "runners.generate",
        "seed": seed,
        "options": {"reviews": n_total, "files": files, "dirty_rate": dirty_rate, "duplicate_rate": duplicate_rate,
                    "gzip": bool(gzip), "products_missing_rate": products_missing_rate},
        "max_record_bytes": MAX_RECORD_BYTES,
        "reviews": {
            "records_in": n_total,
            "silver_rows": silver,
            "dead": n_dead,
            "dead_by_reason": dead_by_reason,
            "duplicates": n_dup,
            "defects": {k: counts[k] for k in REVIEW_KINDS},
            "defect_outcomes": {k: (f"{REVIEW_DEAD_KINDS[k][0]}/{REVIEW_DEAD_KINDS[k][1]}"
                                    if k in REVIEW_DEAD_KINDS else "silver") for k in REVIEW_KINDS},
            "matched_products": matched,
            "unmatched_products": silver - matched,
            "pools": {"reviewers": n_rev, "asins": n_asin, "asins_referenced": len(referenced)},
        },
        "products": {
            "records_in": len(all_lines),
            "silver_rows": n_prod,
            "dead": 2 * n_pdead_each,
            "dead_by_reason": ({R.MALFORMED_JSON: n_pdead_each, R.MISSING_ASIN: n_pdead_each}
                               if n_pdead_each else {}),
            "duplicates": n_pdup,
            "defects": {k: pcounts[k] for k in PRODUCT_KINDS},
            "defect_outcomes": {k: (f"{PRODUCT_DEAD_KINDS[k][0]}/{PRODUCT_DEAD_KINDS[k][1]}"
                                    if k in PRODUCT_DEAD_KINDS else "silver") for k in PRODUCT_KINDS},
            "asins_without_product": n_missing,
        },
        "files": file_info,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.write("\n")
    return manifest


def _apply_defect(rng, kind, d, pool, huge_text_cache):
    """Serialize review ``d`` with one defect of ``kind``; return the line's bytes."""
    dumps = orjson.dumps
    if kind == "truncated_json":
        return _truncate(rng, dumps(d))
    if kind == "log_line":
        t = rng.choice(LOG_LINES)
        return t.format(mm=rng.randint(1, 12), dd=rng.randint(1, 28), hh=rng.randrange(24), mi=rng.randrange(60),
                        ss=rng.randrange(60), p=rng.randrange(1, 1200), asin=d["asin"], overall=d["overall"],
                        rid=d["reviewerID"], ts=d["unixReviewTime"]).encode()
    if kind == "html_page":
        return rng.choice(HTML_PAGES).encode()
    if kind == "invalid_utf8":
        words = d["reviewText"].split(" ")
        words.insert(rng.randrange(len(words) + 1), _INVALID_MARK)
        d["reviewText"] = " ".join(words)
        return dumps(d).replace(_INVALID_MARK.encode(), rng.choice(INVALID_BYTES))
    if kind == "huge_line":
        text = huge_text_cache.get(id(pool))
        if text is None:
            parts, n = [], 0
            while n < HUGE_TEXT_CHARS:
                s = rng.choice(pool)
                parts.append(s)
                n += len(s) + 1
            text = huge_text_cache[id(pool)] = " ".join(parts)
        d["reviewText"] = d["reviewText"] + " " + text
        return dumps(d)
    if kind == "json_array":
        return rng.choice(NOT_OBJECTS).format(asin=d["asin"]).encode()
    if kind == "wrong_type":
        if rng.random() < 0.5:
            d["reviewText"] = {"text": d["reviewText"]}
        else:
            d["image"] = rng.randint(1, 9)
        return dumps(d)
    if kind == "missing_asin":
        del d["asin"]
    elif kind == "missing_reviewer_id":
        del d["reviewerID"]
    elif kind == "overall_null":
        d["overall"] = None
    elif kind == "overall_absent":
        del d["overall"]
    elif kind == "overall_not_numeric":
        d["overall"] = rng.choice(["five", "four stars", "good", "***"])
    elif kind == "overall_zero":
        d["overall"] = 0.0
    elif kind == "overall_out_of_range":
        d["overall"] = rng.choice([6.0, 10.0, -1.0])
    elif kind == "missing_review_time":
        del d["unixReviewTime"]
        del d["reviewTime"]
    elif kind == "overall_string":
        d["overall"] = str(d["overall"])
    elif kind == "vote_commas":
        d["vote"] = f"{rng.randrange(1000, 25000):,}"
    elif kind == "verified_string":
        d["verified"] = "true" if d["verified"] else "false"
    elif kind == "review_time_string":
        d["unixReviewTime"] = str(d["unixReviewTime"])
    elif kind == "style_string":
        d["style"] = json.dumps(d["style"])
    elif kind == "html_text":
        sents = d["reviewText"].split(". ")
        sents = [_html_escape(s) for s in [s + "." for s in sents[:-1]] + sents[-1:]]
        body = rng.choice(["<br/>", "<br />", " &nbsp;", "</p><p>"]).join(sents)
        body += " " + rng.choice(ENTITY_SNIPPETS)
        if rng.random() < 0.4:
            body += f' <a href="https://www.amazon.com/dp/{d["asin"]}">See product</a>'
        d["reviewText"] = "<p>" + body + "</p>"
        d["summary"] = "<b>" + _html_escape(d["summary"]) + "</b>"
    elif kind == "review_text_null":
        if rng.random() < 0.5:
            d["reviewText"] = None
        else:
            del d["reviewText"]
    elif kind == "image_corrupt":
        d["image"].insert(rng.randrange(len(d["image"]) + 1), "88")
    else:  # pragma: no cover - the plan only holds known kinds
        raise AssertionError(kind)
    return dumps(d)


def _product(rng, asin, cat, asin_pool, kind):
    main_cat, path, _w, nouns, _aspects, _style = CATEGORIES[cat]
    brand = rng.choice(BRANDS)
    noun = rng.choice(nouns)
    inner = f"{rng.choice(TITLE_ADJ)} {noun.title()}"
    title = f"{brand} {inner}, {rng.choice(COLORS).strip()}"
    category = list(path)
    lo = rng.randrange(199, 9999) / 100
    price = f"${lo:.2f}"
    y = rng.randint(2000, 2018)
    date = f"{rng.choice(WORDS['month'])} {rng.randint(1, 28)}, {y}"
    if kind == "main_cat_img":
        slug = main_cat.lower().replace(" & ", "-").replace(" ", "-")
        main_cat = (f'<img src="https://images-na.ssl-images-amazon.com/images/G/01/nav2/images/gui/'
                    f'{slug}-store._CB{rng.randrange(10**8, 10**9)}_.png" class="nav-categ-image" '
                    f'alt="{main_cat}"/>')
    elif kind == "main_cat_empty":
        main_cat = ""
    elif kind == "main_cat_amp":
        main_cat = main_cat.replace("&", "&amp;")
    elif kind == "price_range":
        price = f"${lo:.2f} - ${lo + rng.randrange(100, 5000) / 100:.2f}"
    elif kind == "price_empty":
        price = ""
    elif kind == "price_junk":
        price = rng.choice(PRICE_JUNK)
    elif kind == "price_thousands":
        price = f"${rng.randrange(100000, 500000) / 100:,.2f}"
    elif kind == "brand_empty":
        brand = ""
    elif kind == "brand_unknown":
        brand = "Unknown"
    elif kind == "brand_visit_page":
        brand = f"Visit Amazon's {brand} Page"
    elif kind == "brand_by_newline":
        brand = f"By\n    {brand}"
    elif kind == "title_span":
        title = f'<span id="productTitle" class="a-size-large">{title}</span>'
    elif kind == "title_entities":
        title = f"{brand}&trade; {inner}" + rng.choice([" &amp; Case", " &amp; More", ", Gray &amp; White"])
    elif kind == "category_sentinel":
        category = category + ["</span></span></span>"] + rng.sample(CATEGORY_JUNK, rng.randint(1, 2))
    return {
        "category": category,
        "description": rng.sample(PRODUCT_BLURBS, rng.randint(0, 3)),
        "title": title,
        "also_buy": [rng.choice(asin_pool) for _ in range(rng.randint(0, 6))],
        "brand": brand,
        "rank": f"{rng.randrange(1, 2_000_000):,} in {path[0]} (",
        "main_cat": main_cat,
        "date": date,
        "price": price,
        "asin": asin,
        "image": _image_urls(rng, rng.randint(0, 5), PRODUCT_IMG),
    }


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------
def _rate(text):
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("must be a fraction within 0..1")
    return v


def _positive(text):
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return v


def main(argv=None):
    from beam_pipeline.cli import ArgumentParser
    ap = ArgumentParser(
        prog="python -m runners.generate",
        description="Generate synthetic Amazon reviews and product metadata (2018 schema) with known, counted "
                    "defects, plus manifest.json with the counts the job must reproduce.",
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, metavar="DIR",
                    help="output folder; gets reviews/, metadata/ and manifest.json. Old *.jsonl[.gz] files in "
                         "DIR/reviews and DIR/metadata are removed first")
    ap.add_argument("--reviews", required=True, type=_positive, metavar="N",
                    help="total number of review lines written (base rows + exact duplicates)")
    ap.add_argument("--files", type=_positive, default=4, metavar="K",
                    help="number of review part files, N split evenly (default 4)")
    ap.add_argument("--seed", type=int, default=42, metavar="S",
                    help="random seed; the same arguments give byte-identical files (default 42)")
    ap.add_argument("--dirty-rate", type=_rate, default=0.01, metavar="F",
                    help="fraction of base review rows carrying one defect, split equally over the defect kinds "
                         "(every kind at least once when N >= 1000); also ~fraction of products per dead product "
                         "kind, and 10x this fraction of products get a dirty value (default 0.01)")
    ap.add_argument("--duplicate-rate", type=_rate, default=0.01, metavar="F",
                    help="fraction of the N lines (and of the product lines) that are byte-identical copies of "
                         "good lines (default 0.01)")
    ap.add_argument("--products-missing-rate", type=_rate, default=0.02, metavar="F",
                    help="fraction of the asins referenced by good reviews that get no product line, so their "
                         "reviews stay unmatched after the join (default 0.02)")
    ap.add_argument("--gzip", action="store_true",
                    help="gzip every output file (*.jsonl.gz, deterministic: no name, mtime 0)")
    a = ap.parse_args(argv)
    if a.duplicate_rate >= 1.0:
        ap.error("--duplicate-rate must be < 1")
    from beam_pipeline.cli import fail, folder_problem
    problem = folder_problem(a.out, "--out")
    if problem:
        return fail(problem)

    t0 = time.time()

    def progress(done, total):
        print(f"generate: {done:,}/{total:,} review lines ({100 * done / total:.0f} %) "
              f"{time.time() - t0:.1f} s", file=sys.stderr, flush=True)

    m = generate(a.out, a.reviews, files=a.files, seed=a.seed, dirty_rate=a.dirty_rate,
                 duplicate_rate=a.duplicate_rate, gzip=a.gzip, products_missing_rate=a.products_missing_rate,
                 progress=progress)
    rv, pr = m["reviews"], m["products"]
    print(json.dumps({
        "out": a.out, "reviews": rv["records_in"], "files": m["options"]["files"], "gzip": a.gzip,
        "review_bytes": sum(v["bytes"] for k, v in m["files"].items() if k.startswith("reviews/")),
        "silver_rows": rv["silver_rows"], "dead": rv["dead"], "duplicates": rv["duplicates"],
        "matched_products": rv["matched_products"], "products": pr["records_in"],
        "product_silver_rows": pr["silver_rows"], "seconds": round(time.time() - t0, 2)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
