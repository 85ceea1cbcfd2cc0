"""Dynamic batching for a served model: the requests that arrive together share the network's calls.

`mlflow models serve` runs each request's `predict` in a thread of its own. Here those threads hand their rows to one
worker thread that owns the network, and wait:

- `RowBatcher` (classify, tag, regress, seq2seq, ctc): the rows of the requests waiting with the same key (the task's
  row function and the request params it depends on) are run together, up to `batch_rows` rows; the worker waits at
  most `batch_wait_ms` for more, and not at all when no other request is on its way. A request larger than a batch
  goes in batch-sized parts, one after the other. The worker takes the parts in fair-queuing order (each request
  is a flow, a part's tag is where its rows end in that flow's count of rows served, counted from the rows the
  worker had reached when the request came): a small request goes ahead of the parts of large requests that started
  before it, and large requests share the worker part by part, so none waits for the others to end.
- `GenerationEngine` (language models, sampled or greedy): continuous batching. Every row being generated is one
  row of the running batch; one network step advances all of them; a new request's rows join at the next step and
  leave when they end, so a short request never waits for a long one to finish.

Limits are checked per request before it is handed over (the request's thread does that); a request whose rows
fail in a shared batch is run again alone, so only its own error reaches it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from seqpipe.models.decoding import _masked
from seqpipe.models.nets import State, cat_states, select_state

RowFn = Callable[[list], list]


@dataclass
class _Job:
    key: Hashable
    fn: RowFn
    rows: list
    done: threading.Event = field(default_factory=threading.Event)
    out: list | None = None
    error: BaseException | None = None
    start: float = 0.0   # fair queuing: where this part's rows start in the virtual count of rows served
    finish: float = 0.0  # start + its rows: parts are taken in this order


class RowBatcher:
    """Runs `fn(rows) -> one output per row` for concurrent callers together (see the module's docstring)."""

    def __init__(self, batch_rows: int = 64, batch_wait_ms: float = 5.0):
        self.batch_rows, self.wait_s = max(1, int(batch_rows)), max(0.0, batch_wait_ms / 1000)
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._callers = 0  # requests inside `run`: how many could still join a batch
        self._worker: threading.Thread | None = None
        self._vtime = 0.0  # the start tag of the last part taken (fair queuing's virtual time)

    def run(self, key: Hashable, fn: RowFn, rows: list) -> list:
        """`fn` applied to `rows` (its output for each row, in order), batched with other callers' rows of the same
        `key` (equal keys must mean the same function and settings)."""
        with self._cond:
            self._callers += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="seqpipe-batcher", daemon=True)
                self._worker.start()
        try:
            out: list = []
            finish = 0.0
            for start in range(0, len(rows), self.batch_rows):  # a large request in parts, others between them
                job = _Job(key, fn, rows[start:start + self.batch_rows])
                with self._cond:
                    job.start = max(self._vtime, finish)
                    job.finish = finish = job.start + len(job.rows)
                    self._queue.append(job)
                    self._cond.notify_all()
                job.done.wait()
                if job.error is not None:
                    raise job.error
                out += job.out  # type: ignore[operator]
            return out
        finally:
            with self._cond:
                self._callers -= 1
                self._cond.notify_all()

    def _take(self) -> list[_Job]:
        """The next batch: the first job in fair-queuing order and the next ones of its key, up to batch_rows rows,
        after waiting at most batch_wait_ms for callers that are on their way."""
        with self._cond:
            while not self._queue:
                self._cond.wait()
            deadline = time.monotonic() + self.wait_s
            while True:
                order = sorted(self._queue, key=lambda j: j.finish)  # stable: equal tags in arrival order
                first = order[0]
                same = [j for j in order if j.key == first.key]
                rows = sum(len(j.rows) for j in same)
                waiting_for = self._callers - len(self._queue)  # in `run`, not yet queued
                left = deadline - time.monotonic()
                if rows >= self.batch_rows or waiting_for <= 0 or left <= 0:
                    break
                self._cond.wait(left)
            batch, total = [], 0
            for job in same:
                if batch and total + len(job.rows) > self.batch_rows:
                    break
                batch.append(job)
                total += len(job.rows)
            for job in batch:
                self._queue.remove(job)
            self._vtime = max(self._vtime, first.start)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            with torch.inference_mode():
                try:
                    merged = [row for job in batch for row in job.rows]
                    out = batch[0].fn(merged)
                    start = 0
                    for job in batch:
                        job.out, start = out[start:start + len(job.rows)], start + len(job.rows)
                except BaseException as e:  # noqa: BLE001 - handed to the callers, never lost in this thread
                    if len(batch) == 1:
                        batch[0].error = e
                    else:  # alone again, so that each caller gets its own answer or error
                        for job in batch:
                            try:
                                job.out = job.fn(job.rows)
                            except BaseException as alone:  # noqa: BLE001
                                job.error = alone
                for job in batch:
                    job.done.set()


