"""`python .../seqpipe/cli/launch/__main__.py ARGS` runs `seqpipe ARGS`. Lightning's DDP launcher starts ranks 1.. with
`[sys.executable, sys.argv[0], *sys.argv[1:]]`; `seqpipe train` points sys.argv[0] here, so the ranks re-run the
same command however the first one was started (console script, `python -m seqpipe`). The file has a folder of its
own because Python puts a script's folder first on sys.path, where a module named like one of the standard
library's (as seqpipe/tokenize.py once did) would shadow it."""

import sys

from seqpipe.cli import main

sys.exit(main())
