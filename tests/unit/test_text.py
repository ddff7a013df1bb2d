"""Unit tests for transforms.text: HTML tags and entities, word counts, model normalisation.

Expected values come from the rules in the module docstrings (tags -> spaces, entities unescaped one
level like ``html.unescape``, whitespace collapsed and trimmed only on rows that were touched, words =
runs of non-ASCII-whitespace bytes), worked out by hand or with an independent oracle (``html.unescape``,
``bytes.split``).
"""
import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from transforms.text import clean_html, normalize_for_model, word_count


def _s(values):
    return pa.array(values, type=pa.string())


# ---------------------------------------------------------------------------------------------------
# clean_html

@pytest.mark.parametrize("text, expected", [
    ("a<br/>b", "a b"),                                 # a tag becomes a space
    ("a<br />b", "a b"),
    ("<p>Hello</p>", "Hello"),                          # spaces from tags at the ends are trimmed
    ("x  <b>y</b>  z", "x y z"),                        # touched row: whitespace runs collapsed
    ("<div>\n\tline one<br>\n line two</div>", "line one line two"),
    ('<span class="a">Inner</span>', "Inner"),
    ("Tom &amp; Jerry", "Tom & Jerry"),
    ("&quot;quoted&quot;", '"quoted"'),
    ("it&#39;s", "it's"),
    ("it&apos;s", "it's"),
    ("a&nbsp;&nbsp;b", "a b"),                          # &nbsp; -> space, then collapsed
    ("&lt;b&gt;bold&lt;/b&gt;", "bold"),                # escaped tags are tags once unescaped: stripped
    ("&lt;script&gt;alert(1)&lt;/script&gt;", "alert(1)"),
    ("a < b > c", "a < b > c"),                         # '<' not followed by a letter, / ! ?: text
    ("a &lt; b", "a < b"),
    ("it&rsquo;s", "it\u2019s"),                        # not in the fixed list: html.unescape fallback
    ("it&#8217;s", "it\u2019s"),
    ("it&#x2019;s", "it\u2019s"),
    ("caf&eacute; &amp; cr&egrave;me", "caf\u00e9 & cr\u00e8me"),
    ("AT&T", "AT&T"),                                   # '&' without ';' is not an entity
    ("Love <3", "Love <3"),                             # '<' without '>' is not a tag
])
def test_clean_html_rules(text, expected):
    assert clean_html(_s([text])).to_pylist() == [expected]


def test_clean_html_leaves_untouched_rows_alone():
    # rows without '<' or '&' are not normalised at all: inner and outer whitespace is kept
    values = ["  two   spaces  ", "tab\there", "line\nbreak", "plain"]
    assert clean_html(_s(values)).to_pylist() == values


def test_clean_html_nulls_and_empty_strings():
    out = clean_html(_s([None, "", "<b>x</b>", None, "", "&amp;"]))
    assert out.to_pylist() == [None, "", "x", None, "", "&"]
    assert out.type == pa.string()


def test_clean_html_all_null_and_empty_arrays():
    assert clean_html(_s([None, None])).to_pylist() == [None, None]
    assert clean_html(_s([])).to_pylist() == []


def test_clean_html_tag_only_row_becomes_empty():
    assert clean_html(_s(["<br/>", "<p></p>"])).to_pylist() == ["", ""]


def test_clean_html_chunked_array_keeps_chunking():
    col = pa.chunked_array([_s(["plain", "a<br>b"]), _s([]), _s([None, "&lt;3"]), _s(["  x  "])])
    out = clean_html(col)
    assert isinstance(out, pa.ChunkedArray)
    assert [len(c) for c in out.chunks] == [2, 0, 2, 1]
    assert out.to_pylist() == ["plain", "a b", None, "<3", "  x  "]


