"""Sources: input files as chunks of lines (``ReadFiles``); and ``write_bytes``, which the commit step uses
for the files it stages under ``_pipeline/_staged/RUN_ID/`` (the tables themselves are written and
committed by ``beam_pipeline.tables``).

Everything goes through Beam's ``FileSystems``, so local paths and ``azfs://`` (Azure Blob / ADLS Gen2
through the Blob API) behave the same.

A damaged input file is never silent and never fails the job: what can be read of it is kept (every
whole line before the fault, and the cut line as a record the parser judges), and the file gets one
dead letter (record_type ``file``, stage ``read``, reason ``truncated_file`` or ``corrupt_file``,
``source`` = the path, ``source_position`` = the first line not read whole, the compressed byte offset
in ``detail``) on ``ReadFiles``' ``faults`` output, counted as ``io/<kind>.files_incomplete``. gzip is
decoded here (Beam's reader stopped at a cut without a word, and raised on corrupt bytes, failing the
whole job); other compressions go through Beam, with a read error turned into ``corrupt_file``.
"""
import logging
import os
import posixpath
import time
import zlib

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.testhooks import pause_at
from transforms import reasons
from transforms.dead_letters import dead_letter
from transforms.parse import Chunk

LOG = logging.getLogger("reviews")


def join(root, *parts):
    """Path join that keeps URL schemes (azfs://a/b) intact."""
    return posixpath.join(root.rstrip("/"), *parts) if "://" in root else os.path.join(root, *parts)


FAULTS = "faults"
GZIP_READ_BYTES = 1 << 16  # compressed bytes decoded at a time


class ReadFault(Exception):
    """What stopped a file being read: a reason of ``transforms.reasons.FILE_REASONS``, the compressed
    byte offset (of the piece of ``FAULT_PIECE_BYTES`` the decoder rejected: the damage is there or a
    little before it; the end of the data for a cut) and what the decoder said."""

    def __init__(self, reason, offset, detail):
        super().__init__(f"{reason} at byte {offset}: {detail}")
        self.reason, self.offset, self.detail = reason, offset, detail


def gunzip_blocks(fh, max_out):
    """Decompressed blocks (each at most ``max_out`` bytes, so a zip bomb cannot flood memory) of a gzip
    stream of one or more members (concatenated gzip files are one gzip file); NUL padding after a member
    is skipped, as gzip(1) does. Raises ReadFault at a cut (``truncated_file``) or at bytes zlib rejects
    (``corrupt_file``), after yielding everything decoded before it."""
    d, offset, data, started = zlib.decompressobj(16 + zlib.MAX_WBITS), 0, b"", False
    while True:
        if not data:
            data = fh.read(GZIP_READ_BYTES)
            if not data:
                if started and not d.eof:
                    out = d.flush()  # output zlib still held back when the input ran out
                    if out:
                        yield out
                if started and not d.eof:
                    raise ReadFault(reasons.TRUNCATED_FILE, offset, "the gzip stream ends before its end marker "
                                                                    "(the file was cut)")
                return
        if not started:
            data = data.lstrip(b"\0")  # padding between or after members
            if not data:
                continue
            started = True
        saved = d.copy()
        try:
            out = d.decompress(data, max_out)
        except zlib.error as err:
            # decode the block again in small pieces from before it: keeps what precedes the bad bytes
            # and narrows the offset to FAULT_PIECE_BYTES
            for out, offset in _salvage(saved, data, offset):
                if out:
                    yield out
            raise ReadFault(reasons.CORRUPT_FILE, offset, f"zlib: {err}") from None
        tail = d.unconsumed_tail if not d.eof else d.unused_data
        offset += len(data) - len(tail)
        if out:
            yield out
        if d.eof:  # a member ended: what follows is the next member (or padding, or the end)
            d, started = zlib.decompressobj(16 + zlib.MAX_WBITS), False
        data = tail


FAULT_PIECE_BYTES = 256


def _salvage(d, data, offset):
    """(output, offset) per piece of ``data`` that ``d`` decodes, up to the piece it rejects (a member
    ending inside the block stops the salvage there: the fault is reported at that member's end)."""
    for i in range(0, len(data), FAULT_PIECE_BYTES):
        piece = data[i:i + FAULT_PIECE_BYTES]
        try:
            out = d.decompress(piece)
        except zlib.error:
            return
        if out:
            yield out, offset
        if d.eof:
            yield b"", offset + len(piece) - len(d.unused_data)
            return
        offset += len(piece)
    yield b"", offset


