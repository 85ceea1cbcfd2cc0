"""Scores shared by tasks: text metrics (edit distance, error rates, BLEU) in `text`."""
