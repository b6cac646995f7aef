"""How long `bsmamba evaluate` takes on the VoiceBank+DEMAND test set's worth of audio.

The 824 VB-DMD test pairs hold about 34.6 min of speech (2.52 s a pair). Without the corpus we
score the demo set's real-speech test pairs, repeated under new names until the same amount of
audio is reached, with the noisy files standing in for enhanced ones. Prints one JSON document.

    python benchmarks/evaluate.py            # 824 pairs' worth, 2 workers (target <= 90 s)
    python benchmarks/evaluate.py --quick    # 40 pairs: proves it runs
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

VB_TEST_PAIRS = 824
VB_TEST_AUDIO_S = VB_TEST_PAIRS * 2.52  # the VB-DMD test set's mean pair length


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
    seconds = {p.name: sf.info(str(p)).duration for p in clean}
    target = VB_TEST_AUDIO_S * (40 / VB_TEST_PAIRS if args.quick else 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        c_dir, e_dir = Path(tmp, "clean"), Path(tmp, "enhanced")
        c_dir.mkdir()
        e_dir.mkdir()
        total, k = 0.0, 0
        while total < target:
            src = clean[k % len(clean)]
            name = f"r{k:04d}_{src.name}"
            os.symlink(src, c_dir / name)
            os.symlink(root / "noisy_testset_wav" / src.name, e_dir / name)
            total += seconds[src.name]
            k += 1
        t0 = time.perf_counter()
        summary = evaluate_dirs(c_dir, e_dir, workers=args.workers)
        elapsed = time.perf_counter() - t0
    doc = schema.document(
        "benchmark",
        name="evaluate",
        pairs=k,
        audio_s=round(total, 1),
        workers=args.workers,
        elapsed_s=round(elapsed, 2),
        seconds_per_audio_s=round(elapsed / total, 4),
        projected_vb_test_s=round(elapsed / total * VB_TEST_AUDIO_S, 1),
        target_s=90,
        failed=summary["failed"],
        environment=env.environment(),
    )
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
