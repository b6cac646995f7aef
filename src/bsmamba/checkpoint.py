"""Checkpoints: atomic writes, plain-data contents, ``torch.load(weights_only=True)`` everywhere.

A training checkpoint is Lightning's dict (weights, optimizers, schedulers, loop progress,
callback state) plus a ``"bsmamba"`` entry::

    {"format_version": 2, "model_config": {...BandSplitEnhancer kwargs...},
     "rng": {...RNG states as tensors/ints...}, "train": {...counters...}}

so that a checkpoint alone rebuilds its model (``bsmamba.load``) and holds no pickled objects.
Writes go to a temp file beside the target, are fsynced, then renamed over it: a process killed at
any moment leaves the previous checkpoint or the new one, never half of one (the Lightning side
of this, the checkpoint IO and callbacks, is in :mod:`bsmamba.train.callbacks`). No Lightning
import here: ``bsmamba.load`` and ``bsmamba enhance`` need only torch.
"""

from __future__ import annotations

import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bsmamba import files

# 2: the published BSRNN framework (utterance-level norms, stacked layout); format 1 weights do not
# fit today's models
FORMAT_VERSION = 2
LAST = "last.ckpt"


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; raises ``FileNotFoundError``/``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # torch.save writes a zip archive; anything else is not ours, and torch's own error for it
    # is seven lines that end by suggesting weights_only=False (running code from the file).
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_head = f.read(4) == b"PK\x03\x04"
        what = "a damaged or truncated PyTorch file" if zip_head else "not a PyTorch file"
        raise ValueError(f"{path} is not a bsmamba checkpoint ({what})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} is not a bsmamba checkpoint: it holds Python objects besides tensors and "
            "plain data, and bsmamba loads weights only (it never runs code from a file)"
        ) from None
    except Exception as e:
        reason = str(e).split("\n")[0].split(". ")[0]  # torch's first sentence, no advice
        raise ValueError(
            f"{path} is not a bsmamba checkpoint ({type(e).__name__}: {reason})"
        ) from None
    meta = ckpt.get("bsmamba") if isinstance(ckpt, dict) else None
    if meta is None:
        raise ValueError(f"{path} is not a bsmamba checkpoint (no 'bsmamba' entry)")
    if meta.get("format_version", 0) < FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {meta.get('format_version', 0)}, from a bsmamba before "
            f"the published BSRNN framework (format {FORMAT_VERSION}): its weights do not fit "
            "today's models; train it again"
        )
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {meta['format_version']}, newer than this bsmamba "
            f"reads ({FORMAT_VERSION}); upgrade bsmamba"
        )
    return ckpt


def model_state(ckpt: dict) -> dict[str, torch.Tensor]:
    """The enhancer's weights from a training checkpoint (module prefix ``model.`` removed)."""
    state = ckpt["state_dict"]
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


def check_fits(path: str | Path, state: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Raise ``ValueError`` (one line naming ``path``) unless ``state`` fits ``model`` exactly.

    torch's own error lists every missing and unexpected key: hundreds of lines for a
    checkpoint of another model, or one a bsmamba with another layout wrote.
    """
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
    shapes = sorted(k for k in want.keys() & have.keys() if want[k] != have[k])
    if not (missing or unexpected or shapes):
        return
    parts = [f"{len(x)} {what} (e.g. {x[0]})" for x, what in (
        (missing, "weights missing"), (unexpected, "unexpected weights"),
        (shapes, "of another shape"),
    ) if x]  # fmt: skip
    raise ValueError(
        f"{path} does not fit the model its config describes: {'; '.join(parts)}; it was "
        "written for another model, or by a bsmamba with another model layout"
    )


def save_model(path: str | Path, model: torch.nn.Module) -> Path:
    """A weights-only checkpoint of an enhancer (no optimizer), loadable by ``bsmamba.load``."""
    ckpt = {
        "bsmamba": {"format_version": FORMAT_VERSION, "model_config": dict(model.config)},
        "state_dict": {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return files.atomic_write(path, lambda f: torch.save(ckpt, f))


def resolve(ckpt_or_run_dir: str | Path) -> Path:
    """A ``.ckpt`` file as is; a run directory -> its best checkpoint by validation PESQ.

    Best = highest ``pesq`` in ``checkpoints/best-*.ckpt`` names; ``last.ckpt`` if there is none.
    """
    p = Path(ckpt_or_run_dir)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint or run directory {p} does not exist")
    ckdir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    best = sorted(ckdir.glob("best-*.ckpt"), key=_pesq_of_name, reverse=True)
    if best:
        return best[0]
    if (ckdir / LAST).is_file():
        return ckdir / LAST
    raise FileNotFoundError(
        f"{p} holds no checkpoint (looked for {ckdir}/best-*.ckpt and {ckdir / LAST}); "
        "train one with `bsmamba train`"
    )


def _pesq_of_name(path: Path) -> float:
    m = re.search(r"pesq=(-?[0-9.]+?)(?:\.ckpt)?$", path.name)
    return float(m.group(1)) if m else float("-inf")


def clean_stale_temps(ckdir: str | Path) -> int:
    """Remove temp files a killed writer left behind; returns how many."""
    stale = list(Path(ckdir).glob(".*.tmp")) if Path(ckdir).is_dir() else []
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)


# ---- RNG states as plain tensors / ints (weights_only-safe) -------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and ints."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": int(version),
        "python_gauss": gauss,  # None or float
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached": float(cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = tuple(int(v) for v in state["python"].tolist())
    random.setstate((state["python_version"], py, state["python_gauss"]))
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_cached"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
