"""The ablation study: run every system x seed (runner), then tabulate and judge (report, claims).

``run_study(study_config(overrides=["study.recipe=demo"]))`` is what ``bsmamba study`` does;
``build(study_dir)`` is ``bsmamba report``. Layers, lowest first: ``stats`` and ``records``
(statistics; the records on disk), ``collect`` (a study folder into the results document),
``claims``, ``report`` / ``html`` / ``plots`` (rendering), ``runner`` / ``launchers`` (running).
"""

__all__ = ["build", "run_study", "study_config"]


def __getattr__(name: str):
    # Lazy, so that `from bsmamba.study import stats` does not import the runner and the report.
    if name == "build":
        from bsmamba.study.report import build

        return build
    if name in ("run_study", "study_config"):
        from bsmamba.study import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'bsmamba.study' has no attribute {name!r}")
