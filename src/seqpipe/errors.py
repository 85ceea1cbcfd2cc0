"""The one exception type users see: a message that says what is wrong and how to fix it."""


class SeqpipeError(Exception):
    """A problem with the user's input or setup; the CLI prints it without a traceback and exits 2."""
