"""Strategy options: every built-in initializer, candidate source and expander checks what a user sets.

An option a strategy does not take is an error that names the strategy and the option (it used to be
swallowed: `--initializer subword-freq --fit-steps 5` silently did nothing); a bad value names the
option; and options that are accepted reach the code that uses them. Tiny random Llamas and a byte-level
BPE trained here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from tiny_models import tiny_llama  # noqa: E402

from xlang import plugins  # noqa: E402
from xlang.contract import NoOptions, Strategy  # noqa: E402
from xlang.embeddings import expand_model, initialize_embeddings  # noqa: E402
from xlang.errors import XlangError  # noqa: E402

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Select the cells, then choose Format - Cells and open the Numbers tab.",
] * 8
KOREAN = [
    "대화 상자는 지역화 데이터를 포함할 수 있습니다.",
    "취소를 클릭하면 대화 상자를 불러오지 않습니다.",
    "스택 호출을 사용하면 프로그램 실행 도중 함수 시퀀스를 모니터링할 수 있습니다.",
] * 6
NEW_WORDS = ["대화", " 대화", "상자", " 상자", "습니다", " 수", "함수"]


@pytest.fixture(scope="module")
def manager() -> Any:
    return plugins.make_plugin_manager()


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    """(base, expanded, expanded folder): a byte-level BPE of English text plus a few added Korean words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=["<|endoftext|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(ENGLISH, trainer)
    base = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|endoftext|>")
    folder = tmp_path_factory.mktemp("tokenizers")
    base.save_pretrained(folder / "base")
    expanded = AutoTokenizer.from_pretrained(folder / "base")
    expanded.add_tokens(NEW_WORDS)
    expanded.save_pretrained(folder / "expanded")
    return base, expanded, folder / "expanded"


def _initializer(manager: Any, name: str) -> Strategy:
    return plugins.get_strategy("embedding_initializers", name, manager)


def test_an_unknown_option_names_the_initializer_and_the_option(manager: Any, tokenizers: Any, tmp_path: Path) -> None:
    """`subword-freq` has no `fit_steps`: the run stops before it loads anything, and says what it takes."""
    base, expanded, expanded_dir = tokenizers
    model_dir = tmp_path / "base-model"
    tiny_llama(len(base), tied=True).save_pretrained(model_dir, safe_serialization=True)
    base.save_pretrained(model_dir)
    subword_freq = _initializer(manager, "subword-freq")

    with pytest.raises(XlangError) as error:
        initialize_embeddings(
            model_dir, expanded_dir, tmp_path / "out", subword_freq, options={"fit_steps": 5}, inputs={"seed": 0}
        )
    message = str(error.value)
    assert "embedding initializer 'subword-freq' has no option 'fit_steps'" in message
    assert "frequency_weight" in message  # what it does take
    assert not (tmp_path / "out").exists()

    with pytest.raises(XlangError, match="'random' has no option 'fit_steps' \\(it takes no options\\)"):
        expand_model(
            tiny_llama(len(base), tied=True), base, expanded, _initializer(manager, "random"), options={"fit_steps": 5}
        )


@pytest.mark.parametrize(
    ("name", "options", "named"),
    [
        ("subword-freq", {"frequency_weight": -0.5}, "frequency_weight"),
        ("subword-freq", {"context_tokens": 0}, "context_tokens"),
        ("subword-fit", {"row_learning_rate": 0}, "row_learning_rate"),
        ("subword-fit", {"keep_hard_share": 1.5}, "keep_hard_share"),
        ("subword-fit", {"fit_sequence": 1}, "fit_sequence"),
        ("subword-fit", {"fit_steps": "many"}, "fit_steps"),
    ],
)
def test_a_bad_value_names_the_option(manager: Any, tokenizers: Any, name: str, options: dict, named: str) -> None:
    base, expanded, _ = tokenizers
    with pytest.raises(XlangError) as error:
        expand_model(tiny_llama(len(base), tied=True), base, expanded, _initializer(manager, name), options=options)
    assert str(error.value).startswith(f"invalid options for embedding initializer {name!r}: {named}: ")


def test_subword_fit_options_reach_the_fit(manager: Any, tokenizers: Any) -> None:
    """Every forward pass of the fit has the shape its options say: the kept states `keep_context` tokens at a
    time up to `keep_tokens`, then per map step `fit_batch` windows of `fit_sequence` and copy sequences of
    2 x `copy_length` + 1, then per row step `row_batch` windows of `row_sequence`."""
    base, expanded, _ = tokenizers
    model = tiny_llama(len(base), tied=False)
    shapes: list[tuple[int, int]] = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    options = {
        "fit_steps": 2,
        "fit_sequence": 16,
        "fit_batch": 3,
        "copy_length": 5,
        "keep_tokens": 40,
        "keep_context": 16,
        "row_steps": 1,
        "row_sequence": 20,
        "row_batch": 2,
        "progress": False,
    }
    try:
        done = expand_model(
            model,
            base,
            expanded,
            _initializer(manager, "subword-fit"),
            options=options,
            inputs={"texts": KOREAN, "keep_texts": ENGLISH, "seed": 0},
        )
    finally:
        handle.remove()
    context = shapes[0]  # subword-freq's one pass to find the bias direction
    assert context[0] == 1
    assert shapes[1:] == [(1, 16), (1, 16), (1, 8), (3, 16), (3, 11), (3, 16), (3, 11), (2, 20)]
    facts = done["facts"]
    assert facts["fit_steps"] == 2 and facts["fit_row_steps"] == 1
    assert done["options"] == {**done["options"], **options}


def test_subword_fit_without_a_copy_task_or_kept_text_runs_one_pass_a_step(manager: Any, tokenizers: Any) -> None:
    base, expanded, _ = tokenizers
    model = tiny_llama(len(base), tied=True)
    passes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, _a: passes.append(1))
    try:
        done = expand_model(
            model,
            base,
            expanded,
            _initializer(manager, "subword-fit"),
            options={"fit_steps": 4, "fit_sequence": 16, "copy_weight": 0, "progress": False},
            inputs={"texts": KOREAN},
        )
    finally:
        handle.remove()
    assert len(passes) == 1 + 4  # the bias direction's pass, then one text pass per step
    assert done["facts"]["fit_copy_loss_first_last"] is None and done["facts"]["fit_keep_nats_held_out"] is None


