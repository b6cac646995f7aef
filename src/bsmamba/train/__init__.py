"""Training: ``run(cfg) -> results`` (Lightning under the hood) and the ``bsmamba train`` command.

from bsmamba import config, train
results = train.run(config.load(overrides=["model.preset=abl3", "data.path=demo"]))
"""

from __future__ import annotations

from bsmamba.train.run import run

__all__ = ["run"]
