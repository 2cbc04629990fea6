"""Running a suite on a model folder, as `xlang eval run`, the evaluate stage and the A/B recipe all do:
sets looked up in the language plugin (plus benchmark files a user names), the judge built from the teacher
settings, answers and verdicts kept in the output folder, `results.json` and the report written at the end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xlang.contract import Resolver, Strategy
from xlang.errors import XlangError
from xlang.spec import EvaluationSet, LanguageSpec


def suite_sets(language: LanguageSpec, suite: str, benches: Sequence[str] = ()) -> list[EvaluationSet]:
    """The language's sets of `suite`, then one set per benchmark file given (format detected)."""
    from xlang.eval.benchmarks import detect_format

    sets = list(language.suite(suite))
    for bench in benches:
        path = Path(bench).expanduser()
        uri = bench if bench.startswith("hf://") else f"file://{path.resolve()}"
        if not bench.startswith("hf://") and not path.exists():
            raise XlangError(f"--bench {bench} does not exist; pass a benchmark file or folder")
        kind = "mmbench-tsv" if bench.startswith("hf://") else detect_format(path)
        name = path.stem.lower().replace("_", "-") or "bench"
        sets.append(EvaluationSet(name=_unique(name, sets), suite=suite, format=kind, uri=uri))
    if not sets:
        have = sorted({entry.suite for entry in language.evaluation_sets})
        raise XlangError(
            f"language {language.code!r} has no evaluation sets in suite {suite!r}"
            + (f" (its suites: {', '.join(have)})" if have else " (it declares none)")
            + "; choose one of those or pass --bench FILE"
        )
    return sets


def _unique(name: str, sets: Sequence[EvaluationSet]) -> str:
    import re

    name = re.sub(r"[^a-z0-9._-]", "-", name).strip("-._") or "bench"
    taken = {entry.name for entry in sets}
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


def local_path(resolver: Resolver, uri: str) -> str:
    """A set's URI as `load_benchmark` takes it: a path for `file://`, `hf://` as it is, others fetched."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(uri).path)
    if uri.startswith("hf://"):
        return uri
    return str(resolver.fetch_file(uri))


def make_judge(resolver: Resolver, name: str | None, out_dir: Path) -> Any | None:
    """The judge the name (a teacher) calls for, remembering verdicts in `out_dir`; None without a name."""
    if not name:
        return None
    from xlang.eval.judge import Judge
    from xlang.eval.suite import VERDICTS

    return Judge(resolver.teacher(name), book=out_dir / VERDICTS)


def set_evaluators(resolver: Resolver, sets: Sequence[EvaluationSet]) -> dict[str, Strategy]:
    """The evaluator of every set, looked up before any model loads: a set naming one that no plugin registers
    stops the evaluation at once, and the message names the set."""
    found: dict[str, Strategy] = {}
    for entry in sets:
        name = entry.scored_by()
        if name in found:
            continue
        try:
            found[name] = resolver.strategy("evaluators", name)
        except XlangError as error:
            raise XlangError(
                f"evaluation set {entry.name!r} names evaluator {name!r}, which no installed plugin registers "
                f"({error.message}); install the plugin that registers it or correct the set's evaluator"
            ) from None
    return found


def evaluate_model(
    resolver: Resolver,
    *,
    model_dir: str | Path,
    language: LanguageSpec,
    suite: str,
    out_dir: Path,
    sets: Sequence[EvaluationSet],
    judge: Any | None,
    max_tokens: int = 64,
    valid_utf8: bool = False,
    text_metrics: Callable[[Any], dict[str, float]] | None = None,
    on_set: Callable[[str, int], None] | None = None,
    on_answer: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Score one model folder on `sets`; writes `results.json` and `report.md` (with PNGs) into `out_dir`
    and returns what `results.json` holds. Benchmark files are read before the model loads."""
    from xlang.eval.report import write_json, write_run_report
    from xlang.eval.suite import RESULTS, eval_lock, load_sets, run_suite
    from xlang.serve.engine import ChatModel

    evaluators = set_evaluators(resolver, sets)
    chosen = resolver.settings.stage("evaluate").get("evaluator_options") or {}
    options = {name: strategy.configure(chosen.get(name)) for name, strategy in evaluators.items()}
    loaded = load_sets(sets, lambda uri: local_path(resolver, uri))
    out_dir.mkdir(parents=True, exist_ok=True)
    with eval_lock(out_dir):
        chat = ChatModel.load(model_dir)
        result = run_suite(
            chat=chat,
            language=language,
            suite=suite,
            sets=loaded,
            evaluator_for=evaluators.__getitem__,
            evaluator_options=options,
            judge=judge,
            out_dir=out_dir,
            max_tokens=max_tokens,
            valid_utf8=valid_utf8,
            text_metrics=(lambda: text_metrics(chat)) if text_metrics is not None else None,
            on_set=on_set,
            on_answer=on_answer,
        )
        payload = result.as_json()
        write_json(out_dir / RESULTS, payload)
        write_run_report(out_dir, payload)
    return payload


def evaluate_judged(resolver: Resolver, judge_name: str | None, *, out_dir: Path, **arguments: Any) -> dict[str, Any]:
    """`evaluate_model` with the judge the name calls for, built for this output folder and closed after."""
    judge = make_judge(resolver, judge_name, out_dir)
    try:
        return evaluate_model(resolver, out_dir=out_dir, judge=judge, **arguments)
    finally:
        if judge is not None:
            judge.close()
