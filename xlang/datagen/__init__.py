"""Multilingual visual-instruction data written by a teacher model, as X-LLaVA built its mVIF data:
every image asked about natively in each language, by task type (caption, object-, location- and
atmosphere-centric, conversation), or translated from one language for comparison.

`generate` is the stage function (`xlang data generate` calls it): it plans (images verified, tasks and
prompts resolved, the existing output read) before it sends anything, then runs the requests and appends
whole records. `data_stats` summarises a file (`xlang data stats`). The teacher is any object with the
`xlang.teachers.Teacher` API; languages are `LanguageSpec`s with `prompts`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xlang.datagen.config import GenerateConfig, generate_config
from xlang.datagen.cost import BUILTIN_PRICES, price_for
from xlang.datagen.pipeline import GenerateResult, GenerationRun, record_cost
from xlang.datagen.plan import Job, PlannedImage, export_dataset_images, plan_images, plan_jobs, resolve_tasks
from xlang.datagen.progress import Reporter, SilentReporter
from xlang.datagen.stats import DataStats, data_stats
from xlang.datagen.store import OutputLock, read_existing


@dataclass(frozen=True)
class RunPlan:
    """The checked inputs of a run: its task types, its verified images and its jobs."""

    tasks: tuple[str, ...]
    images: list[PlannedImage]
    jobs: list[Job]


def plan_run(config: GenerateConfig, languages: Mapping[str, Any]) -> RunPlan:
    """Resolve the tasks, verify every image and read the existing output (nothing written, nothing sent);
    XlangError on bad input. Run it before building the teacher, which may be costly (a `local` teacher
    loads its model); `generate` reads the output again under the lock."""
    tasks = resolve_tasks(config, languages)
    images = plan_images(config)
    if config.out.exists():  # under the lock: a run writing it now is reported as such, not as a torn line
        with OutputLock(config.out):
            read_existing(config.out, lambda line: 0.0)
    return RunPlan(tasks, images, plan_jobs(images, config, tasks))


def generate(
    config: GenerateConfig,
    *,
    languages: Mapping[str, Any],
    teacher: Any,
    reporter: Reporter | None = None,
    plan: RunPlan | None = None,
) -> GenerateResult:
    """Write the records `config` asks for that `config.out` lacks; see the module docstring.

    `languages` maps every code in `config.langs` (and `translate_from`) to its `LanguageSpec`; `plan` is
    `plan_run(config, languages)` when the caller made it already. Bad input (a task a language lacks, a
    corrupt image, a malformed line in the output, a model without a price while a budget is set) raises
    XlangError before anything is written or sent.
    """
    started = time.monotonic()
    plan = plan or plan_run(config, languages)
    images, jobs = plan.images, plan.jobs
    description = teacher.describe()
    price = price_for(description.get("model"), config.prices, required=config.budget_usd is not None)
    with OutputLock(config.out):
        existing = read_existing(config.out, lambda line: record_cost(line, price))
        export_dataset_images(images)
        run = GenerationRun(
            config=config,
            languages=languages,
            teacher=teacher,
            jobs=jobs,
            existing=existing,
            price=price,
            reporter=reporter or SilentReporter(),
        )
        result = asyncio.run(run.run())
    result.seconds = time.monotonic() - started
    return result


__all__ = [
    "BUILTIN_PRICES",
    "DataStats",
    "GenerateConfig",
    "GenerateResult",
    "RunPlan",
    "data_stats",
    "generate",
    "generate_config",
    "plan_run",
]
