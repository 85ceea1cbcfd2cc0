"""Coding-region tagging of a GenBank genome: one tag per base, cut into fixed windows.

Tags: "+" inside a CDS on the forward strand, "-" inside a CDS on the reverse strand, "." elsewhere. Rules:
- CDS features marked /pseudo are not coding (they are not translated); other feature types are ignored.
- A base inside CDSs on both strands is tagged "+": a fixed rule, so no tag depends on feature order in the file.
- Each part of a joined location carries its own strand; parts without a strand are ignored.
- Letters are uppercased; A C G T N stay; the ambiguity codes R Y S W K M B D H V follow `iupac`: "mask" makes them
  N, "keep" keeps them, "error" stops; any other letter stops with the record id and position.
- Each record is cut into non-overlapping windows of `window` bases from its first base; the last, shorter window
  is kept when it has at least half a window of bases, else dropped (so a record shorter than that gives no row).
The default file is the Leptospira kirschneri draft genome (75 contigs) from Debian's any2fasta-examples package.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from Bio import SeqIO
from Bio.Seq import UndefinedSequenceError
from Bio.SeqRecord import SeqRecord
from tqdm import tqdm

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document

AMBIGUOUS = "RYSWKMBDHV"
IUPAC_MODES = ("mask", "keep", "error")


def read_genbank(path: str | Path) -> list[SeqRecord]:
    """All records of a GenBank file, gzipped or not."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SeqpipeError(
            f"GenBank file not found: {path}. For the example genome run `apt-get install any2fasta-examples` "
            "(Debian/Ubuntu; it installs /usr/share/doc/any2fasta/examples/test.gbk.gz), or set recipe.fetch.path "
            "to your own GenBank file."
        )
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rt") if gzipped else open(path) as f:
            records = list(SeqIO.parse(f, "genbank"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SeqpipeError(f"{path}: not a readable GenBank file ({e}); set recipe.fetch.path to a GenBank "
                           "file") from None
    if not records:
        raise SeqpipeError(f"{path}: no GenBank records (no LOCUS lines); set recipe.fetch.path to a GenBank file")
    return records


def clean_bases(seq: str, record_id: str, iupac: str) -> str:
    """Uppercase bases with ambiguity codes handled per `iupac`; anything that is not a base stops."""
    seq = seq.upper()
    if iupac == "mask":
        seq = seq.translate(str.maketrans(AMBIGUOUS, "N" * len(AMBIGUOUS)))
    allowed = set("ACGTN") | (set(AMBIGUOUS) if iupac == "keep" else set())
    bad = next((i for i, c in enumerate(seq) if c not in allowed), None)
    if bad is not None:
        hint = " or set recipe.fetch.iupac=mask" if seq[bad] in AMBIGUOUS else ""
        raise SeqpipeError(f"record {record_id}, position {bad + 1}: {seq[bad]!r} is not a DNA base (A C G T N or "
                           f"an IUPAC code); fix the sequence{hint}")
    return seq


def coding_tags(record: SeqRecord) -> str:
    """One tag per base of the record: "+", "-" or "." (rules in the module docstring)."""
    tags = bytearray(b"." * len(record.seq))
    parts = [p for f in record.features if f.type == "CDS" and "pseudo" not in f.qualifiers for p in f.location.parts]
    # Reverse strand first, so that forward-strand parts overwrite it where both overlap.
    for strand, tag in ((-1, b"-"), (1, b"+")):
        for part in parts:
            if part.strand == strand:
                start, end = int(part.start), int(part.end)
                tags[start:end] = tag * (end - start)
    return tags.decode()


def windows(record_id: str, text: str, tags: str, window: int) -> list[Document]:
    """Non-overlapping windows; a last partial window is kept when it holds at least half a window."""
    return [{"id": f"{record_id}:{start}", "text": text[start:start + window], "tags": tags[start:start + window]}
            for start in range(0, len(text), window) if 2 * len(text[start:start + window]) >= window]


def fetch(path: str, window: int, iupac: str = "mask") -> list[Document]:
    """Tag every base of the GenBank file at `path` and cut the records into windows of `window` bases."""
    if window < 1:
        raise SeqpipeError(f"recipe.fetch.window={window}: must be a positive number of bases, e.g. 512")
    if iupac not in IUPAC_MODES:
        raise SeqpipeError(f"recipe.fetch.iupac={iupac!r}: must be one of {', '.join(IUPAC_MODES)}")
    docs: list[Document] = []
    for record in tqdm(read_genbank(path), desc="fetch", unit="record"):
        try:
            bases = str(record.seq)
        except UndefinedSequenceError:
            raise SeqpipeError(f"{path}: record {record.id} has no sequence (a CONTIG-only record); use a GenBank "
                               "file with the bases (an ORIGIN section)") from None
        text = clean_bases(bases, record.id, iupac)
        docs += windows(record.id, text, coding_tags(record), window)
    if not docs:
        raise SeqpipeError(f"{path}: every record is shorter than half a window ({window} bases); "
                           "lower recipe.fetch.window")
    return docs
