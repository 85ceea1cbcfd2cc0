"""seqpipe: raw sequence data to a trained, tracked, registered and servable RNN/GRU/LSTM."""

__version__ = "0.1.0"
