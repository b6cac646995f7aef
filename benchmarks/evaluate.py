"""How long `bsmamba evaluate` takes on a VoiceBank+DEMAND-sized test set: 824 pairs, 2.52 s each
on average (34.6 min of speech).

Without the corpus, the 824 pairs are cut from the demo set's real-speech test pairs: pair k takes
clip k mod 20, cropped to a length spread evenly over [1.5, 3.54] s (mean 2.52 s, the VB-DMD test
set's mean; each clip is 1.70-3.76 s long, so a crop is at most the clip). The noisy files stand in
for enhanced ones. What is measured: the pair count and the total audio of the VB-DMD test set; what
is not: its exact length distribution (PESQ, STOI and composite cost grows about linearly with
length, the per-file cost with the count). Prints one JSON document.

    python benchmarks/evaluate.py            # 824 pairs, 2 workers (target <= 90 s)
    python benchmarks/evaluate.py --quick    # 40 pairs: proves it runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

VB_TEST_PAIRS = 824
VB_MEAN_S = 2.52  # the VB-DMD test set's mean pair length
SPREAD_S = (1.5, 3.54)  # crop lengths, evenly spread: mean VB_MEAN_S


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 pairs only")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from bsmamba import env, schema
    from bsmamba.data import resolve
    from bsmamba.data.audio import sf
    from bsmamba.evaluate import evaluate_dirs

    root = resolve("demo")
    clean = sorted((root / "clean_testset_wav").glob("*.wav"))
    noisy = root / "noisy_testset_wav"
    pairs = 40 if args.quick else VB_TEST_PAIRS
    lo, hi = SPREAD_S
    with tempfile.TemporaryDirectory() as tmp:
        c_dir, e_dir = Path(tmp, "clean"), Path(tmp, "enhanced")
        c_dir.mkdir()
        e_dir.mkdir()
        total = 0.0
        fs = sf.info(clean[0]).samplerate
        clips = [  # (name, clean, noisy), each file read once
            (f.name, *(sf.read(d / f.name, dtype="float32")[0] for d in (f.parent, noisy)))
            for f in clean
        ]
        for k in range(pairs):
            name, c, e = clips[k % len(clips)]
            n = min(len(c), int(fs * (lo + (hi - lo) * k / max(1, pairs - 1))))
            sf.write(c_dir / f"r{k:04d}_{name}", c[:n], fs)
            sf.write(e_dir / f"r{k:04d}_{name}", e[:n], fs)
            total += n / fs
        t0 = time.perf_counter()
        summary = evaluate_dirs(c_dir, e_dir, workers=args.workers)
        elapsed = time.perf_counter() - t0
    doc = schema.document(
        "benchmark",
        name="evaluate",
        pairs=pairs,
        mean_pair_s=round(total / pairs, 3),
        audio_s=round(total, 1),
        workers=args.workers,
        elapsed_s=round(elapsed, 2),
        seconds_per_audio_s=round(elapsed / total, 4),
        target_s=90,
        failed=summary["failed"],
        environment=env.environment(),
    )
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
