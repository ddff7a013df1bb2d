"""Sources and the streaming job's file sinks: file chunks in, Parquet / JSON lines out.

Everything goes through Beam's ``FileSystems``, so local paths and ``azfs://`` (Azure Blob / ADLS Gen2
through the Blob API) behave the same.

Batch runs write Delta tables (``beam_pipeline.tables``). A bounded streaming run writes its files under
``OUTPUT/_staging/RUN_ID/`` (readers skip ``_``-prefixed paths) and ``beam_pipeline.checkpoints`` moves
them into place together with the partition positions.
"""
import logging
import os
import posixpath
import shutil
import time
import uuid

import apache_beam as beam
from apache_beam.io import fileio
import orjson
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.parse import Chunk

LOG = logging.getLogger("reviews")
STAGING = "_staging"


def join(root, *parts):
    """Path join that keeps URL schemes (azfs://a/b) intact."""
    return posixpath.join(root.rstrip("/"), *parts) if "://" in root else os.path.join(root, *parts)


def read_chunks(path, chunk_bytes):
    """Yield Chunks of whole lines from one file (decompressed by extension: .gz, .bz2, ...)."""
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as fh:
        rest, line = b"", 1
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                if rest:
                    yield Chunk(rest, path, line)
                return
            block = rest + block if rest else block
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a chunk: keep reading until it ends
                rest = block
                continue
            data, rest = block[:cut], block[cut:]
            yield Chunk(data, path, line)
            line += data.count(b"\n")


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
        for chunk in read_chunks(path, self.chunk_bytes):
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
        LOG.info("[progress] %s: read %s", self.kind, path)


class ReadFiles(beam.PTransform):
    """Patterns -> Chunks: match every pattern (globs, recursive **), spread files over workers, read."""

    def __init__(self, kind, patterns, chunk_bytes):
        super().__init__()
        self.kind, self.patterns, self.chunk_bytes = kind, list(patterns), chunk_bytes

    def expand(self, pbegin):
        return (pbegin
                | "Patterns" >> beam.Create(self.patterns)
                | "Match" >> fileio.MatchAll(empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadChunks" >> beam.ParDo(ReadChunksFn(self.kind, self.chunk_bytes)))


# ---------------------------------------------------------------------------------------------------
# sinks

def ensure_parent(path):
    if "://" not in path:  # object stores have no directories
        os.makedirs(os.path.dirname(path), exist_ok=True)


def write_parquet(table, path):
    ensure_parent(path)
    with FileSystems.create(path) as fh:
        pq.write_table(table, fh, compression="snappy")
    return path


def write_bytes(data, path):
    ensure_parent(path)
    with FileSystems.create(path) as fh:
        fh.write(data)
    return path


def write_json_lines(records, path):
    ensure_parent(path)
    with FileSystems.create(path) as fh:
        fh.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


class Layout:
    """Where each table lives under the output root, and where this run stages it."""

    def __init__(self, output, run_id, tables=(), in_place=False):
        self.output, self.run_id, self.in_place = output, run_id, in_place

    @property
    def staging(self):
        return join(self.output, STAGING, self.run_id)

    def staged(self, relpath):
        """Where a file is written first (``in_place``: where it stays; no staging, no publish step)."""
        return self.final(relpath) if self.in_place else join(self.staging, relpath)

    def final(self, relpath):
        return join(self.output, relpath)

    def write(self, writer, data, relpath):
        """Write ``data`` with ``writer(data, path)`` to where ``relpath`` goes first. In place, the file
        is written under a ``_``-prefixed temporary name beside its final one and renamed when complete,
        so readers (which skip ``_`` names) never see half a file."""
        path = self.staged(relpath)
        if not self.in_place:
            return writer(data, path)
        head, name = posixpath.split(path) if "://" in path else os.path.split(path)
        tmp = join(head, f"_tmp-{uuid.uuid4().hex[:12]}-{name}")
        writer(data, tmp)
        FileSystems.rename([tmp], [path])
        return path


def delete_tree(root):
    try:
        files = [m.path for r in FileSystems.match([join(root, "**")]) for m in r.metadata_list]
    except Exception:  # nothing there
        files = []
    if files:
        FileSystems.delete(files)
    if "://" not in root:
        shutil.rmtree(root, ignore_errors=True)  # the empty directories


def remove_empty_staging_root(layout):
    """OUTPUT/_staging once this run's area is gone (other runs' staging areas, if any, stay)."""
    staging_root = join(layout.output, STAGING)
    if "://" not in staging_root and os.path.isdir(staging_root) and not os.listdir(staging_root):
        os.rmdir(staging_root)
