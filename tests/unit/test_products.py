"""Unit tests for transforms.products: one table of input -> expected output per rule."""
import datetime

import pyarrow as pa
import pytest

from transforms import reasons
from transforms.products import (
    MAX_CATEGORY_CHARS,
    clean_asin,
    clean_brand,
    clean_categories,
    clean_main_cat,
    clean_product,
    clean_text,
    clean_title,
    count_images,
    looks_like_code,
    parse_date,
    parse_price,
    parse_rank,
)
from transforms.schemas import SILVER_PRODUCT_SCHEMA
from transforms.text import clean_markup
from transforms.text import strip_markup_text as strip_tags

CSS_JUNK = (".a-box-inner{background-color:#fff}#alohaBuyBoxWidget .selected{background-color:#fffbf3;"
            "border-color:#e77600;box-shadow:0 0 3px rgba(228,121,17,.5)}")
HTML_DIV = ('<div class="a-fixed-left-grid a-spacing-none"><div class="a-fixed-left-grid-inner" '
            'style="padding-left:280px"><span data-x="{&quot;a&quot;:&quot;1&quot;}">')
IMG_MAIN_CAT = ('<img src="https://images-na.ssl-images-amazon.com/images/G/01/nav2/images/gui/'
                'amazon-fashion-store-new._CB520838675_.png" class="nav-categ-image" alt="AMAZON FASHION"/>')


# --- text helpers -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"),
    ("<span id=\"x\">Inner</span>", " Inner "),
    ("a<br/>b", "a b"),
    ("<!-- note -->x", " x"),
    ('<span class="a-size-medium a-color-secondary"', " "),  # unclosed tag at the end
    ("x <b", "x  "),
    ("a < b > c", "a < b > c"),  # not a tag: no letter after '<'
    ("Love <3", "Love <3"),
])
def test_strip_tags(text, expected):
    assert strip_tags(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Toys &amp; Games", "Toys & Games"),
    ("Maggiano&#39;s", "Maggiano's"),
    ("Brand&trade;", "Brand™"),
    ("it&rsquo;s", "it’s"),
    ("&#x41;", "A"),
    ("&quot;q&quot;", '"q"'),
    ("F&amp;amp;W", "F&W"),          # double-escaped
    ("I&amp;#39;m", "I'm"),          # double-escaped numeric
    ("Cats&nothing", "Cats&nothing"),  # no ';': not an entity
    ("R&D", "R&D"),
    ("&bogus;", "&bogus;"),          # unknown names stay as they are
    ("no entities", "no entities"),
])
def test_unescape_html(text, expected):
    # product text follows the markup rule of transforms.text (entities unescaped to a fixed point)
    assert clean_markup(text) == expected


@pytest.mark.parametrize("value, expected", [
    ("  a \n\t b  ", "a b"),
    ("<b>Bold</b> &amp; more", "Bold & more"),
    ("&lt;b&gt;", None),  # escaped markup is markup once unescaped: stripped (issue 21)
    ("&lt;script&gt;alert(1)&lt;/script&gt;", "alert(1)"),
    ("a &lt; b", "a < b"),
    ("", None),
    ("   ", None),
    ("<span></span>", None),
    (None, None),
    (12, None),
    ({"a": 1}, None),
    (["x"], None),
])
def test_clean_text(value, expected):
    assert clean_text(value) == expected


@pytest.mark.parametrize("text, expected", [
    (CSS_JUNK, True),
    ("body {color: red}", True),
    ("var x = 1;", True),
    ("function f() { return 1; }", True),
    ("window.ue_t0 = 1", True),
    ("document.write('x')", True),
    ('Magazines" />', True),
    ("Magazines'>", True),
    ("Amazon eGift Card", False),
    ("Variety Magazine", False),
    ("Function Junction", False),
    ('12" Ruler', False),
    ("Set {A, B}", False),  # braces without a declaration
])
def test_looks_like_code(text, expected):
    assert looks_like_code(text) is expected


