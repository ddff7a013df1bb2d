"""Reading input files (``beam_pipeline.io``): a damaged compressed file is never silent and never fails
the job (issue 21: a truncated .gz lost 1,505 of 5,000 lines and the run exited 0; a corrupt or non-gzip
.gz failed the whole job). Expected values follow the module docstring: every whole line before the
fault is kept, the cut line goes to the parser as a record, and the file gets one dead letter (stage
``read``, reason ``truncated_file`` / ``corrupt_file``, the path, the first line not read whole, the
compressed byte offset in the detail)."""
import bz2
import gzip
import json
import re

import pytest

from beam_pipeline import io
from transforms import reasons

LINES = b"".join(json.dumps({"i": i, "text": "word " * (i % 40)}).encode() + b"\n" for i in range(5000))


def read(path, chunk_bytes=1 << 14):
    faults = []
    chunks = list(io.read_chunks(str(path), chunk_bytes, faults))
    # chunks are consecutive whole lines, numbered from 1
    line = 1
    for c in chunks:
        assert c.first_line == line
        line += c.data.count(b"\n") + (0 if c.data.endswith(b"\n") else 1)
    return b"".join(c.data for c in chunks), faults


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name, data", [
    ("whole.json.gz", gzip.compress(LINES)),
    ("members.json.gz", gzip.compress(LINES[:100_000]) + gzip.compress(LINES[100_000:])),  # concatenated
    ("padded.json.gz", gzip.compress(LINES) + b"\0" * 100),                                # NUL padding
    ("plain.jsonl", LINES),
    ("whole.json.bz2", bz2.compress(LINES)),
])
def test_whole_files_read_exactly(tmp_path, name, data):
    got, faults = read(write(tmp_path, name, data))
    assert got == LINES and faults == []


def test_empty_gz_is_an_empty_file(tmp_path):
    assert read(write(tmp_path, "empty.json.gz", b"")) == (b"", [])


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_gz_keeps_what_precedes_the_cut_and_says_so(tmp_path, keep):
    data = gzip.compress(LINES)
    path = write(tmp_path, "cut.json.gz", data[:int(len(data) * keep)])
    got, faults = read(path)
    whole = got[:got.rfind(b"\n") + 1]
    n_whole = whole.count(b"\n")
    assert LINES.startswith(got) and n_whole > 0      # nothing invented, the lines before the cut kept
    assert len(faults) == 1
    f = faults[0]
    assert (f["record_type"], f["stage"], f["reason"], f["source"]) == ("file", reasons.READ,
                                                                        reasons.TRUNCATED_FILE, str(path))
    cut_line = got != whole                           # a line cut in two is handed on as a record
    assert f["source_position"] == n_whole + 1 + cut_line
    assert f"compressed byte {int(len(data) * keep):,}" in f["detail"]


def test_non_gzip_named_gz_is_a_corrupt_file_not_a_failed_job(tmp_path):
    path = write(tmp_path, "plain.json.gz", LINES)
    got, faults = read(path)
    assert got == b""
    assert [(f["reason"], f["source_position"]) for f in faults] == [(reasons.CORRUPT_FILE, 1)]
    assert "compressed byte 0" in faults[0]["detail"]


def test_corrupt_bytes_inside_gz_keep_the_lines_before_them(tmp_path):
    data = bytearray(gzip.compress(LINES))
    bad = len(data) // 2
    data[bad:bad + 200] = b"\xff" * 200
    got, faults = read(write(tmp_path, "corrupt.json.gz", bytes(data)))
    # deflate can emit a few bytes decoded from the damage before zlib sees it (lines the parser will
    # dead-letter); everything before them is the file's own lines
    same = next(i for i, (a, b) in enumerate(zip(got + b"\0", LINES)) if a != b)
    assert LINES[:same].count(b"\n") > 1000
    assert [f["reason"] for f in faults] == [reasons.CORRUPT_FILE]
    offset = int(re.search(r"compressed byte ([\d,]+)", faults[0]["detail"]).group(1).replace(",", ""))
    # where the decoder noticed: never before the damage (deflate may decode junk for a while first)
    assert bad - io.FAULT_PIECE_BYTES <= offset < len(data)


def test_without_a_fault_list_the_fault_is_raised(tmp_path):
    path = write(tmp_path, "cut.json.gz", gzip.compress(LINES)[:5000])
    with pytest.raises(io.ReadFault):
        list(io.read_chunks(str(path), 1 << 14))


def test_a_gzip_bomb_is_decoded_in_bounded_blocks():
    import io as stdio
    bomb = gzip.compress(b"\n" * (64 << 20))
    sizes = [len(b) for b in io.gunzip_blocks(stdio.BytesIO(bomb), 1 << 20)]
    assert sum(sizes) == 64 << 20 and max(sizes) <= 1 << 20
