"""Hypothesis strategies of hostile review lines, shared by the property tests of the composites
(``tests/composite/test_hostile_lines.py``) and of whole runs (``tests/e2e/test_hostile_runs.py``).

``hostile_line()`` draws one line (bytes, no line break): a record of one of the three schemas with fields
removed and fields set to any JSON value (numeric extremes, markup, nesting), or a damaged one: structure
(truncated, arrays, scalars, two objects, HTML, blank, CR), encodings (invalid UTF-8, UTF-16, BOM, NUL,
escaped lone surrogates), sizes around ``MAX_RECORD_BYTES``, wide objects, random bytes and text, markup.
"""
import json

from hypothesis import strategies as st

MAX_RECORD_BYTES = 8192          # the size the sized lines are drawn around: run the job with this limit

BASE_2018 = {"overall": 5.0, "verified": True, "reviewerID": "A2", "asin": "B004LLIKVU", "style": {"Size:": " L"},
             "reviewerName": "john", "reviewText": "Great.", "summary": "Five", "unixReviewTime": 1529193600,
             "vote": "1,234", "image": ["https://img/1.jpg"]}
BASE_2014 = {"reviewerID": "A1", "asin": "0000031852", "helpful": [1, 2], "reviewText": "Nice", "overall": 4.0,
             "summary": "ok", "unixReviewTime": 1398902400}
BASE_2023 = {"rating": 3.0, "title": "t", "text": "x", "images": [], "asin": "B0VARIANT1", "parent_asin": "B0PARENT01",
             "user_id": "U1", "timestamp": 1588615855070, "helpful_vote": 2, "verified_purchase": True}
BASES = [BASE_2018, BASE_2014, BASE_2023]
FIELDS = sorted(set(BASE_2018) | set(BASE_2014) | set(BASE_2023) | {"extra", "details"})

EXTREMES = [2 ** 62, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, 10 ** 12, 10 ** 14, 1e308, -1e308, -0.0, 0, 1e-300,
            "1e12", "NaN", "Infinity", True, None, "", " ", [], {}, "9" * 25]
MARKUP_TEXT = ["&lt;script&gt;alert(1)&lt;/script&gt;", "<b>x</b>", "&amp;lt;i&amp;gt;", "Love <3", "a < b",
               "<!-- c -->", "x <span class=\"a", "&#60;img src=x&#62;"]

json_values = st.recursive(
    st.none() | st.booleans() | st.sampled_from(EXTREMES) | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(MARKUP_TEXT),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10)


def nested(depth, kind):
    return ('{"a":' * depth + "1" + "}" * depth) if kind else ("[" * depth + "1" + "]" * depth)


@st.composite
def record_line(draw):
    rec = dict(draw(st.sampled_from(BASES)))
    for name in draw(st.sets(st.sampled_from(sorted(rec)), max_size=3)):
        del rec[name]
    for name in draw(st.sets(st.sampled_from(FIELDS), max_size=3)):
        rec[name] = draw(json_values)
    line = json.dumps(rec, ensure_ascii=draw(st.booleans()), allow_nan=True).encode()
    if draw(st.integers(0, 4)) == 0:  # deep nesting somewhere, from harmless to thousands of levels
        depth = draw(st.sampled_from([2, 20, 31, 32, 33, 300, 3000]))
        field = draw(st.sampled_from(["style", "extra", "reviewText", "details"]))
        line = line[:-1] + (b", " if len(line) > 2 else b"") + f'"{field}": {nested(depth, draw(st.booleans()))}}}'.encode()
    return line


@st.composite
def hostile_line(draw):
    kind = draw(st.integers(0, 11))
    if kind <= 4:
        return draw(record_line())
    line = draw(record_line())
    if kind == 5:   # structure
        return draw(st.sampled_from([line[:len(line) // 2], line + line, b"[" + line + b"]", b"3", b'"x"',
                                     b"null", b"", b"   ", b"\t", b"<html><body>503</body></html>", line + b"\r",
                                     b"{}", b'{"asin": "X"', b"}{"]))
    if kind == 6:   # encodings
        cut = draw(st.integers(0, len(line)))
        return draw(st.sampled_from([line[:cut] + b"\xff\xfe" + line[cut:], b"\xef\xbb\xbf" + line,
                                     line.decode("utf-8", "replace").encode("utf-16"), line.replace(b'"', b'"\x00', 1),
                                     line.replace(b'"Great."', b'"\\ud800"'), line[:cut] + b"\xc3" + line[cut:]]))
    if kind == 7:   # sizes
        n = draw(st.sampled_from([MAX_RECORD_BYTES - 200, MAX_RECORD_BYTES + 1, 3 * MAX_RECORD_BYTES]))
        return line[:-1] + b', "reviewText": "' + b"x" * n + b'"}'
    if kind == 8:   # wide objects: many keys, short enough to be under the size limit
        keys = draw(st.sampled_from([10, 500, 1200]))
        wide = ",".join(f'"{i}":1' for i in range(keys)).encode()
        return line[:-1] + b', "style": {' + wide + b"}}"
    if kind == 9:   # random bytes
        return draw(st.binary(max_size=60)).replace(b"\n", b" ")
    if kind == 10:  # random text
        return draw(st.text(max_size=60)).replace("\n", " ").encode("utf-8", "surrogatepass")
    return line.replace(b'"Great."', json.dumps(draw(st.sampled_from(MARKUP_TEXT))).encode())
