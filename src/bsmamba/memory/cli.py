"""``bsmamba plan``: peak training memory, measured and predicted, with a verdict."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bsmamba import schema
from bsmamba.memory.plan import (
    CARDS_GIB,
    card_configs,
    card_table,
    earlier_name,
    max_batch,
    plan,
    verdict_text,
)
from bsmamba.memory.step import DEVICES, StepOptions
from bsmamba.units import fmt_bytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bsmamba import config

    config.add_config_arguments(parser, ["preset", "batch_size", "segment", "budget", "threads"])
    parser.add_argument("--device", choices=DEVICES, default=None, help="device the plan is for")
    parser.add_argument("--all", action="store_true", help="plan every preset in one table")
    parser.add_argument(
        "--max-batch", action="store_true", help="find the largest batch that fits the budget"
    )
    parser.add_argument(
        "--no-measure", action="store_true", help="predict only (skip the real step)"
    )
    parser.add_argument(
        "--cards",
        nargs="?",
        const=",".join(str(c) for c in CARDS_GIB),
        default=None,
        metavar="GIB,GIB,...",
        help="largest batch of --preset (every preset with --all), and at the plan's earlier "
        "settings, per card size in GiB (default "
        f"{','.join(str(c) for c in CARDS_GIB)}); predicted, on cuda unless --device",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (schema kind 'plan')")


def main(args: argparse.Namespace) -> int:
    import json

    from bsmamba import config
    from bsmamba.presets import PRESETS

    cfg = config.from_args(args)
    if args.print_config:
        print(config.to_yaml(cfg))
        return 0
    if cfg.train.threads > 0:
        torch.set_num_threads(int(cfg.train.threads))
    base, options = config.model_kwargs(cfg), StepOptions.of(cfg)
    if args.cards is not None:
        cards = tuple(_card_sizes(args.cards))
        from bsmamba.presets import EARLIER

        if args.all:
            configs = card_configs(cfg)
        else:  # --preset with its own overrides (e.g. model.d_state=8)
            configs = {cfg.model.preset: base}
            if base["mixer"] != "lstm" and any(base[k] != v for k, v in EARLIER.items()):
                configs[earlier_name(cfg.model.preset)] = {**base, **EARLIER}
        table = card_table(configs, cfg.data.segment_s, cards, args.device or "cuda", options)
        if args.json:
            print(json.dumps(schema.document("plan", by_preset=table), indent=2))
        else:
            print(_render_cards(table, cards))
        return 0
    device = args.device or cfg.memory.device or "cpu"
    presets = list(PRESETS) if args.all else [cfg.model.preset]
    results: dict[str, Any] = {}
    for name in presets:
        kwargs = config.model_kwargs(config.with_preset(cfg, name))
        res = plan(
            kwargs,
            cfg.train.batch_size,
            cfg.data.segment_s,
            cfg.memory.budget,
            device,
            measure=not args.no_measure,
            options=options,
        )
        if args.max_batch:
            res["max_batch"] = max_batch(
                kwargs, cfg.data.segment_s, cfg.memory.budget, device, options=options
            )
        results[name] = res
    if args.json:
        print(json.dumps(schema.document("plan", by_preset=results), indent=2))
    else:
        print(_render(results))
    return 0


def _card_sizes(text: str) -> list[float]:
    try:
        sizes = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(x <= 0 for x in sizes):
        raise ValueError(f"--cards {text!r}: write card sizes in GiB, e.g. --cards 11,16,24,40,80")
    return sizes


def _render_cards(table: dict[str, dict], cards: tuple[float, ...]) -> str:
    first = next(iter(table.values()))
    device = first["device"]
    lines = [
        f"largest training batch per card (predicted on {device}"
        + (", an estimate: no CUDA here" if first["estimate"] else "")
        + (", CUDA context included" if device == "cuda" else "")
        + f"; {first['segment_s']} s segments; one step: forward, loss, backward, Adam; "
        "the peak's line in the batch from traces at batch 1 and 4)"
    ]
    width = max(len(n) for n in table) + 2
    head = f"{'preset':<{width}}" + "".join(f"{f'{c:g} GiB':>9}" for c in cards)
    lines.append(head + f"{'per item':>11}{'off line':>10}")
    for name, r in table.items():
        cells = [r["by_card"][f"{c:g}GiB"]["max_batch_size"] for c in cards]
        lines.append(
            f"{name:<{width}}"
            + "".join(f"{b:>9}" for b in cells)
            + f"{fmt_bytes(r['bytes_per_item']):>11}{100 * r['line_error']:>9.2f}%"
        )
    return "\n".join(lines)


def _render(results: dict[str, dict]) -> str:
    lines = []
    first = next(iter(results.values()))
    device = first["device"]
    parts = (
        "forward, loss, backward, Adam"
        + (", MetricGAN's discriminator and adversarial term" if first["metricgan"] else "")
        + (", the weight average" if first["ema"] else "")
    )
    lines.append(
        f"peak memory of one training step ({parts}) at batch "
        f"{first['batch_size']} x {first['segment_s']} s on {device}"
        + (" (estimate: no CUDA here)" if first["estimate"] else "")
    )
    head = f"{'preset':<9}{'measured':>12}{'predicted':>12}{'err':>7}"
    head += f"{'params':>11}{'grads':>11}{'adam':>11}{'activ.':>11}{'batch':>10}  verdict"
    lines.append(head)
    for name, r in results.items():
        b = r["breakdown"]
        err = f"{100 * r['prediction_error']:+.0f}%" if r["prediction_error"] is not None else "-"
        lines.append(
            f"{name:<9}{fmt_bytes(r['measured_peak_bytes']):>12}"
            f"{fmt_bytes(r['predicted_peak_bytes']):>12}{err:>7}"
            f"{fmt_bytes(b['parameters_bytes']):>11}{fmt_bytes(b['gradients_bytes']):>11}"
            f"{fmt_bytes(b['optimizer_state_bytes']):>11}{fmt_bytes(b['activations_bytes']):>11}"
            f"{fmt_bytes(b['batch_bytes']):>10}  "
            f"{verdict_text(r)}"
        )
        if "max_batch" in r:
            lines.append(
                f"{'':<9}largest batch within the budget: {r['max_batch']['max_batch_size']}"
            )
    for name, r in results.items():
        lines.append(f"largest activation holders at the peak ({name}):")
        for t in r["top_layers"][:5]:
            lines.append(f"  {fmt_bytes(t['bytes']):>11}  {t['layer']}")
    notes = dict.fromkeys(a for r in results.values() for a in r["assumptions"])  # ordered set
    if notes:
        lines.append("assumptions:")
        lines += [f"  - {a}" for a in notes]
    return "\n".join(lines)