def test_clean_html_sliced_array():
    arr = _s(["<b>skip</b>", "a<br>b", "  keep  ", "x &amp; y", "<i>skip</i>"]).slice(1, 3)
    assert clean_html(arr).to_pylist() == ["a b", "  keep  ", "x & y"]


@pytest.mark.parametrize("text, expected", [
    ("&amp;lt;", "<"), ("&amp;quot;x&amp;quot;", '"x"'), ("&amp;#39;", "'"), ("&amp;rsquo;", "\u2019"),
    ("Tom &amp;amp; Jerry", "Tom & Jerry"), ("&amp;lt;b&amp;gt;x", "x"), ("&amp;amp;lt;3", "<3"),
])
def test_clean_html_unescapes_to_a_fixed_point(text, expected):
    # the markup rule: strip and unescape until nothing changes (escaped markup cannot come back to life)
    assert clean_html(_s([text])).to_pylist() == [expected]


def test_clean_html_reviewer_name_style_text_keeps_lone_angles():
    values = ["Tom &amp; Jerry", "a <b> &lt; c", "a  &amp;  b", "it&rsquo;s", "plain  text", None, ""]
    expected = ["Tom & Jerry", "a < c", "a & b", "it\u2019s", "plain  text", None, ""]
    assert clean_html(_s(values)).to_pylist() == expected


# ---------------------------------------------------------------------------------------------------
# word_count

def _oracle_words(s):
    # documented: runs of non-whitespace *bytes*, whitespace = the ASCII bytes bytes.split() splits on
    return 0 if s is None else len(s.encode("utf-8").split())


@pytest.mark.parametrize("text, expected", [
    (None, 0),
    ("", 0),
    ("   ", 0),
    ("\t\n\r", 0),
    ("one", 1),
    ("one two", 2),
    ("  leading", 1),
    ("trailing  ", 1),
    ("  both  sides  ", 2),
    ("a\tb\nc\rd", 4),
    ("a \t\n  b", 2),
    ("a\x0bb\x0cc", 3),                    # vertical tab and form feed are ASCII whitespace too
    ("h\u00e9llo w\u00f6rld \u00f1", 3),
    ("\u65e5\u672c\u8a9e \u30c6\u30ad\u30b9\u30c8", 2),
    ("emoji \U0001F600 ok", 3),
])
def test_word_count_cases(text, expected):
    assert _oracle_words(text) == expected  # the hand count agrees with the documented oracle
    out = word_count(_s([text]))
    assert out.type == pa.int32()
    assert out.to_pylist() == [expected]


def test_word_count_mixed_array():
    values = [None, "", "a b", "   ", " x ", "one\ttwo\nthree"]
    assert word_count(_s(values)).to_pylist() == [0, 0, 2, 0, 1, 3]


def test_word_count_empty_array():
    assert word_count(_s([])).to_pylist() == []


def test_word_count_sliced_arrays():
    values = ["skip me please", "a b", None, "", "  x  y  z ", "last one here"]
    arr = _s(values)
    for start in range(len(values)):
        for length in range(len(values) - start + 1):
            sl = arr.slice(start, length)
            assert sl.offset == start
            assert word_count(sl).to_pylist() == [_oracle_words(v) for v in values[start:start + length]]


def test_word_count_slice_starting_mid_buffer_with_empty_rows():
    arr = _s(["abc def", "", "", "g"]).slice(1)
    assert word_count(arr).to_pylist() == [0, 0, 1]


def test_word_count_chunked():
    col = pa.chunked_array([_s(["a b", None]), _s([]), _s(["", " c d e "])])
    out = word_count(col)
    assert isinstance(out, pa.ChunkedArray)
    assert out.type == pa.int32()
    assert [len(c) for c in out.chunks] == [2, 0, 2]
    assert out.to_pylist() == [2, 0, 0, 3]


def test_word_count_large_string():
    arr = pa.array(["a b c", None, " d "], type=pa.large_string())
    assert word_count(arr).to_pylist() == [3, 0, 1]


