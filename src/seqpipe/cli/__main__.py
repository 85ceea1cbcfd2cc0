"""`python -m seqpipe.cli ARGS` runs `seqpipe ARGS`."""

import sys

from seqpipe.cli import main

sys.exit(main())