@dataclass
class Sequence:
    """One row being generated: its prompt's ids, how to choose each token, and what it produced."""
    ids: list[int]
    max_new_tokens: int
    temperature: float
    top_k: int
    generator: torch.Generator
    stop_id: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GenerationEngine:
    """Continuous batching of sampled (or greedy) generation for a network with `net(ids) -> (logits, state)` and
    `net.step(tokens, state) -> (logits, state)` (seqpipe.models.nets.RecurrentLM). At most `batch_rows` rows run at
    once; more wait in arrival order."""

    def __init__(self, net: torch.nn.Module, suppress: tuple[int, ...] = (), batch_rows: int = 64):
        self.net, self.suppress, self.batch_rows = net, suppress, max(1, int(batch_rows))
        self._cond = threading.Condition()
        self._pending: list[Sequence] = []
        self._worker: threading.Thread | None = None

    def generate(self, rows: list[Sequence]) -> list[Sequence]:
        """Generate every row (each with its own settings and random numbers), together with the other callers'."""
        for row in rows:
            if row.max_new_tokens <= 0:
                row.done.set()
        rows_to_run = [row for row in rows if not row.done.is_set()]
        with self._cond:
            self._pending += rows_to_run
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="seqpipe-generation", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        for row in rows:
            row.done.wait()
        for row in rows:
            if row.error is not None:
                raise row.error
        return rows

    def _admit(self, n_active: int) -> list[Sequence]:
        with self._cond:
            while not self._pending and not n_active:
                self._cond.wait()
            new = self._pending[:self.batch_rows - n_active]
            del self._pending[:len(new)]
            return new

    def _prefill(self, new: list[Sequence]) -> tuple[list[Sequence], list[torch.Tensor], list[State]]:
        """Each new row's prompt read in one pass: its first logits and state (a prompt that fails ends its row)."""
        rows, logits, states = [], [], []
        for seq in new:
            try:
                out, state = self.net(torch.tensor([seq.ids]))
            except Exception as e:  # noqa: BLE001 - the row's caller raises it
                seq.error = e
                seq.done.set()
                continue
            rows.append(seq)
            logits.append(out[:, -1])
            states.append(state)
        return rows, logits, states

    def _choose(self, active: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Each row's next token, as seqpipe.models.decoding.sample chooses it for that row alone."""
        logits = _masked(logits, self.suppress)
        logprobs = torch.log_softmax(logits.float(), -1)
        chosen = []
        for i, seq in enumerate(active):
            row = logits[i:i + 1]
            if seq.temperature <= 0:
                token = int(row.argmax(-1))
            else:
                row = row / seq.temperature
                if seq.top_k and seq.top_k < row.size(-1):
                    kth = torch.topk(row, seq.top_k).values[:, -1:]
                    row = row.masked_fill(row < kth, float("-inf"))
                token = int(torch.multinomial(torch.softmax(row, -1), 1, generator=seq.generator))
            seq.logprobs.append(float(logprobs[i, token]))
            seq.tokens.append(token)
            chosen.append(token)
        return chosen

    def _loop(self) -> None:
        active: list[Sequence] = []
        logits: torch.Tensor | None = None
        state: State = None
        while True:
            new = self._admit(len(active))
            with torch.inference_mode():
                if new:
                    rows, first, states = self._prefill(new)
                    if rows:
                        active += rows
                        logits = torch.cat([logits, *first]) if logits is not None else torch.cat(first)
                        state = cat_states([state, *states]) if state is not None else cat_states(states)
                if not active:
                    logits, state = None, None
                    continue
                try:
                    chosen = self._choose(active, logits)  # type: ignore[arg-type]
                    keep = []
                    for i, (seq, token) in enumerate(zip(active, chosen)):
                        if token == seq.stop_id:
                            seq.tokens.pop()  # the end is not part of the text
                            seq.logprobs.pop()
                        if token == seq.stop_id or len(seq.tokens) >= seq.max_new_tokens:
                            seq.done.set()
                        else:
                            keep.append(i)
                    if len(keep) < len(active):
                        active = [active[i] for i in keep]
                        if not active:
                            logits, state = None, None
                            continue
                        rows_kept = torch.tensor(keep)
                        chosen = [chosen[i] for i in keep]
                        state = select_state(state, rows_kept)
                    logits, state = self.net.step(torch.tensor(chosen), state)
                except Exception as e:  # noqa: BLE001 - every running row's caller raises it
                    for seq in active:
                        seq.error = e
                        seq.done.set()
                    active, logits, state = [], None, None