def test_word_count_random_against_oracle():
    rng = random.Random(1234)
    alphabet = ["a", "b", "\u00e9", "\u65e5", " ", " ", "\t", "\n", "\r", "\x0b", "\x0c"]
    values = []
    for _ in range(400):
        if rng.random() < 0.05:
            values.append(None)
        else:
            values.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))))
    arr = _s(values)
    assert word_count(arr).to_pylist() == [_oracle_words(v) for v in values]
    sl = arr.slice(37, 200)
    assert word_count(sl).to_pylist() == [_oracle_words(v) for v in values[37:237]]


def test_word_count_null_slot_with_data_is_zero():
    arr = pc.if_else(pa.array([True, False, True]), _s(["a b", "c d e", "f"]), pa.scalar(None, pa.string()))
    assert arr.to_pylist() == ["a b", None, "f"]
    assert word_count(arr).to_pylist() == [2, 0, 1]  # documented: 0 for null


# ---------------------------------------------------------------------------------------------------
# normalize_for_model

@pytest.mark.parametrize("text, expected", [
    ("Great<br/>product", "great product"),
    ("Great<br />product<BR>ok", "great product ok"),
    ("see http://x.com/a now", "see now"),
    ("see https://www.example.com/path?q=1&amp;r=2 now", "see now"),
    ("visit www.example.com/page today", "visit today"),
    ("I Loved It!!! 10/10", "i loved it"),
    ("Tom &amp; Jerry", "tom jerry"),
    ("Don't stop", "don't stop"),
    ("'quoted' words''", "quoted words"),
    ("x_y", "x y"),
    ("abc123def", "abc def"),
    ("  spaced\t\nout  ", "spaced out"),
    ("", ""),
    (None, None),
])
def test_normalize_for_model(text, expected):
    assert normalize_for_model(_s([text])).to_pylist() == [expected]


def test_normalize_for_model_leaves_no_tag_or_url_fragments():
    texts = ["Nice<br/>item", "a<br />b", "Link: http://x.com/a.", "go to https://amazon.com/dp/B00X",
             "www.shop.com rocks"]
    for out in normalize_for_model(_s(texts)).to_pylist():
        words = out.split()
        for fragment in ("br", "http", "https", "www", "com", "dp"):
            assert fragment not in words, (out, fragment)
        assert not any(ch.isdigit() for ch in out)
        assert out == out.lower()


def test_normalize_for_model_chunked():
    col = pa.chunked_array([_s(["A<br>B"]), _s(["C 1 D"])])
    assert normalize_for_model(col).to_pylist() == ["a b", "c d"]


@pytest.mark.parametrize("text", ["see HTTP://X.COM/A now", "see Https://x.com now", "see WWW.X.COM now"])
def test_normalize_for_model_removes_upper_case_urls(text):
    assert normalize_for_model(_s([text])).to_pylist() == ["see now"]


@pytest.mark.parametrize("text, expected", [
    ("Caf\u00e9 CR\u00c8ME", "caf\u00e9 cr\u00e8me"),
    ("na\u00efve fa\u00e7ade", "na\u00efve fa\u00e7ade"),
    ("\u65e5\u672c\u8a9e", "\u65e5\u672c\u8a9e"),
])
def test_normalize_for_model_keeps_non_ascii_letters(text, expected):
    # letters are not punctuation: only punctuation, digits and '_' are documented as removed
    assert normalize_for_model(_s([text])).to_pylist() == [expected]


# ---------------------------------------------------------------------------------------------------
# clean_html on single values

@pytest.mark.parametrize("text, expected", [
    (None, None),
    ("", ""),
    ("plain", "plain"),
    ("a<br>b", "a b"),
    ("<span>T&amp;C</span>", "T&C"),
    ("  untouched  ", "  untouched  "),
])
def test_clean_html_single_value(text, expected):
    assert clean_html(pa.array([text], type=pa.string())).to_pylist() == [expected]
