import sys

from seqpipe.cli import main

sys.exit(main())
