"""`run(cfg)` and `bsmamba train` end to end on a tiny model and a tiny prepared folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bsmamba import config
from bsmamba.model import BandSplitEnhancer
from bsmamba.train import run

TRAIN_DIRS = ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav")
TEST_DIRS = ("clean_testset_wav", "noisy_testset_wav")


def make_dataset(root: Path, per_speaker: int = 4, seconds: float = 1.0, seed: int = 0) -> Path:
    """A prepared-VoiceBank-layout folder of voiced-like harmonic signals in white noise.

    Speakers p001, p002 train; p226 validates (declared in manifest.json); p232 is the test set.
    """
    rng = np.random.default_rng(seed)
    for d in TRAIN_DIRS + TEST_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000

    def pair() -> tuple[np.ndarray, np.ndarray]:
        f0 = rng.uniform(100, 220)
        env = 0.5 * (1 - np.cos(2 * np.pi * t * rng.uniform(2, 4)))  # syllable-rate envelope
        harmonics = sum(
            np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 12)
        )
        clean = 0.1 * env * harmonics
        return (clean + 0.03 * rng.standard_normal(n)).astype(np.float32), clean.astype(np.float32)

    for dirs, names in (
        (
            TRAIN_DIRS,
            [f"{s}_{i:03d}" for s in ("p001", "p002", "p226") for i in range(per_speaker)],
        ),
        (TEST_DIRS, ["p232_000", "p232_001"]),
    ):
        for name in names:
            noisy, clean = pair()
            sf.write(root / dirs[0] / f"{name}.wav", clean, 16000)
            sf.write(root / dirs[1] / f"{name}.wav", noisy, 16000)
    (root / "manifest.json").write_text(json.dumps({"valid_speakers": ["p226"]}))
    return root


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long run: dim 16, 0.5 s crops, batch 2, one thread."""
    return [
        "model.preset=abl3",
        "model.dim=16",
        f"data.path={data}",
        "data.segment_s=0.5",
        "data.valid_speakers=[p226]",
        "train.batch_size=2",
        "train.threads=1",
        "train.progress=false",
        "memory.check=false",
        f"train.out={out}",
        *extra,
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("vb"))


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=True)["state_dict"]