# --- fields -------------------------------------------------------------------------------------

@pytest.mark.parametrize("asin, expected", [
    ("B001BKEWF2", "B001BKEWF2"),
    (" 0345816021 ", "0345816021"),
    ("", None),
    ("   ", None),
    (None, None),
    (123, None),
    (["B001BKEWF2"], None),
])
def test_clean_asin(asin, expected):
    assert clean_asin(asin) == expected


@pytest.mark.parametrize("title, expected", [
    ("Amazon.com Gift Cards", "Amazon.com Gift Cards"),
    (" Amazon eGift Card", "Amazon eGift Card"),
    ("Disney &amp; Me", "Disney & Me"),
    ("Happy Valentine&#39;s Day", "Happy Valentine's Day"),
    ("Brand&trade; Thing", "Brand™ Thing"),
    ("It&rsquo;s Here", "It’s Here"),
    ('<span id="productTitle">Inner</span>', "Inner"),
    ("Line\n  one\ttwo", "Line one two"),
    ('<span class="a-size-medium a-color-secondary"', None),  # unclosed tag only
    (' Magazines" />', None),                                # tail of a tag
    (CSS_JUNK, None),
    ("var ue_t0 = ue_t0 || +new Date();", None),
    ("<script>var x = 1;</script>", None),
    ("", None),
    ("   ", None),
    (None, None),
    ({"text": "x"}, None),
    (42, None),
])
def test_clean_title(title, expected):
    assert clean_title(title) == expected


@pytest.mark.parametrize("brand, expected", [
    ("Hearst Magazines", "Hearst Magazines"),
    ("  Conde Nast ", "Conde Nast"),
    ("F&amp;W Publications", "F&W Publications"),
    ("by\n    \n    Microsoft", "Microsoft"),
    ("By\n    Acme", "Acme"),
    ("by Acme", "Acme"),
    ("Byron Bay", "Byron Bay"),  # "by" must be a word followed by whitespace
    ("Visit Amazon's Neil Gaiman Page", "Neil Gaiman"),
    ("Visit Amazon&#39;s Neil Gaiman Page", "Neil Gaiman"),
    ("Visit Amazon’s Neil Gaiman Page", "Neil Gaiman"),
    ("Unknown", None),
    ("UNKNOWN", None),
    (" unknown ", None),
    ("", None),
    ("  ", None),
    ("by\n  ", "by"),  # nothing after "by": kept as written
    (None, None),
    (7, None),
    (["Acme"], None),
])
def test_clean_brand(brand, expected):
    assert clean_brand(brand) == expected


@pytest.mark.parametrize("category, expected", [
    (["Gift Cards", "Gift Cards"], ["Gift Cards", "Gift Cards"]),
    (["Magazine Subscriptions", "Professional &amp; Trade"],
     ["Magazine Subscriptions", "Professional & Trade"]),
    (["Gift Cards", "Gift Cards", "</span></span></span>"], ["Gift Cards", "Gift Cards"]),
    (["Gift Cards", "</span></span></span>", "Starbucks Gift Card 25", "Starbucks"], ["Gift Cards"]),
    (["</span></span></span>", "Starbucks"], None),
    (["Books", "x" * (MAX_CATEGORY_CHARS + 1), "Fiction"], ["Books", "Fiction"]),
    (["Books", "x" * MAX_CATEGORY_CHARS], ["Books", "x" * MAX_CATEGORY_CHARS]),
    (["  Books ", "", "   ", "<b></b>", "Fiction"], ["Books", "Fiction"]),
    (["Books", None, 3, ["nested"], "Fiction"], ["Books", "Fiction"]),
    ([], None),
    ([""], None),
    (None, None),
    ("Books", None),
    (5, None),
    ({"a": "b"}, None),
])
def test_clean_categories(category, expected):
    assert clean_categories(category) == expected


