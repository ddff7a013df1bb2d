"""Property tests (hypothesis) of the markup contract of ``transforms.text`` (issue 21: entities were
unescaped after tags were stripped, so ``&lt;script&gt;`` came back as a live ``<script>`` in silver).

The contract, with markup defined as an HTML tokenizer reads it: ``<`` followed by an ASCII letter (start
tag), ``/`` (end tag), ``!`` (comment, doctype) or ``?`` (processing instruction). Any other ``<`` is text.

* the cleaned text contains no match of ``MARKUP`` (below, written out independently of the module);
* cleaning is idempotent: ``clean(clean(x)) == clean(x)``;
* nothing is left that one more level of unescaping would change (an entity ``html.unescape`` decodes);
* text without ``&`` and without markup is left as it is (``<3``, ``a < b > c``);
* the vectorised rule (reviews, ``clean_html``) and the per-value twin (products, ``clean_markup``) agree up
  to whitespace, and the product fields and the review columns hold no markup either.
"""
import html
import re

import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from transforms.clean import clean_reviews
from transforms.parse import Chunk, parse_reviews
from transforms.products import clean_product
from transforms.text import clean_html, clean_markup

MARKUP = re.compile(r"<[A-Za-z/!?]")
REFERENCE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")

PIECES = ["<", ">", "&", ";", "#", "/", "!", "?", "=", '"', "lt", "gt", "amp", "quot", "nbsp", "#39", "#x3C",
          "#60", "#38", "script", "b", "span", " ", "  ", "\n", "\t", "3", "a", "x", "é", "\u2019", "&lt;",
          "&gt;", "&amp;", "<b>", "</b>", "<!--", "-->", "&#x26;", "&l", "t;"]
markup_text = st.lists(st.sampled_from(PIECES), max_size=30).map("".join) | st.text(max_size=40)

SEEDS = ["&lt;script&gt;alert(1)&lt;/script&gt;", "&amp;lt;b&amp;gt;x", "&amp;" * 12 + "lt;b>z", "a<b<c",
         "&l&#116;;b&gt;", "&#x26;lt;i&#x26;gt;", "<<b>b>", "x <span class=\"a", "&bogus; <3 a < b > c",
         "&lt;&lt;b&gt;&gt;", "&&amp;lt;b>", "<&b>"]


def _vector(text):
    return clean_html(pa.array([text], pa.string()))[0].as_py()


def _no_decodable_reference(text):
    return all(html.unescape(m.group()).replace("\xa0", " ") == m.group() for m in REFERENCE.finditer(text))


def _assert_contract(clean, text):
    out = clean(text)
    assert MARKUP.search(out) is None, (text, out)
    assert clean(out) == out, (text, out)
    assert _no_decodable_reference(out), (text, out)
    if "&" not in text and MARKUP.search(text) is None:
        assert " ".join(out.split()) == " ".join(text.split())


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(markup_text)
@example("&lt;script&gt;alert(1)&lt;/script&gt;")
@example("&amp;" * 12 + "lt;b>z")   # escaping nested deeper than MAX_MARKUP_PASSES: neutralised
@example("&l&#116;;b&gt;")          # a reference that decodes into the middle of another
@example("<&b>")                    # unescaping makes no tag here, but an opener is still markup
def test_markup_contract_vectorised(text):
    _assert_contract(_vector, text)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(markup_text)
@example("&lt;script&gt;alert(1)&lt;/script&gt;")
@example("&amp;" * 12 + "lt;b>z")
@example("&l&#116;;b&gt;")
def test_markup_contract_per_value(text):
    _assert_contract(clean_markup, text)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(markup_text)
def test_vectorised_and_per_value_rules_agree(text):
    assert " ".join(_vector(text).split()) == " ".join(clean_markup(text).split())


def test_vectorised_rule_over_many_rows_at_once():
    # rows settle after different numbers of passes; each must get its own fixed point
    values = SEEDS + [None, "", "plain", "<3"]
    out = clean_html(pa.array(values, pa.string())).to_pylist()
    assert out == [None if v is None else _vector(v) for v in values]


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(markup_text, min_size=1, max_size=8))
def test_silver_review_and_product_text_hold_no_markup(texts):
    import json
    lines = [json.dumps({"asin": "B000000001", "reviewerID": f"R{i}", "overall": 5.0, "unixReviewTime": 1400000000,
                         "reviewText": t, "summary": t, "reviewerName": t, "style": {t + ":": t}}).encode()
             for i, t in enumerate(texts)]
    batch, dead, _ = parse_reviews(Chunk(b"\n".join(lines) + b"\n", "s", 1))
    table, _ = clean_reviews(batch)
    assert dead == [] and table.num_rows == len(texts)
    for row in table.to_pylist():
        strings = [row["review_text"], row["summary"], row["reviewer_name"]]
        strings += [s for kv in row["style"] for s in kv]
        assert not any(MARKUP.search(s) for s in strings if s), row
    for t in texts:
        product, _, _ = clean_product({"asin": "B000000001", "title": t, "brand": t, "main_cat": t, "category": [t]},
                                      "s", 1)
        strings = [product["title"], product["brand"], product["main_cat"], *(product["categories"] or [])]
        assert not any(MARKUP.search(s) for s in strings if s), product


def test_the_issue_example_in_a_brand_and_a_review():
    product, _, _ = clean_product({"asin": "B000000001", "brand": "&lt;script&gt;alert(1)&lt;/script&gt;"}, "s", 1)
    assert product["brand"] == "alert(1)"
    assert _vector("&lt;script&gt;alert(1)&lt;/script&gt;") == "alert(1)"
    assert _vector("Love it <3, a < b") == "Love it <3, a < b"