def test_run_writes_a_complete_run_dir_and_a_rerun_only_reports(data, tmp_path):
    out = tmp_path / "run"
    res = run(config.load(overrides=tiny(data, out, "train.max_steps=5", "train.epochs=3")))
    assert res["kind"] == "train_results" and res["steps"] == 5
    assert res["epochs"] == 1.25  # 4 steps an epoch
    assert res["params"] > 0 and res["nonfinite_steps"] == 0 and res["step_time_s"] > 0
    assert res["device"] == "cpu" and res["threads"] == 1 and res["precision"] == "32-true"
    # 8 training items / batch 2 = 4 steps an epoch: one validation, with real PESQ and STOI
    assert len(res["validation"]) == 1 and 1.0 <= res["best_val_pesq"] <= 4.65
    assert 0.0 <= res["best_val_stoi"] <= 1.0
    for name in ("config.yaml", "environment.json", "results.json", "logs/csv/metrics.csv"):
        assert (out / name).is_file(), name
    assert list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    (val,) = res["validation"]
    assert (res["best_val_pesq"], res["best_val_stoi"]) == (val["val_pesq"], val["val_stoi"])
    # the noisy inputs' PESQ on the same validation crops: the line the curve should rise above
    from bsmamba.data.voicebank import TrainSet
    from bsmamba.metrics import pesq

    valid = TrainSet(data, "valid", segment_s=0.5, valid_speakers=["p226"], seed=0)
    noisy = np.mean([pesq(c.numpy(), n.numpy(), 16000) for n, c in valid])
    assert val["val_pesq_noisy"] == pytest.approx(noisy, abs=1e-6)
    best = out / res["best_checkpoint"]
    assert best.is_file() and f"pesq={res['best_val_pesq']:.3f}" in best.name
    meta = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["bsmamba"]
    assert meta["format_version"] == 2 and meta["model_config"]["dim"] == 16
    model = BandSplitEnhancer(**meta["model_config"])
    assert res["params"] == sum(p.numel() for p in model.parameters())
    assert config.load(out / "config.yaml").model.dim == 16  # the resolved config reloads
    # A finished run is not trained again.
    stamp = (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    again = run(config.load(overrides=tiny(data, out, "train.max_steps=5", "train.epochs=3")))
    assert again == res
    assert (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp


def test_resume_is_exact_mid_epoch_and_at_an_epoch_end(data, tmp_path):
    base = ["train.epochs=3", "train.ckpt_every_n_steps=3", "train.log_every=1"]
    straight = run(config.load(overrides=tiny(data, tmp_path / "a", *base, "train.max_steps=6")))
    a = _weights(tmp_path / "a" / "checkpoints" / "last.ckpt")
    # 4 steps an epoch: stop at step 3 (mid-epoch) or 4 (the epoch's last batch, before its
    # validation), then continue the same run dir to step 6 from its last.ckpt.
    for stop in (3, 4):
        out = tmp_path / f"stop{stop}"
        run(config.load(overrides=tiny(data, out, *base, f"train.max_steps={stop}")))
        (out / "results.json").unlink()
        log = out / "logs" / "csv" / "metrics.csv"
        width = len(log.read_text().splitlines()[0].split(","))
        with open(log, "a") as f:  # damaged rows: cut short by a kill, and junk in every field
            f.write("0.5,0.3\n" + ",".join(["junk"] * width) + "\n")
        resumed = run(config.load(overrides=tiny(data, out, *base, "train.max_steps=6")))
        assert resumed["steps"] == straight["steps"] == 6
        b = _weights(out / "checkpoints" / "last.ckpt")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (stop, k)
        assert resumed["validation"] == straight["validation"]
        # The log too: the rows before the stop are kept, none is logged twice.
        assert _logged(out, "loss") == _logged(tmp_path / "a", "loss") != []


def test_a_resume_keeps_an_unreadable_log_aside_and_trains_on(data, tmp_path):
    out, base = tmp_path / "run", ["train.epochs=3", "train.log_every=1"]
    run(config.load(overrides=tiny(data, out, *base, "train.max_steps=3")))
    (out / "results.json").unlink()
    log = out / "logs" / "csv" / "metrics.csv"
    damaged = log.read_bytes() + b"\x00" * 200_000  # a block of zeros: csv refuses the file
    log.write_bytes(damaged)
    earlier = log.parent / "metrics-damaged-s3.csv"  # kept by an earlier resume: never replaced
    earlier.write_text("step,loss\n0,1.0\n")
    with pytest.warns(UserWarning, match="metrics-damaged-s3-2.csv"):
        res = run(config.load(overrides=tiny(data, out, *base, "train.max_steps=6")))
    assert res["steps"] == 6
    assert (log.parent / "metrics-damaged-s3-2.csv").read_bytes() == damaged  # kept as it was
    assert earlier.read_text() == "step,loss\n0,1.0\n"
    assert [s for s, _ in _logged(out, "loss")] == ["3", "4", "5"]  # the resumed run's rows


def _logged(out, column: str) -> list[tuple[str, str]]:
    """(step, value) of every row of a run's metrics.csv that has ``column``."""
    rows = csv.DictReader(open(out / "logs" / "csv" / "metrics.csv"))
    return [(r["step"], r[column]) for r in rows if r.get(column)]


def test_injected_oom_steps_down_the_ladder_and_finishes(data, tmp_path, monkeypatch):
    out = tmp_path / "oom"
    over = tiny(data, out, "train.max_steps=4", "train.epochs=2", "train.ckpt_every_n_steps=1")
    over += ["memory.ladder=[train.batch_size=1]"]
    monkeypatch.setenv("BSMAMBA_TEST_INJECT_OOM", "2")  # tests only: OOM at step 2
    res = run(config.load(overrides=over))
    assert res["steps"] == 4 and res["batch_size"] == 1
    (event,) = [e for e in res["ladder_events"] if e["event"] == "step_down"]
    assert event["changes"] == [{"key": "train.batch_size", "from": 2, "to": 1}]
    ladder = json.loads((out / "ladder.json").read_text())
    assert ladder["config"]["train"]["batch_size"] == 1
    assert config.load(out / "config.yaml").train.batch_size == 1


def test_published_recipe_on_the_demo_data_switches_the_adversarial_term_on_at_half(tmp_path):
    # The defaults are the published recipe: D trains from the first step, the generator's
    # adversarial term joins at epoch >= epochs / 2 (3 epochs: from epoch 2, not 1), and StepLR
    # decays both optimisers (here every epoch, by 0.5, to see it in 3 epochs).
    out = tmp_path / "gan"
    over = ["model.preset=bsrnn", "model.dim=8", "model.num_layers=1", "data.path=demo"]
    over += ["data.segment_s=0.5", "train.batch_size=2", "train.threads=1", "memory.check=false"]
    over += ["train.progress=false", f"train.out={out}", "train.epochs=3", "train.keep_best=0"]
    over += ["train.limit_train_batches=2", "train.val_every=100", "train.log_every=1"]
    over += ["train.scheduler_step_epochs=1", "train.scheduler_gamma=0.5"]
    res = run(config.load(overrides=over))
    assert res["steps"] == 6  # the discriminator's own steps do not count as training steps
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
    d_steps = {float(st["step"]) for st in ckpt["optimizer_states"][1]["state"].values()}
    assert d_steps == {6.0 - res["disc_skipped_steps"]} and res["disc_skipped_steps"] < 6
    for opt in ckpt["optimizer_states"]:  # generator and discriminator, epoch 2: 1e-3 * 0.5^2
        assert opt["param_groups"][0]["lr"] == pytest.approx(2.5e-4)
    rows = list(csv.DictReader(open(out / "logs" / "csv" / "metrics.csv")))
    steps = [r for r in rows if r.get("loss")]
    assert [int(r["epoch"]) for r in steps] == [0, 0, 1, 1, 2, 2]
    assert [bool(r["loss_adv"]) for r in steps] == [False] * 4 + [True] * 2
    assert any(r["loss_disc"] for r in steps if int(r["epoch"]) == 0)  # D trains from the start
    assert all(r["loss_ri"] and r["loss_mag"] for r in steps)


def test_cli_errors_are_one_line(data, capsys):
    from bsmamba import cli

    assert cli.main(["train", "--data", str(data), "train.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["train", "--preset", "bsrnn", "--batch-size", "3", "--print-config"]) == 0
    shown = capsys.readouterr().out
    assert "mixer: lstm" in shown and "batch_size: 3" in shown


def test_unknown_choices_are_refused_with_the_valid_ones(data, tmp_path):
    for key, valid in (
        ("train.scheduler=linear", "none, step, cosine"),
        ("train.complex_loss=l2", "plain, compressed"),
        ("train.precision=16-mixed", "32-true, bf16-mixed"),
        ("train.device=tpu", "auto, cpu, cuda, mps"),
    ):
        with pytest.raises(ValueError, match=valid):
            run(config.load(overrides=tiny(data, tmp_path / "x", key)))


def test_resume_flag_continues_a_finished_run_with_a_larger_budget(data, tmp_path):
    from bsmamba import cli

    out = tmp_path / "more"
    first = run(config.load(overrides=tiny(data, out, "train.max_steps=2", "train.epochs=3")))
    assert first["steps"] == 2
    assert cli.main(["train", "--resume", str(out), "train.max_steps=3"]) == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 3
    assert json.loads((out / "results-s2.json").read_text()) == first  # the earlier finish kept


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_missing_gpu_is_a_clear_error(data, tmp_path):
    with pytest.raises(ValueError, match="no CUDA device"):
        run(config.load(overrides=tiny(data, tmp_path / "x", "train.device=cuda")))


def test_ema_checkpoints_hold_the_average_and_resume_exactly(data, tmp_path):
    """train.ema_decay=d: each checkpoint's weights are avg_k = d avg_(k-1) + (1 - d) w_k of the
    trained weights w_k (Lightning keeps w_k beside them), enhance loads the average, and a run
    stopped and resumed ends where an unbroken one does."""
    d = 0.5
    base = ["train.epochs=4", "train.limit_train_batches=1", "train.keep_best=4"]
    base += [f"train.ema_decay={d}", "train.ckpt_every_n_steps=1"]
    straight = run(config.load(overrides=tiny(data, tmp_path / "a", *base, "train.max_steps=3")))
    ckdir = tmp_path / "a" / "checkpoints"
    ckpts = {int(p.name.split("-s")[1].split("-")[0]): p for p in ckdir.glob("best-*.ckpt")}
    assert sorted(ckpts) == [1, 2, 3]
    saved = {k: torch.load(p, weights_only=True) for k, p in ckpts.items()}
    avg = saved[1]["current_model_state"]  # the first update copies the weights
    for k in (1, 2, 3):
        w = saved[k]["current_model_state"]
        avg = avg if k == 1 else {n: d * avg[n] + (1 - d) * w[n] for n in w}
        for n, v in saved[k]["state_dict"].items():
            assert torch.allclose(v, avg[n], atol=1e-7), (k, n)
    assert any(not torch.equal(saved[3]["state_dict"][n], w[n]) for n in w)  # not the weights
    from bsmamba.enhance import load

    model = load(ckpts[3]).model
    for n, v in model.state_dict().items():
        assert torch.equal(v, saved[3]["state_dict"][f"model.{n}"]), n
    out = tmp_path / "b"
    run(config.load(overrides=tiny(data, out, *base, "train.max_steps=2")))
    (out / "results.json").unlink()
    resumed = run(config.load(overrides=tiny(data, out, *base, "train.max_steps=3")))
    assert resumed["validation"] == straight["validation"]
    a, b = (
        torch.load(p / "checkpoints" / "last.ckpt", weights_only=True) for p in (ckdir.parent, out)
    )
    for key in ("state_dict", "current_model_state"):
        for n in a[key]:
            assert torch.equal(a[key][n], b[key][n]), (key, n)
