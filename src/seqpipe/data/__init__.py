"""Data code below the stages: tokenizers, vocabularies, input kinds, batches, examples, audio, music."""
