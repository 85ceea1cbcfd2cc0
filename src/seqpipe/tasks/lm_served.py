"""A served language model's own part of `seqpipe generate`, kept lean (torch and the network, no Lightning, pandas
or MLflow) so that the command can load the model and print its first token without them (seqpipe.serving.local):
the network from the saved weights, and the text printed as it comes."""

from __future__ import annotations

import argparse
import sys

from seqpipe.models.nets import RecurrentLM

COMMAND = "generate"  # the command that answers with this model (`seqpipe generate`)


def build_net(meta: dict, model: dict) -> RecurrentLM:
    """The network the saved `model` config describes, for prepared/meta.json's vocabulary."""
    return RecurrentLM(meta["inputs"]["vocab_size"], **{k: v for k, v in model.items() if k != "pooling"})


def run_cli(args: argparse.Namespace, model: object) -> None:
    """`seqpipe generate`: the prompt's continuation printed as it comes (a long generation shows progress, and
    Ctrl-C keeps the text so far), with --logprobs each token's log-probability."""
    params = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
              "seed": args.seed, "beam_width": args.beam_width}
    logprobs: list[tuple[str, float]] = []
    pieces = model.stream(args.prompt, params, logprobs, bos=args.bos)  # type: ignore[attr-defined]
    out, n = sys.stdout, 0  # the limits refuse what they refuse above, before anything is printed
    out.write(args.prompt)
    try:
        for piece in pieces:
            out.write(piece)
            out.flush()
            n += 1
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        print(f"seqpipe: interrupted after {n} new tokens; the text so far is above", file=sys.stderr)
        raise SystemExit(130) from None
    out.write("\n")
    if args.logprobs:
        for piece, lp in logprobs:
            print(f"{piece!r}\t{lp:.4f}", file=sys.stderr)
        print(f"total log-probability {sum(lp for _, lp in logprobs):.4f} over {len(logprobs)} tokens",
              file=sys.stderr)