@pytest.mark.parametrize("main_cat, categories, expected", [
    ("Gift Cards", ["Books"], "Gift Cards"),
    ("Toys &amp; Games", None, "Toys & Games"),
    (IMG_MAIN_CAT, None, "AMAZON FASHION"),
    ('<img src="x.png" alt="Tools &amp; Home"/>', None, "Tools & Home"),
    ("<img src='x.png' alt='Beauty' class='c'>", None, "Beauty"),
    ('<IMG SRC="x.png" ALT="Beauty">', None, "Beauty"),
    ('<img src="x.png" alt=""/>', ["Books"], "Books"),   # empty alt: fall back
    ('<img src="x.png"/>', ["Books"], "Books"),          # no alt: fall back
    ("  Video Games ", None, "Video Games"),
    ("", ["Gift Cards", "Gift Cards"], "Gift Cards"),
    ("   ", ["Gift Cards"], "Gift Cards"),
    (None, ["Gift Cards"], "Gift Cards"),
    (12, ["Gift Cards"], "Gift Cards"),
    ("", None, None),  # never an invented "undefined"
    ("", [], None),
    (None, None, None),
])
def test_clean_main_cat(main_cat, categories, expected):
    assert clean_main_cat(main_cat, categories) == expected


NO_PRICE = (None, None, None)


@pytest.mark.parametrize("price, expected", [
    ("$12.99", (12.99, 12.99, 12.99)),
    ("  $25.00 ", (25.0, 25.0, 25.0)),
    ("$7", (7.0, 7.0, 7.0)),
    ("$1,299.00", (1299.0, 1299.0, 1299.0)),
    ("$1,250.00", (1250.0, 1250.0, 1250.0)),
    ("$1,000,000", (1000000.0, 1000000.0, 1000000.0)),
    ("$0.00", (0.0, 0.0, 0.0)),
    ("$4.99 - $12.99", (8.99, 4.99, 12.99)),
    ("$4.99-$12.99", (8.99, 4.99, 12.99)),
    ("$4.99 – $12.99", (8.99, 4.99, 12.99)),  # en dash
    ("$12.99 - $4.99", (8.99, 4.99, 12.99)),  # reversed range
    ("$1.00 - $2.25", (1.62, 1.0, 2.25)),     # midpoint 1.625 rounded to 2 decimals
    ("$1,000.00 - $2,000.00", (1500.0, 1000.0, 2000.0)),
    (12.99, (12.99, 12.99, 12.99)),
    (25, (25.0, 25.0, 25.0)),
    ("", NO_PRICE),
    ("   ", NO_PRICE),
    (None, NO_PRICE),
    (CSS_JUNK, NO_PRICE),
    ("\n\t\t   \n\r\n    <div class=\"a-section a-spacing-none\"", NO_PRICE),
    ("\n\n\n<script", NO_PRICE),
    ("12.99", NO_PRICE),           # no $ amount
    ("free", NO_PRICE),
    ("$", NO_PRICE),
    ("$12.99 and up", NO_PRICE),
    ("$1,29.00", NO_PRICE),        # malformed separators
    ("$-5.00", NO_PRICE),
    ("-$5.00", NO_PRICE),
    (-5.0, NO_PRICE),
    (float("nan"), NO_PRICE),
    (float("inf"), NO_PRICE),
    (10**400, NO_PRICE),           # an int beyond the float range
    ("$" + "9" * 400, NO_PRICE),   # parses to inf
    (True, NO_PRICE),
    (["$12.99"], NO_PRICE),
    ({"amount": 12.99}, NO_PRICE),
])
def test_parse_price(price, expected):
    assert parse_price(price) == expected


