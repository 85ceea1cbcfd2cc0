from collections import Counter

import numpy as np

from seqpipe.data.text_tokens import CharTokenizer, load_tokenizer
from seqpipe.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocab


def test_special_ids_are_stable():
    vocab = Vocab.build(Counter("zzzyyx"))
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert vocab.itos[:4] == list(SPECIALS)
    assert vocab.itos[4:] == ["z", "y", "x"]  # most frequent first


def test_round_trip_and_unknown(tmp_path):
    tok = CharTokenizer()
    text = "To be, or not to be:\nthat is the question."
    vocab = Vocab.build(Counter(tok.tokenize(text)))
    ids = vocab.encode(tok.tokenize(text))
    assert tok.detokenize(vocab.decode(ids)) == text
    assert vocab.encode(["~"]) == [UNK_ID]
    assert vocab.unknown(list("ab~")) == ["~"]
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocab.load(tmp_path / "vocab.json")
    assert loaded.itos == vocab.itos
    assert isinstance(load_tokenizer(loaded.tokenizer), CharTokenizer)


def test_min_freq_max_size_and_dtype():
    counts = Counter({"a": 5, "b": 3, "c": 1})
    assert Vocab.build(counts, min_freq=2).itos[4:] == ["a", "b"]
    assert Vocab.build(counts, max_size=5).itos[4:] == ["a"]
    assert Vocab.build(counts).dtype() == np.uint8
    assert Vocab.build(Counter({chr(0x4E00 + i): 1 for i in range(300)})).dtype() == np.uint16


def test_decode_skips_specials():
    vocab = Vocab.build(Counter("ab"))
    assert vocab.decode([BOS_ID, 4, PAD_ID, 5, EOS_ID]) == ["a", "b"]
