"""The `seqpipe` command: its parser and commands (`commands`), `generate`/`predict` (`predict`), the DDP relauncher
(`launch`). `seqpipe.cli.main` is the console script's entry point."""

from seqpipe.cli.commands import main, parser

__all__ = ["main", "parser"]