@pytest.mark.parametrize("record, expected", [
    ({"image": ["http://a", "https://b"]}, 2),
    ({"imageURLHighRes": ["https://a", "https://b", "https://c"], "imageURL": ["https://a"]}, 3),
    ({"imageURL": ["https://a"]}, 1),
    ({"image": [], "imageURLHighRes": [], "imageURL": ["https://a", "https://b"]}, 2),
    ({"image": ["88"], "imageURL": ["https://a"]}, 1),     # junk-only list: the next one counts
    ({"image": ["88", "https://a", None, 5]}, 1),
    ({"image": ["https://a"], "imageURL": ["https://a", "https://b"]}, 1),  # first with a URL wins
    ({"image": "https://a"}, 0),                           # not a list
    ({"image": None}, 0),
    ({}, 0),
])
def test_count_images(record, expected):
    lists = (record.get("image"), record.get("imageURLHighRes"), record.get("imageURL"))
    assert count_images(*lists) == expected


@pytest.mark.parametrize("rank, expected", [
    (">#2,230,717 in Books (", (2230717, "Books")),
    ("2,230,717 in Books (", (2230717, "Books")),
    ("2 in Gift Cards (", (2, "Gift Cards")),
    ("#12 in Kindle Store (See Top 100 in Kindle Store)", (12, "Kindle Store")),
    (">#2,893,775 in Toys &amp; Games (See Top 100 in Toys &amp; Games)", (2893775, "Toys & Games")),
    (">#1,019 in Gift Cards > Kids", (1019, "Gift Cards > Kids")),
    ("  557,857 in Clothing, Shoes & Jewelry (", (557857, "Clothing, Shoes & Jewelry")),
    ([">#2,893,775 in Toys & Games (See Top 100 in Toys & Games)", ">#1,019 in Gift Cards > Kids",
      ">#6,056 in Gift Cards > Departments > Gift Cards"], (1019, "Gift Cards > Kids")),
    # a tie: the first entry wins
    ([">#369 in Gift Cards > Kids", ">#369 in Gift Cards > For Him"], (369, "Gift Cards > Kids")),
    (["junk", None, ">#5 in Books ("], (5, "Books")),
    ([], (None, None)),
    ("", (None, None)),
    (None, (None, None)),
    (123, (None, None)),
    ({"Books": 12}, (None, None)),
    ("Books", (None, None)),
    ("#12 in (", (None, None)),                     # no category
    ("#0 in Books (", (None, None)),                # not a rank
    ("#99999999999999999999 in Books (", (None, None)),  # beyond int64
    ("#" + "1" * 5000 + " in Books (", (None, None)),    # absurdly long number
    ("<div>#12 in Books</div>", (None, None)),
])
def test_parse_rank(rank, expected):
    assert parse_rank(rank) == expected


@pytest.mark.parametrize("date, expected", [
    ("March 4, 2014", datetime.date(2014, 3, 4)),
    ("Mar 4, 2014", datetime.date(2014, 3, 4)),
    ("Mar. 4, 2014", datetime.date(2014, 3, 4)),
    ("Sept 5, 2012", datetime.date(2012, 9, 5)),
    ("september 26, 2013", datetime.date(2013, 9, 26)),
    (" May 15, 2009 ", datetime.date(2009, 5, 15)),
    ("December 13 2013", datetime.date(2013, 12, 13)),
    ("February 30, 2014", None),  # impossible date
    ("Smarch 4, 2014", None),
    ("2014-03-04", None),
    ("", None),
    ("</div>", None),
    (HTML_DIV, None),
    (None, None),
    (20140304, None),
])
def test_parse_date(date, expected):
    assert parse_date(date) == expected


# --- record -------------------------------------------------------------------------------------

DIRTY_RECORD = {
    "asin": "B00BXOFI1I",
    "title": '<span id="productTitle">Vintage Plumes &amp; Co&trade;</span>',
    "brand": "Visit Amazon's 11:11 Page",
    "main_cat": IMG_MAIN_CAT,
    "category": ["Gift Cards", "Gift Card Accessories", "</span></span></span>", "Junk"],
    "price": "$4.99 - $12.99",
    "imageURL": ["https://a", "https://b"],
    "imageURLHighRes": ["https://a", "https://b"],
    "rank": ["#557,857 in Clothing, Shoes &amp; Jewelry (", ">#19 in Gift Cards > Departments > Gift Cards"],
    "date": "May 15, 2009",
    "description": ["ignored"],
}