def _blocks(path, chunk_bytes):
    """Decompressed blocks of one file; ReadFault when it cannot be read to its end."""
    if CompressionTypes.detect_compression_type(path) == CompressionTypes.GZIP:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            yield from gunzip_blocks(fh, chunk_bytes)
        return
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as fh:
        read = 0
        while True:
            try:
                block = fh.read(chunk_bytes)
            except (OSError, EOFError, ValueError, zlib.error) as err:  # bz2, zstd, lzma, deflate: Beam's decoders
                raise ReadFault(reasons.CORRUPT_FILE, None, f"after {read} decompressed bytes: "
                                                            f"{type(err).__name__}: {err}") from None
            if not block:
                return
            read += len(block)
            yield block


def read_chunks(path, chunk_bytes, faults=None):
    """Yield Chunks of whole lines from one file (decompressed by extension: .gz, .bz2, ...). A file that
    cannot be read to its end yields what could be read, then appends one dead letter to ``faults`` (a
    list; without one the ReadFault is raised)."""
    rest, line = b"", 1
    try:
        for block in _blocks(path, chunk_bytes):
            block = rest + block if rest else block
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a chunk: keep reading until it ends
                rest = block
                continue
            data, rest = block[:cut], block[cut:]
            yield Chunk(data, path, line)
            line += data.count(b"\n")
    except ReadFault as fault:
        if faults is None:
            raise
        if rest:  # the line the fault cut: a record like any other, which the parser judges
            yield Chunk(rest, path, line)
            line += 1
        faults.append(file_dead_letter(path, line, fault))
        return
    if rest:
        yield Chunk(rest, path, line)


def file_dead_letter(path, first_lost_line, fault):
    """The dead letter of a file read only in part (module docstring)."""
    where = "at an unknown compressed byte" if fault.offset is None else f"at compressed byte {fault.offset:,}"
    return dead_letter("file", reasons.READ, fault.reason, path, first_lost_line, b"",
                       f"{where}: {fault.detail}; lines before {first_lost_line:,} were read, what follows is lost")


class ReadChunksFn(beam.DoFn):
    """File metadata -> Chunks, with a progress line every ~256 MiB read by this worker."""

    def __init__(self, kind, chunk_bytes):
        self.kind, self.chunk_bytes = kind, chunk_bytes
        self.files = beam.metrics.Metrics.counter("io", f"{kind}.files_read")
        self.bytes = beam.metrics.Metrics.counter("io", f"{kind}.bytes_read")

    def setup(self):
        self._t0, self._read, self._next_report = time.monotonic(), 0, 256 << 20

    def process(self, metadata):
        path = metadata.path if hasattr(metadata, "path") else metadata
        faults = []
        for chunk in read_chunks(path, self.chunk_bytes, faults):
            pause_at("reading")  # test hook (beam_pipeline.testhooks): inert unless a test sets it
            n = len(chunk.data)
            self.bytes.inc(n)
            self._read += n
            if self._read >= self._next_report:
                self._next_report += 256 << 20
                rate = self._read / max(time.monotonic() - self._t0, 1e-6) / (1 << 20)
                LOG.info("[progress] %s: %d MiB read by this worker (%.0f MiB/s), now in %s",
                         self.kind, self._read >> 20, rate, posixpath.basename(path))
            yield chunk
        self.files.inc()
        for d in faults:
            LOG.error("%s: %s read only in part (%s): %s", self.kind, path, d["reason"], d["detail"])
            beam.metrics.Metrics.counter("io", f"{self.kind}.files_incomplete").inc()
            beam.metrics.Metrics.counter("dead_letters", f"file.{d['stage']}.{d['reason']}").inc()
            yield beam.pvalue.TaggedOutput(FAULTS, d)
        if not faults:
            LOG.info("[progress] %s: read %s", self.kind, path)


class ReadFiles(beam.PTransform):
    """Patterns -> Chunks: match every pattern (globs, recursive **), spread files over workers, read.
    After expansion, ``self.faults`` is the PCollection of file dead letters (module docstring): flatten
    it with the other dead letters."""

    def __init__(self, kind, patterns, chunk_bytes):
        super().__init__()
        self.kind, self.patterns, self.chunk_bytes = kind, list(patterns), chunk_bytes
        self.faults = None

    def expand(self, pbegin):
        read = (pbegin
                | "Patterns" >> beam.Create(self.patterns)
                | "Match" >> fileio.MatchAll(empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadChunks" >> beam.ParDo(ReadChunksFn(self.kind, self.chunk_bytes)).with_outputs(FAULTS,
                                                                                                     main="chunks"))
        self.faults = read[FAULTS]
        return read.chunks


# ---------------------------------------------------------------------------------------------------
# sinks

def ensure_parent(path):
    if "://" not in path:  # object stores have no directories
        os.makedirs(os.path.dirname(path), exist_ok=True)


def write_bytes(data, path):
    ensure_parent(path)
    with FileSystems.create(path) as fh:
        fh.write(data)
    return path
