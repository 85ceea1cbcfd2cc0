"""The one exception type users see: a message that says what is wrong and how to fix it."""


class SeqpipeError(Exception):
    """A problem with the user's input or setup; the CLI prints it without a traceback and exits 2."""


def unreadable(e: OSError, path: object = None) -> SeqpipeError:
    """The message for a file or directory the user may not read (permissions), naming the path."""
    return SeqpipeError(f"{path or e.filename}: cannot be read ({e.strerror}); check the path and its permissions")
