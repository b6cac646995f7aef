"""Lightning's side of checkpointing: atomic, weights_only checkpoint IO and the two savers.

``last.ckpt`` (:class:`LastCheckpoint`) is what resume uses; ``best-*.ckpt``
(:func:`best_checkpoints`) are the best N by validation PESQ, what ``bsmamba.load(run_dir)`` picks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bsmamba import files
from bsmamba.checkpoint import load


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with tmp + fsync + rename writes and ``weights_only`` loads."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        files.atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load(path, map_location=map_location or "cpu")


class LastCheckpoint(Checkpoint):
    """Rewrites ``last.ckpt`` every ``every`` optimizer steps, at each epoch's end and when
    training stops (max_steps, max_time): the final weights are always in it.

    A ``Checkpoint`` subclass, so Lightning runs it after its Timer (``should_stop`` is then
    known at batch end) and adds no default checkpointer of its own. Never at
    ``on_train_end``: after a stop mid-epoch that checkpoint restores as a finished epoch.
    """

    def __init__(self, path: Path, every: int):
        self.path, self.every, self._saved_at = Path(path), every, -1

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full: optimizers, loops ...
        self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._saved_at or step == 0:
            return
        periodic = self.every > 0 and step % self.every == 0
        if periodic or trainer.should_stop or 0 < trainer.max_steps <= step:
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        # A save at this step's batch end came before this validation: redo it, so that the
        # validation (history, best score) is in last.ckpt too.
        if not trainer.sanity_checking and trainer.global_step == self._saved_at:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Also called when max_steps/max_time stop an epoch midway: such a checkpoint would
        # restore as a finished epoch, so only complete epochs are saved here.
        ready = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        if ready >= trainer.num_training_batches and trainer.global_step != self._saved_at:
            self._save(trainer)


def best_checkpoints(dirpath: Path, keep: int) -> ModelCheckpoint:
    """The ``keep`` best checkpoints by validation PESQ: ``best-e<E>-s<S>-pesq=<P>.ckpt``."""
    return ModelCheckpoint(
        dirpath=dirpath,
        filename="best-e{epoch}-s{step}-pesq={val_pesq:.3f}",
        monitor="val_pesq",
        mode="max",
        save_top_k=keep,
        auto_insert_metric_name=False,
        save_on_train_epoch_end=False,  # right after each validation
        enable_version_counter=False,
    )
