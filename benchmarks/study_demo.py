"""Time the `demo` study end to end (README, docs/study.md) and print one JSON document.

    python benchmarks/study_demo.py                 # the demo study (8 min 22 s: docs/study.md)
    python benchmarks/study_demo.py --quick         # the smoke recipe on two systems (not timed)
    python benchmarks/study_demo.py --out DIR       # keep the study folder (default: a temp dir)

Reported: total wall time, each stage's time per system, PESQ per system against the noisy
input, and whether every system improved on it. A fresh folder is used unless ``--out`` names
an existing study, in which case finished stages are reused (and the time says so).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bsmamba import env, schema
from bsmamba.study import runner


def _stage_times(sdir: Path, doc: dict) -> dict:
    out = {}
    for s in doc["systems"]:
        rec = {}
        for name in ("params", "memory"):
            rec[name] = _time(sdir / s / f"{name}.json")
        for seed in doc["seeds"]:
            for name in ("train", "enhance", "evaluate"):
                rec[f"s{seed}_{name}"] = _time(sdir / s / f"s{seed}" / "stages" / f"{name}.json")
        out[s] = rec
    return out


def _time(path: Path) -> float | None:
    try:
        return json.loads(path.read_text()).get("stage_time_s")
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke recipe, two systems")
    p.add_argument("--out", help="study folder (default: a fresh temp dir)")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bsmamba-study-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "study"
        recipe = (
            ["study.recipe=smoke", "study.systems=[bsrnn,abl3]"]
            if args.quick
            else ["study.recipe=demo"]
        )
        cfg = runner.study_config(overrides=recipe + [f"study.out={out}", *args.overrides])
        t0 = time.perf_counter()
        res = runner.run_study(
            cfg, echo=lambda line: print(line, file=sys.stderr), child_stream="stderr"
        )
        wall = time.perf_counter() - t0
        doc = res["results"]
        noisy = ((doc["noisy"].get("metrics") or {}).get("pesq") or {}).get("mean")
        pesq = {
            s: ((doc["by_system"][s].get("metrics") or {}).get("pesq") or {}).get("mean")
            for s in doc["systems"]
        }
        bench = schema.document(
            "benchmark",
            name="study_demo",
            recipe=cfg.study.recipe,
            quick=args.quick,
            wall_s=wall,
            stages_computed=len(res["computed"]),
            reused_finished_stages=not args.quick and len(res["computed"]) < 3 * len(pesq),
            train_budget_s=cfg.train.max_time_s,
            train_shape={"batch_size": cfg.train.batch_size, "segment_s": cfg.data.segment_s},
            noisy_pesq=noisy,
            by_system_pesq=pesq,
            every_system_improves=bool(noisy is not None)
            and all(v is not None and v > noisy for v in pesq.values()),
            by_system_stage_time_s=_stage_times(out, doc),
            study_dir=str(out) if args.out else None,
            environment=env.environment(),
        )
    print(json.dumps(bench, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
