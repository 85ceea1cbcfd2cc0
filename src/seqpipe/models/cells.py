"""Reference LSTM and GRU written out gate by gate, one time step per loop iteration (`model.cell=lstm_ref` /
`gru_ref`): for teaching and diagnostics, not speed.

They are drop-ins for `nn.LSTM` / `nn.GRU` as `nets.Encoder` builds them: the same constructor (batch_first only),
the same parameter names, shapes, gate order and initialisation, the same `forward(x, state) -> (out, state)`. So
`ref.load_state_dict(torch_rnn.state_dict())` works both ways, a checkpoint trained with one cell loads into the
other, and with the same weights the outputs and gradients equal torch's (tests/test_cells.py). Packed sequences are
not read: the loop runs over every step of the padded batch.

Notation (the lecture's): x_t the input, h_{t-1} the previous hidden state (a^{<t-1>}), σ the logistic sigmoid, *
the element-wise product. Each gate has its own input and hidden weights, W_i· (E -> H) and W_h· (H -> H), each with
a bias, as torch stores them: weight_ih_l{k} stacks the W_i· of layer k row-wise in torch's gate order, weight_hh_l{k}
the W_h·, bias_ih_l{k} and bias_hh_l{k} the biases. The input projections of all steps are computed in one matmul
before the loop (they do not depend on h), as cuDNN does; the hidden projections need h_{t-1}, hence the loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence


class _Ref(nn.Module):
    """What both cells share: torch's parameters for `gates` gates per layer, the layer loop and dropout."""

    gates = 0  # 4 for LSTM (i, f, g, o), 3 for GRU (r, z, n)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if not batch_first:
            raise ValueError(f"{type(self).__name__} reads (B, T, E) batches only: batch_first must be True")
        self.input_size, self.hidden_size, self.num_layers, self.dropout = input_size, hidden_size, num_layers, dropout
        self.batch_first = True
        G, H = self.gates, hidden_size
        for k in range(num_layers):  # registered in torch's order, so the same seed draws the same weights
            n_in = input_size if k == 0 else H
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(G * H, n_in)))  # (G*H, E)
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(G * H, H)))     # (G*H, H)
            setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(G * H)))
            setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(G * H)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ±1/sqrt(H), as torch's RNNs."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), getattr(self, f"bias_ih_l{k}"),
                getattr(self, f"bias_hh_l{k}"))

    def check(self, x: Tensor) -> None:
        if isinstance(x, PackedSequence):
            raise TypeError(f"{type(self).__name__} steps through padded (B, T, E) batches and cannot read a packed "
                            "sequence (model.packed=true needs one of torch's fused cells)")
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__} takes (B, T, E) inputs, got shape {tuple(x.shape)}")

    def between_layers(self, out: Tensor, k: int) -> Tensor:
        """Dropout on a layer's outputs before the next layer reads them (not after the last), as torch does."""
        return F.dropout(out, self.dropout, self.training) if k < self.num_layers - 1 else out

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first=True" + \
            (f", dropout={self.dropout}" if self.dropout else "")


class LSTMRef(_Ref):
    """LSTM, torch's equations (gate order i, f, g, o), in the lecture's names; per step t and layer:

        Γu = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)        update (input) gate   torch's i
        Γf = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)        forget gate           torch's f
        c~ = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     candidate cell        torch's g
        Γo = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)        output gate           torch's o
        c_t = Γu * c~ + Γf * c_{t-1}
        h_t = Γo * tanh(c_t)

    forward(x (B, T, E), state (h_0, c_0) each (layers, B, H) or None for zeros) -> (h of the last layer at every
    step (B, T, H), (h_T, c_T) each (layers, B, H)), as nn.LSTM returns them."""

    gates = 4

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        self.check(x)
        B, H = x.size(0), self.hidden_size
        if state is None:
            zeros = x.new_zeros(self.num_layers, B, H)
            state = (zeros, zeros)
        h0, c0 = state
        hs, cs = [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer(k)
            h, c = h0[k], c0[k]                         # (B, H)
            outs = []
            for x_t in (x @ w_ih.T + b_ih).unbind(1):  # T steps of (B, 4H): W_i· x_t + b_i·, all in one matmul
                gates = x_t + h @ w_hh.T + b_hh                                # (B, 4H)
                i, f, g, o = gates.chunk(4, dim=-1)                            # each (B, H)
                update, forget, candidate, output = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
                c = update * candidate + forget * c                            # c_t = Γu * c~ + Γf * c_{t-1}
                h = output * torch.tanh(c)                                     # h_t = Γo * tanh(c_t)
                outs.append(h)
            x = self.between_layers(torch.stack(outs, dim=1), k)  # (B, T, H): the next layer's input
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))  # (B, T, H), ((layers, B, H), (layers, B, H))


class GRURef(_Ref):
    """GRU, torch's equations (gate order r, z, n), in the lecture's names; per step t and layer:

        Γr = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)                reset gate       torch's r
        z  = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)                keep gate        torch's z (= 1 - Γu)
        c~ = tanh(W_in x_t + b_in + Γr * (W_hn h_{t-1} + b_hn))      candidate        torch's n
        h_t = (1 - z) * c~ + z * h_{t-1}

    Two conventions differ from the lecture. The update: torch's z weights the *old* state (as in Cho et al. 2014),
    so the lecture's update gate is Γu = 1 - z and h_t = Γu * c~ + (1 - Γu) * h_{t-1} is the same line. The reset:
    Cho et al. 2014 (and the lecture) reset the state before the matmul, c~ = tanh(W x_t + U (Γr * h_{t-1})); torch
    (like cuDNN) resets after it, Γr * (W_hn h_{t-1} + b_hn), i.e. inside the candidate, bias included. The two are
    different functions; this cell computes torch's, so that its weights are interchangeable with nn.GRU's.

    forward(x (B, T, E), state h_0 (layers, B, H) or None for zeros) -> (h of the last layer at every step
    (B, T, H), h_T (layers, B, H)), as nn.GRU returns them."""

    gates = 3

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.check(x)
        B, H = x.size(0), self.hidden_size
        h0 = x.new_zeros(self.num_layers, B, H) if state is None else state
        hs = []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer(k)
            h = h0[k]                                   # (B, H)
            outs = []
            for x_t in (x @ w_ih.T + b_ih).unbind(1):  # T steps of (B, 3H): W_i· x_t + b_i·, all in one matmul
                x_r, x_z, x_n = x_t.chunk(3, dim=-1)                           # each (B, H)
                h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=-1)          # each (B, H): W_h· h_{t-1} + b_h·
                reset = torch.sigmoid(x_r + h_r)                               # Γr
                keep = torch.sigmoid(x_z + h_z)                                # z = 1 - Γu
                candidate = torch.tanh(x_n + reset * h_n)                      # c~: reset after the matmul (torch)
                h = (1 - keep) * candidate + keep * h                          # h_t = (1 - z) * c~ + z * h_{t-1}
                outs.append(h)
            x = self.between_layers(torch.stack(outs, dim=1), k)  # (B, T, H): the next layer's input
            hs.append(h)
        return x, torch.stack(hs)  # (B, T, H), (layers, B, H)
