"""Scoring a CTC model (task ctc): the test split decoded greedily and by prefix beam search and scored with the
character and word error rates, overall, per source (the speech recipe's noise conditions) and with each word put
onto the train transcripts' words; predictions.tsv; and real recordings (evaluate.real_speech: CMU Sphinx's test
data) through the served model's audio front end, scored apart as real/* and never trained on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from seqpipe.atomic import write_text
from seqpipe.data.audio import clip_frames
from seqpipe.errors import SeqpipeError
from seqpipe.metrics.text import error_rates_of
from seqpipe.tasks.base import test_scores
from seqpipe.tasks.ctc_decode import decode, snap


def evaluate(cfg: DictConfig, module, dm, out_dir: Path, text) -> dict:  # noqa: ANN001
    """Test metrics: the loss, then the test split decoded with evaluate.beam_width and greedily: CER, WER and exact
    match overall, onto the lexicon and per source (the speech recipe's noise conditions); predictions.tsv; and the
    real recordings of evaluate.real_speech. `text`: ids -> the output string."""
    scores = test_scores(cfg, module, dm)
    ds, net = dm.splits["test"], module.net.cpu().eval()
    xs, refs = zip(*(ds[i] for i in range(len(ds))))
    references = [text(y.tolist()) for y in refs]
    logps = net.log_probs(list(xs))
    metrics = {"test/loss": float(scores["test/loss"])}
    width = int(cfg.evaluate.beam_width)
    found = {}
    sources, names, lexicon = ds.sources, dm.source_names, dm.meta["target"].get("lexicon")
    for w in sorted({width, 1}, reverse=True):  # the configured width first, greedy for comparison
        print(f"evaluate: decoding {len(xs):,} test inputs, beam width {w}", file=sys.stderr)
        found[w] = [decode(lp, w) for lp in logps]
        hyps = [text(labels) for labels, _ in found[w]]
        suffix = "" if w == width else "_greedy"
        metrics |= {f"test/{k}{suffix}": v for k, v in error_rates_of(hyps, references).items()}
        if lexicon and w == width:  # each word put onto the train transcripts' words
            snapped = error_rates_of([snap(h, lexicon) for h in hyps], references)
            metrics |= {f"test/{k}_lexicon": v for k, v in snapped.items()}
        for s, name in enumerate(names if len(names) > 1 else []):  # per condition (speech: clean, snr20, ...)
            picked = [k for k in range(len(hyps)) if sources[k] == s]
            rates = error_rates_of([hyps[k] for k in picked], [references[k] for k in picked])
            metrics.setdefault("test/per_source", {}).setdefault(name, {}).update(
                {f"{k}{suffix}": v for k, v in rates.items()})
    if cfg.evaluate.get("real_speech"):
        metrics |= real_speech(cfg, dm.meta, net, width, out_dir, text)
    ids_file = Path(cfg.paths.prepared) / "splits.json"
    ids = json.loads(ids_file.read_text())["test"] if ids_file.is_file() else list(range(len(xs)))
    lines = ["id\treference\tprediction\tscore"]
    for i, ref, (labels, score) in zip(ids, references, found[width]):
        lines.append(f"{i}\t{ref}\t{text(labels)}\t{score:.4f}".replace("\n", " "))
    write_text(out_dir / "predictions.tsv", "\n".join(lines) + "\n")
    return metrics


def real_speech(cfg: DictConfig, meta: dict, net, width: int, out_dir: Path, text) -> dict:  # noqa: ANN001
    """Real recordings (evaluate.real_speech: CMU Sphinx's test data) transcribed through the served model's
    audio front end and scored apart as real/*, never trained on; real_predictions.tsv lists them."""
    spec = meta["inputs"].get("audio")
    if not spec:
        raise SeqpipeError(f"evaluate.real_speech={cfg.evaluate.real_speech} scores recordings, but this model "
                           "reads frames that were not computed from audio (no recipe.audio): set "
                           "evaluate.real_speech=null")
    # lazy: read only when evaluate.real_speech names recordings; at the top, every stage that loads the tasks would
    # depend on the speech recipe and espeak behind it (dvc.yaml, tests/test_dag.py)
    from seqpipe.recipes import speech

    clips = speech.real_speech(cfg.evaluate.real_speech)
    if not clips:
        return {}
    xs = [torch.from_numpy(clip_frames(Path(c["audio"]), spec, name=c["id"])) for c in clips]  # local files
    logps = net.log_probs(xs)
    lexicon = meta["target"].get("lexicon") or []
    hyps = {w: [text(decode(lp, w)[0]) for lp in logps] for w in sorted({width, 1})}
    hyps["lexicon"] = [snap(h, lexicon) for h in hyps[width]] if lexicon else hyps[width]
    metrics, refs = {}, [c["output"] for c in clips]
    for w, found in hyps.items():
        suffix = "" if w == width else "_greedy" if w == 1 else "_lexicon"
        metrics |= {f"real/{k}{suffix}": v for k, v in error_rates_of(found, refs).items()}
    lines = ["id\treference\tprediction\tprediction_greedy\tprediction_lexicon"]
    for c, beam, best, snapped in zip(clips, hyps[width], hyps[1], hyps["lexicon"]):
        lines.append(f"{c['id']}\t{c['output']}\t{beam}\t{best}\t{snapped}")
    write_text(out_dir / "real_predictions.tsv", "\n".join(lines) + "\n")
    print(f"evaluate: {len(clips)} real recordings: WER {metrics['real/wer']:.3f} (greedy "
          f"{metrics['real/wer_greedy']:.3f}, onto the train words {metrics['real/wer_lexicon']:.3f})",
          file=sys.stderr)
    return metrics
