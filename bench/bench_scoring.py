"""Held-out scoring, the evaluate stage's and sweep validation's inner loop: the two waste items of issue 24.

1. The ``style_classic`` (gram) and ``style_balanced`` (balanced_gram) metrics read the same features: with
   ``functional.shared_grams`` (what every objective call now opens) their Grams are computed once.
2. Sweep validation scores the same pairs at every report: with a reference cache the pairs' content and
   style features are encoded at the first report only.

Both sides run in one process on the same pairs, in turn, medians over rounds. Random encoders (random:0):
nothing is downloaded. The demo's sizes by default: 80 pairs (8 contents × 10 styles) at 64 px in batches of 16.

    python bench/bench_scoring.py
    python bench/bench_scoring.py --size 256 --contents 4 --styles 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore import functional as SF  # noqa: E402
from stylecore.heldout import HeldOutPairs, score_pairs  # noqa: E402
from stylecore.metrics import StylizationMetrics  # noqa: E402
from stylecore.models import build  # noqa: E402
from stylecore.synthetic import STYLE_FAMILIES, synthetic_artwork, synthetic_photo  # noqa: E402


class _NoSharing:
    """Stands in for shared_grams(): every gram() call computes (the code before the change)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def timed(call, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contents", type=int, default=8)
    parser.add_argument("--styles", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    contents = torch.stack([synthetic_photo(i, args.size) for i in range(args.contents)])
    styles = torch.stack([synthetic_artwork(i, STYLE_FAMILIES[i % 5], args.size) for i in range(args.styles)])
    pairs = HeldOutPairs(contents, [f"c{i}" for i in range(args.contents)], styles,
                         [f"s{i}" for i in range(args.styles)])
    metrics = StylizationMetrics("random:0")
    model = build("adain", encoder_weights="random:0")
    score = lambda **kw: score_pairs(model, pairs, metrics, args.batch, "cpu", keep_outputs=(), **kw)  # noqa: E731
    score()  # warm-up
    shared = SF.shared_grams
    rows = {}
    for _ in range(args.rounds):  # in turn, so drift hits both sides alike
        SF.shared_grams = _NoSharing
        rows.setdefault("Grams per term (before)", []).extend(timed(score, 1))
        SF.shared_grams = shared
        rows.setdefault("Grams shared (after)", []).extend(timed(score, 1))
        rows.setdefault("validation, references encoded every report (before)", []).extend(timed(score, 1))
        cache: dict = {}
        score(reference_cache=cache)
        rows.setdefault("validation, references cached (after)", []).extend(timed(lambda: score(reference_cache=cache), 1))
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{len(pairs)} pairs at {args.size} px in batches of {args.batch}, adain, random encoders")
    for name, values in rows.items():
        print(f"{name:<55} median {statistics.median(values):.3f} s  rounds {[round(v, 3) for v in values]}")


if __name__ == "__main__":
    main()
