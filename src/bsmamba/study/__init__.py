"""The ablation study: run every system x seed (runner), then tabulate and judge (report, claims).

``run_study(study_config(overrides=["study.recipe=demo"]))`` is what ``bsmamba study`` does;
``build(study_dir)`` is ``bsmamba report``.
"""

from bsmamba.study.report import build
from bsmamba.study.runner import run_study, study_config

__all__ = ["build", "run_study", "study_config"]
