"""The served model's old import path. Registered models pickle their class by name, and every model registered
before the package was grouped by role names `seqpipe.pyfunc.SeqpipeModel` (the first ones `LanguageModel`): they
load with today's code through this module (tests/test_pyfunc: the old-model fixtures)."""

from seqpipe.serving.pyfunc import LanguageModel, SeqpipeModel

__all__ = ["LanguageModel", "SeqpipeModel"]