def test_clean_product_dirty_record():
    row, reason, detail = clean_product(DIRTY_RECORD, "metadata/part-0.jsonl.gz", 7)
    assert (reason, detail) == (None, None)
    assert row == {
        "asin": "B00BXOFI1I",
        "title": "Vintage Plumes & Co™",
        "brand": "11:11",
        "main_cat": "AMAZON FASHION",
        "categories": ["Gift Cards", "Gift Card Accessories"],
        "price": 8.99,
        "price_min": 4.99,
        "price_max": 12.99,
        "image_count": 2,
        "rank": 19,
        "rank_category": "Gift Cards > Departments > Gift Cards",
        "date_first_available": datetime.date(2009, 5, 15),
        "schema_version": "2018",
        "_rescued_data": '{"description":["ignored"]}',  # no rule reads description
        "source": "metadata/part-0.jsonl.gz",
        "source_position": 7,
    }


def test_clean_product_asin_only():
    row, reason, _ = clean_product({"asin": "B001"}, "s", 1)
    assert reason is None
    assert row == {name: None for name in SILVER_PRODUCT_SCHEMA.names} | {
        "asin": "B001", "image_count": 0, "schema_version": "2018", "source": "s", "source_position": 1}


def test_clean_product_main_cat_falls_back_to_cleaned_category():
    row, _, _ = clean_product({"asin": "B001", "main_cat": "", "category": ["Toys &amp; Games"]}, "s", 1)
    assert row["main_cat"] == "Toys & Games"


@pytest.mark.parametrize("field, value", [
    ("title", {"a": 1}),
    ("title", 3),
    ("brand", ["Acme"]),
    ("main_cat", 5),
    ("category", 5),
    ("category", "Books"),
    ("price", {"v": 1}),
    ("image", 3),
    ("imageURL", "https://a"),
    ("rank", {"Books": 1}),
    ("date", 20140304),
])
def test_clean_product_impossible_types_become_null_not_rejects(field, value):
    row, reason, detail = clean_product({"asin": "B001", field: value}, "s", 1)
    assert (reason, detail) == (None, None)
    assert row["asin"] == "B001"


@pytest.mark.parametrize("record, detail", [
    ({}, "asin: missing"),
    ({"asin": None}, "asin: null"),
    ({"asin": ""}, "asin: blank"),
    ({"asin": "   "}, "asin: blank"),
    ({"asin": 123}, "asin: int"),
    ({"asin": ["B001"]}, "asin: list"),
    ({"asin": {"id": "B001"}, "title": "x"}, "asin: dict"),
])
def test_clean_product_rejects_missing_asin(record, detail):
    assert clean_product(record, "s", 1) == (None, reasons.MISSING_ASIN, detail)


@pytest.mark.parametrize("record, detail", [
    ([{"asin": "B001"}], "list"),
    ("B001", "str"),
    (3, "int"),
    (None, "NoneType"),
])
def test_clean_product_rejects_non_objects(record, detail):
    assert clean_product(record, "s", 1) == (None, reasons.NOT_AN_OBJECT, detail)


def test_rejection_reasons_are_registered():
    assert reasons.MISSING_ASIN in reasons.PRODUCT_CLEAN_REASONS
    assert reasons.NOT_AN_OBJECT in reasons.PARSE_REASONS


@pytest.mark.parametrize("record", [
    DIRTY_RECORD,
    {"asin": "B001"},
    {"asin": "B001", "rank": "#9,223,372,036,854,775,807 in X ("},  # the largest rank int64 holds
])
def test_rows_fit_the_silver_product_schema(record):
    row, _, _ = clean_product(record, "s", 1)
    assert list(row) == SILVER_PRODUCT_SCHEMA.names
    table = pa.Table.from_pylist([row], schema=SILVER_PRODUCT_SCHEMA)
    assert table.to_pylist() == [row]
