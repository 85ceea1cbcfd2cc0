"""The file Lightning's DDP launcher re-runs for ranks 1.. of `seqpipe train` (see `launch/__main__.py`)."""