def test_subword_freq_options_reach_the_rows(manager: Any, tokenizers: Any) -> None:
    """frequency_weight 0 and input_contrast 0 make subword-freq's rows the plain piece means (subword-mean)."""
    base, expanded, _ = tokenizers
    plain = tiny_llama(len(base), tied=False)
    tuned = tiny_llama(len(base), tied=False)
    expand_model(plain, base, expanded, _initializer(manager, "subword-mean"))
    done = expand_model(
        tuned,
        base,
        expanded,
        _initializer(manager, "subword-freq"),
        options={"frequency_weight": 0.0, "input_contrast": 0.0},
        inputs={"texts": KOREAN},
    )
    new = torch.tensor(done["new_token_ids"])
    for layer in ("get_input_embeddings", "get_output_embeddings"):
        assert torch.allclose(getattr(plain, layer)().weight[new], getattr(tuned, layer)().weight[new], atol=1e-6)
    assert done["facts"]["frequency_weight"] == 0.0 and done["facts"]["input_contrast"] == 0.0


def test_every_builtin_strategy_rejects_an_option_it_does_not_take(manager: Any) -> None:
    for kind in ("embedding_initializers", "token_candidate_sources", "tokenizer_expanders"):
        for name, strategy in plugins.strategies(kind, manager).items():
            with pytest.raises(XlangError, match=f"{name!r} has no option 'no_such_option'"):
                strategy.configure({"no_such_option": 1})


def test_user_source_needs_tokens_or_a_file_and_reads_them(manager: Any, tmp_path: Path) -> None:
    user = plugins.get_strategy("token_candidate_sources", "user", manager)
    ko = plugins.get_language("ko", manager)
    with pytest.raises(XlangError, match="invalid options for token candidate source 'user': .*give tokens"):
        user.configure({})
    words = tmp_path / "mine.txt"
    words.write_text("# my words\n대화 상자\n문서 12\n", encoding="utf-8")
    assert user(options={"tokens": ["한국어"], "path": str(words)}, language=ko, texts=[], limit=10) == [
        "한국어",
        "대화",
        "문서",
    ]
    with pytest.raises(XlangError, match="no Korean character"):
        user(options={"tokens": ["한국어", "hello"]}, language=ko, texts=[], limit=10)


def test_a_recorded_run_can_be_repeated_from_its_options(manager: Any, tokenizers: Any, tmp_path: Path) -> None:
    """xlang-init.json records the options with every default filled in; giving them back is valid and
    gives the same rows (a user can rerun what the manifest says ran)."""
    base, expanded, expanded_dir = tokenizers
    model_dir = tmp_path / "base-model"
    tiny_llama(len(base), tied=True).save_pretrained(model_dir, safe_serialization=True)
    base.save_pretrained(model_dir)
    strategy = _initializer(manager, "subword-fit")
    inputs = {"texts": KOREAN, "seed": 1}
    first = initialize_embeddings(
        model_dir,
        expanded_dir,
        tmp_path / "a",
        strategy,
        options={"fit_steps": 2, "progress": False, "fit_sequence": 16},
        inputs=inputs,
    )
    recorded = json.loads((tmp_path / "a" / "xlang-init.json").read_text())["options"]
    assert recorded == first.options and recorded["keep_weight"] == 10.0
    second = initialize_embeddings(model_dir, expanded_dir, tmp_path / "b", strategy, options=recorded, inputs=inputs)
    assert second.facts["fit_text_loss_first_last"] == first.facts["fit_text_loss_first_last"]


def test_a_plain_function_gets_every_input_and_its_options(tokenizers: Any) -> None:
    """Outside the registry (a notebook, a test) a plain function is called with every input and options="""
    base, expanded, _ = tokenizers
    seen: dict[str, Any] = {}

    def fill(*, model: Any, base_tokenizer: Any, tokenizer: Any, new_token_ids: list[int], options: Any, seed: int):
        seen.update(options=options, seed=seed)
        with torch.no_grad():
            model.get_input_embeddings().weight[new_token_ids] = 0.5
        return {}

    done = expand_model(tiny_llama(len(base), tied=True), base, expanded, fill, inputs={"seed": 7})
    assert seen == {"options": NoOptions(), "seed": 7} and done["options"] == {}
    with pytest.raises(XlangError, match="may not set model"):
        expand_model(tiny_llama(len(base), tied=True), base, expanded, fill, inputs={"seed": 7, "model": None})
