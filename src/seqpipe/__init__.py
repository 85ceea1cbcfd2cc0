"""seqpipe: raw sequence data to a trained, tracked, registered and servable RNN/GRU/LSTM."""

import sys

from seqpipe.data import text_tokens as tokenize  # noqa: F401

__version__ = "0.1.0"

# seqpipe.data.text_tokens was seqpipe/tokenize.py, a file that shadowed the standard library's tokenize. Vocabularies
# prepared and models registered before the rename name their tokenizer `seqpipe.tokenize.CharTokenizer` (Hydra
# `_target_`s): the old name stays an alias of the module, importable and as an attribute of the package.
sys.modules.setdefault("seqpipe.tokenize", tokenize)
