"""Embedding initialization: old logits are untouched, tied stays tied, the folder is plain HF, bad input is
refused. Tiny random Llama models (tied and untied) with a small byte-level BPE trained here; the real
SmolLM2 only where pretrained weights matter (tests/test_embeddings_quality.py). Initializers are the
registered strategies (`subword-fit` comes from the xlang-subword-fit plugin); their options are checked
in tests/test_strategy_options.py."""

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
from xlang.embeddings.pieces import check_extends, spell_new_tokens  # noqa: E402
from xlang.errors import XlangError  # noqa: E402

FITTING = ("subword-fit", "subword-copy")  # the plugin's: they take the fit's options
INITIALIZERS = ("random", "mean", "covariance", "subword-mean", "subword-freq", "subword-fit", "subword-copy")
"""The built-ins and the first-party plugin's; `test_unknown_initializer_lists_the_known_ones` checks it is
what the plugin manager registers."""

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Select the cells, then choose Format - Cells and open the Numbers tab.",
    "Python functions return values; classes group data and behaviour.",
    "Numbers like 12345 and 2024 are split into single digits.",
] * 8
KOREAN = [
    "자동 고침 기능이 활성화되었습니다.",
    "스택 호출을 사용하면 프로그램 실행 도중 프로시저 및 함수 시퀀스를 모니터링할 수 있습니다.",
    "대화 상자는 지역화 데이터를 포함할 수 있습니다.",
    "취소를 클릭하면 대화 상자를 불러오지 않습니다.",
] * 4
NEW_WORDS = ["대화", " 대화", "상자", " 상자", "습니다", "니다", "다", " 수", " 있습니다", "함수", "프로그램", "클릭"]


def _byte_level_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def initializers() -> dict[str, Strategy]:
    """The registered initializers, from a manager of their own (the installed plugins loaded)."""
    return plugins.strategies("embedding_initializers", plugins.make_plugin_manager())


def _strategy(function: Any, name: str = "test-initializer") -> Strategy:
    """A plain function as an initializer strategy that takes no options (it is passed what it names)."""
    return Strategy("embedding_initializers", name, function, NoOptions, "tests")


@pytest.fixture(scope="module")
def base_tokenizer() -> Any:
    return _byte_level_tokenizer(ENGLISH, vocab_size=400)


@pytest.fixture(scope="module")
def expanded_tokenizer(base_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("base-tok")
    base_tokenizer.save_pretrained(folder)
    expanded = AutoTokenizer.from_pretrained(folder)
    expanded.add_tokens(NEW_WORDS)
    return expanded


@pytest.fixture(scope="module")
def base_folder(base_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tied tiny model saved as a plain HF folder with its tokenizer."""
    folder = tmp_path_factory.mktemp("base-model")
    tiny_llama(len(base_tokenizer), tied=True).save_pretrained(folder, safe_serialization=True)
    base_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def expanded_folder(expanded_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("expanded-tok")
    expanded_tokenizer.save_pretrained(folder)
    return folder


def _old_token_batch(tokenizer: Any) -> Any:
    ids = tokenizer(ENGLISH[:3], add_special_tokens=False)["input_ids"]
    width = min(len(row) for row in ids)
    return torch.tensor([row[:width] for row in ids])


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("name", INITIALIZERS)
def test_old_logits_bit_identical_for_every_initializer(
    name: str, tied: bool, initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    model = tiny_llama(len(base_tokenizer), tied=tied)
    inputs = _old_token_batch(base_tokenizer)
    with torch.inference_mode():
        before = model(input_ids=inputs).logits.clone()
    old = len(base_tokenizer)
    done = expand_model(
        model,
        base_tokenizer,
        expanded_tokenizer,
        initializers[name],
        options={"fit_steps": 3, "fit_sequence": 16, "progress": False} if name in FITTING else None,
        inputs={"texts": KOREAN, "keep_texts": ENGLISH, "seed": 0},
    )
    with torch.inference_mode():
        after = model(input_ids=inputs).logits
    assert after.shape[-1] == done["embedding_rows"] >= len(expanded_tokenizer)
    assert done["embedding_rows"] % 64 == 0
    assert torch.equal(before, after[..., :old]), f"{name}: old logits moved"
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    new = torch.tensor(done["new_token_ids"])
    assert len(new) == len(NEW_WORDS)
    assert torch.isfinite(model.get_input_embeddings().weight[new]).all()


def test_untied_output_rows_come_from_the_output_matrix(
    initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    model = tiny_llama(len(base_tokenizer), tied=False)
    w_in = model.get_input_embeddings().weight.detach().clone()
    w_out = model.get_output_embeddings().weight.detach().clone()
    done = expand_model(model, base_tokenizer, expanded_tokenizer, initializers["subword-mean"])
    spelled = spell_new_tokens(base_tokenizer, expanded_tokenizer, done["new_token_ids"])
    for token in spelled:
        pieces = list(token.pieces)
        assert torch.allclose(model.get_input_embeddings().weight[token.id], w_in[pieces].mean(0), atol=1e-6)
        assert torch.allclose(model.get_output_embeddings().weight[token.id], w_out[pieces].mean(0), atol=1e-6)


def test_spelling_new_tokens_in_base_pieces(base_tokenizer: Any, expanded_tokenizer: Any) -> None:
    new_ids = check_extends(base_tokenizer, expanded_tokenizer)
    spelled = {token.text: token for token in spell_new_tokens(base_tokenizer, expanded_tokenizer, new_ids)}
    for word in NEW_WORDS:
        token = spelled[word]
        assert list(token.pieces) == base_tokenizer.encode(word, add_special_tokens=False)
        assert base_tokenizer.decode(list(token.pieces)) == word


def test_spelling_merged_tokens_of_the_expansion_engine(smollm2_dir: Path, tmp_path: Path) -> None:
    """Tokens that the merges expander writes into the BPE vocabulary (not added tokens), byte fragments too."""
    from transformers import AutoTokenizer

    from xlang.tokenizer import expand_tokenizer

    result = expand_tokenizer(smollm2_dir, plugins.get_language("ko"), KOREAN * 4, 64, tmp_path / "tok")
    base = AutoTokenizer.from_pretrained(smollm2_dir)
    expanded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    new_ids = check_extends(base, expanded)
    assert new_ids == list(result.new_token_ids) + list(result.reserved_token_ids)
    spelled = spell_new_tokens(base, expanded, result.new_token_ids)
    for token in spelled:
        assert token.pieces, token
        token_bytes = b"".join(_token_bytes(base, piece) for piece in token.pieces)
        assert token_bytes == _token_bytes(expanded, token.id)


def _token_bytes(tokenizer: Any, token_id: int) -> bytes:
    from xlang.tokenizer.families import from_byte_symbols

    return from_byte_symbols(tokenizer.convert_ids_to_tokens(token_id))


def test_initialize_embeddings_writes_a_plain_hf_folder(
    initializers: dict[str, Strategy], base_folder: Path, expanded_folder: Path, expanded_tokenizer: Any, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "model"
    strategy = initializers["subword-freq"]
    result = initialize_embeddings(
        base_folder,
        expanded_folder,
        out,
        strategy,
        initializer_name="subword-freq",
        options=strategy.configure({"frequency_weight": 0.5}),
        inputs={"texts": KOREAN, "keep_texts": ENGLISH, "seed": 0},
    )
    assert result.out_dir == out and result.new_rows == len(NEW_WORDS) and result.tied
    assert result.vocab_size == len(expanded_tokenizer) and result.embedding_rows % 64 == 0
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    record = json.loads((out / "xlang-init.json").read_text())
    assert record["initializer"] == "subword-freq" and record["facts"]["unseen_tokens"] >= 0
    # the options as they ran, every default filled in, and the facts show they reached the initializer
    assert (
        record["options"]
        == result.options
        == {
            "frequency_weight": 0.5,
            "input_contrast": 1.0,
            "bias_ridge": 100.0,
            "context_tokens": 1024,
            "prior_weight": 0.6,
        }
    )
    assert record["facts"]["frequency_weight"] == 0.5
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"

    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == len(expanded_tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == result.embedding_rows
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    base = AutoModelForCausalLM.from_pretrained(base_folder)
    inputs = _old_token_batch(tokenizer)
    with torch.inference_mode():
        assert torch.equal(base(input_ids=inputs).logits, model(input_ids=inputs).logits[..., : base.config.vocab_size])
    with torch.inference_mode():
        korean = tokenizer(KOREAN[:1], return_tensors="pt")["input_ids"]
        assert korean.max() >= base.config.vocab_size  # the new tokens are used
        assert torch.isfinite(model(input_ids=korean).logits).all()


def test_reserved_and_padding_rows_are_zero(
    initializers: dict[str, Strategy], base_folder: Path, expanded_tokenizer: Any, tmp_path: Path
) -> None:
    tokenizer_dir = tmp_path / "tok"
    expanded_tokenizer.save_pretrained(tokenizer_dir)
    last = len(expanded_tokenizer) - 1
    (tokenizer_dir / "xlang-tokenizer.json").write_text(json.dumps({"reserved_id_range": [last, last + 1]}))
    result = initialize_embeddings(
        base_folder, tokenizer_dir, tmp_path / "model", initializers["mean"], pad_to_multiple_of=128
    )
    from transformers import AutoModelForCausalLM

    weight = AutoModelForCausalLM.from_pretrained(tmp_path / "model").get_input_embeddings().weight
    assert result.new_rows == len(NEW_WORDS) - 1 and weight.shape[0] == 512 == result.embedding_rows
    assert result.zero_rows == 512 - len(expanded_tokenizer) + 1
    assert not weight[last:].any()
    assert weight[last - 1].any()


def test_unknown_initializer_lists_the_known_ones(fresh_plugins: Any) -> None:
    with pytest.raises(XlangError) as error:
        plugins.get_strategy("embedding_initializers", "focus-xl", fresh_plugins)
    assert str(error.value).endswith("known: " + ", ".join(sorted(INITIALIZERS)))


def test_an_initializer_that_touches_old_rows_is_refused(base_tokenizer: Any, expanded_tokenizer: Any) -> None:
    def clobber(*, model: Any) -> None:
        with torch.no_grad():
            model.get_input_embeddings().weight[5] += 1

    model = tiny_llama(len(base_tokenizer), tied=True)
    with pytest.raises(XlangError, match="'clobber' changed rows of the base vocabulary"):
        expand_model(model, base_tokenizer, expanded_tokenizer, _strategy(clobber, "clobber"))


def test_a_tokenizer_that_does_not_extend_the_base_is_refused(
    initializers: dict[str, Strategy], base_tokenizer: Any
) -> None:
    other = _byte_level_tokenizer(KOREAN + ENGLISH, vocab_size=420)
    with pytest.raises(XlangError, match="does not extend the base tokenizer"):
        expand_model(tiny_llama(len(base_tokenizer), tied=True), base_tokenizer, other, initializers["mean"])


def test_a_model_smaller_than_its_tokenizer_is_refused(
    initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    model = tiny_llama(len(base_tokenizer) - 10, tied=True)
    with pytest.raises(XlangError, match="do not belong together"):
        expand_model(model, base_tokenizer, expanded_tokenizer, initializers["mean"])


def test_pickle_only_checkpoints_are_refused_without_unpickling(
    initializers: dict[str, Strategy], base_folder: Path, expanded_folder: Path, tmp_path: Path
) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((base_folder / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not even a pickle: loading it would fail differently")
    with pytest.raises(XlangError, match="never unpickles") as error:
        initialize_embeddings(pickled, expanded_folder, tmp_path / "out", initializers["mean"])
    assert error.value.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_a_failing_initializer_writes_nothing(base_folder: Path, expanded_folder: Path, tmp_path: Path) -> None:
    def broken(*, model: Any) -> None:
        raise XlangError("broken on purpose")

    out = tmp_path / "out"
    with pytest.raises(XlangError, match="broken on purpose"):
        initialize_embeddings(base_folder, expanded_folder, out, _strategy(broken))
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_bias_direction_gives_a_constant_logit_shift(smollm2_dir: Path) -> None:
    """The premise of subword-freq: on SmolLM2, h . v ~= 1 for output states of unseen text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlang.embeddings.initializers import bias_direction, output_states

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    fit = output_states(model, tokenizer(" ".join(KOREAN + ENGLISH[:4]), return_tensors="pt")["input_ids"])
    held_out = output_states(model, tokenizer(" ".join(ENGLISH[4:8] + KOREAN[1:3]), return_tensors="pt")["input_ids"])
    shift = held_out @ bias_direction(fit)
    assert abs(float(shift.mean()) - 1) < 0.1 and float(shift.std()) < 0.15


def test_subword_freq_prices_a_word_of_general_text_as_common(
    initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    """`prior_texts` (the word-frequency lists written out as text) raise the logit offset of a word the
    narrow training text lacks; `prior_weight` 0 leaves the rows exactly as without them."""
    texts = [text for text in KOREAN if "클릭" not in text]
    prior = ["취소를 클릭하면 됩니다."] * 40
    click = expanded_tokenizer.convert_tokens_to_ids("클릭")
    rows, facts = {}, {}
    for label, extra, options in (
        ("corpus", {}, None),
        ("prior", {"prior_texts": prior}, None),
        ("off", {"prior_texts": prior}, {"prior_weight": 0}),
    ):
        model = tiny_llama(len(base_tokenizer), tied=True)
        done = expand_model(
            model,
            base_tokenizer,
            expanded_tokenizer,
            initializers["subword-freq"],
            options=options,
            inputs={"texts": texts, "seed": 0, **extra},
        )
        facts[label] = done["facts"]
        rows[label] = model.get_input_embeddings().weight.detach()[len(base_tokenizer) : len(expanded_tokenizer)]
    assert torch.equal(rows["off"], rows["corpus"])
    assert facts["prior"]["prior_weight"] == 0.6 and facts["prior"]["tokens_seen_only_in_the_prior"] >= 1
    # every row moved along the one bias direction (the offsets are all that changed), the unseen word most,
    # against the others: its count rose from 0, and the offsets are centred
    moved = (rows["prior"] - rows["corpus"]).double()
    singular = torch.linalg.svdvals(moved)
    assert float(singular[1]) < 1e-4 * float(singular[0])
    index = click - len(base_tokenizer)
    along = moved @ (moved[index] / moved[index].norm())
    others = torch.cat([along[:index], along[index + 1 :]])
    assert float(along[index]) == pytest.approx(float(along.abs().max())) and float(others.median()) < 0


FIT_INPUTS = {"texts": KOREAN, "keep_texts": ENGLISH, "seed": 0}
FIT_OPTIONS = {"fit_sequence": 16, "fit_learning_rate": 1e-2, "progress": False}


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_subword_fit_lowers_its_losses_and_leaves_the_model_as_it_was(
    tied: bool, initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    """The fit moves the new rows away from subword-freq, lowers the copy loss (a random tiny model's text
    loss is mostly old tokens, which the map cannot change: it only must not blow up), and restores the
    model's requires_grad flags and mode (old rows and tying are checked by expand_model itself)."""
    fitted = tiny_llama(len(base_tokenizer), tied=tied)
    fitted.train()
    reference = tiny_llama(len(base_tokenizer), tied=tied)
    done = expand_model(
        fitted,
        base_tokenizer,
        expanded_tokenizer,
        initializers["subword-fit"],
        options={**FIT_OPTIONS, "fit_steps": 30},
        inputs=FIT_INPUTS,
    )
    expand_model(reference, base_tokenizer, expanded_tokenizer, initializers["subword-freq"], inputs=FIT_INPUTS)
    facts = done["facts"]
    text_first, text_last = facts["fit_text_loss_first_last"]
    copy_first, copy_last = facts["fit_copy_loss_first_last"]
    assert copy_last < copy_first - 0.1 and text_last < text_first + 0.5, facts
    assert facts["fit_keep_nats_taken_first_last"][1] < 0.05, facts  # English keeps its probability mass
    assert 0 <= facts["fit_keep_nats_held_out"] < 0.05, facts  # also where the fit never looked
    assert facts["fit_parameters"] == (1 if tied else 2) * (2 * 32 * 32 + 32)
    assert done["options"]["fit_steps"] == 30 and done["options"]["keep_tokens"] == 65536
    new = torch.tensor(done["new_token_ids"])
    for fitted_layer, reference_layer in (
        (fitted.get_input_embeddings(), reference.get_input_embeddings()),
        (fitted.get_output_embeddings(), reference.get_output_embeddings()),
    ):
        assert not torch.equal(fitted_layer.weight[new], reference_layer.weight[new])
    assert fitted.training and all(parameter.requires_grad for parameter in fitted.parameters())


def test_subword_fit_prints_plain_progress_lines_when_output_is_not_a_terminal(
    initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any, capsys: Any
) -> None:
    """A fit takes up to half an hour on CPUs; in a log (pytest's captured stdout is not a terminal) it must
    still say where it is: the English states pass, the first and last step of each phase with its loss,
    and each phase's first and last losses."""
    model = tiny_llama(len(base_tokenizer), tied=True)
    options = {**FIT_OPTIONS, "fit_steps": 3, "row_steps": 2, "row_sequence": 32, "progress": True}
    expand_model(
        model, base_tokenizer, expanded_tokenizer, initializers["subword-fit"], options=options, inputs=FIT_INPUTS
    )
    lines = capsys.readouterr().out.splitlines()
    assert any(line.strip().startswith("init:subword-fit English states: step 1/") for line in lines), lines
    for label, steps in (("map", 3), ("rows", 2)):
        ours = [line.strip() for line in lines if line.strip().startswith(f"init:subword-fit {label}: ")]
        assert ours[0].startswith(f"init:subword-fit {label}: step 1/{steps}, loss "), ours
        assert any(line.startswith(f"init:subword-fit {label}: step {steps}/{steps}, loss ") for line in ours), ours
        assert "text " in ours[-1] and " -> " in ours[-1] and "nats/token" in ours[-1], ours
    quiet = tiny_llama(len(base_tokenizer), tied=True)
    options["progress"] = False
    expand_model(
        quiet, base_tokenizer, expanded_tokenizer, initializers["subword-fit"], options=options, inputs=FIT_INPUTS
    )
    assert "init:subword-fit" not in capsys.readouterr().out


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_subword_fit_row_phase_trains_each_new_row_and_keeps_english(
    tied: bool, initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    """The second phase gives every new row a residual of its own: the training text's loss falls below
    the map-only fit's, the map phase itself runs unchanged, and English keeps its mass."""

    def fit(row_steps: int) -> tuple[Any, dict[str, Any]]:
        model = tiny_llama(len(base_tokenizer), tied=tied)
        options = {**FIT_OPTIONS, "fit_steps": 5, "row_steps": row_steps, "row_sequence": 32, "row_learning_rate": 3e-2}
        done = expand_model(
            model, base_tokenizer, expanded_tokenizer, initializers["subword-fit"], options=options, inputs=FIT_INPUTS
        )
        return model, done["facts"]

    def text_loss(model: Any) -> float:
        """Mean loss where the next token is new: what the rows decide (old targets are mostly noise here)."""
        ids = expanded_tokenizer(" ".join(KOREAN), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            losses = torch.nn.functional.cross_entropy(
                model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none"
            )
        return float(losses[ids[0, 1:] >= len(base_tokenizer)].mean())

    mapped, map_facts = fit(0)
    rowed, facts = fit(40)
    assert text_loss(rowed) < text_loss(mapped) - 0.5
    assert map_facts["fit_row_text_loss_first_last"] is None and facts["fit_row_steps"] == 40
    assert len(facts["fit_row_text_loss_first_last"]) == 2
    # the map phase ran as without the second one
    assert facts["fit_text_loss_first_last"] == map_facts["fit_text_loss_first_last"]
    assert facts["fit_keep_nats_taken_first_last"][1] < 0.05 and 0 <= facts["fit_keep_nats_held_out"] < 0.05, facts
    new = torch.arange(len(base_tokenizer), len(expanded_tokenizer))
    assert not torch.equal(mapped.get_input_embeddings().weight[new], rowed.get_input_embeddings().weight[new])
    assert not torch.equal(mapped.get_output_embeddings().weight[new], rowed.get_output_embeddings().weight[new])
    assert all(parameter.requires_grad for parameter in rowed.parameters())


def test_subword_fit_is_reproducible_and_needs_text(
    initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    def fit(options: dict[str, Any] | None, inputs: dict[str, Any] | None = FIT_INPUTS) -> Any:
        model = tiny_llama(len(base_tokenizer), tied=True)
        strategy = initializers["subword-fit"]
        expand_model(model, base_tokenizer, expanded_tokenizer, strategy, options=options, inputs=inputs)
        return model.get_input_embeddings().weight.detach().clone()

    assert torch.equal(fit({**FIT_OPTIONS, "fit_steps": 5}), fit({**FIT_OPTIONS, "fit_steps": 5}))
    with pytest.raises(XlangError, match="'subword-fit' needs the target language's training text"):
        fit(None, inputs=None)
    with pytest.raises(XlangError, match=r"embedding initializer 'subword-fit': fit_steps: .*greater than or equal"):
        fit({**FIT_OPTIONS, "fit_steps": -1})
    with pytest.raises(XlangError, match=r"embedding initializer 'subword-fit': row_steps: .*greater than or equal"):
        fit({**FIT_OPTIONS, "row_steps": -1})
    # a row phase that blows up names its own learning rate
    with pytest.raises(XlangError, match=r"row_learning_rate \(was 1e\+30\)"):
        fit({**FIT_OPTIONS, "fit_steps": 2, "row_steps": 3, "row_sequence": 16, "row_learning_rate": 1e30})


def test_subword_fit_computes_in_the_models_precision_unless_bf16_is_asked_for(
    initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    """bf16 autocast rounds away the small differences between near-parallel new rows (a Korean fit of
    SmolLM2 ended 5-6% worse), so it is off unless asked for; whichever ran, the facts say it."""

    def fit(options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        model = tiny_llama(len(base_tokenizer), tied=True)
        done = expand_model(
            model,
            base_tokenizer,
            expanded_tokenizer,
            initializers["subword-fit"],
            options={**FIT_OPTIONS, "fit_steps": 5, **options},
            inputs=FIT_INPUTS,
        )
        return model.get_input_embeddings().weight.detach().clone(), done["facts"]

    default, default_facts = fit({})
    full, full_facts = fit({"bf16_autocast": False})
    half, half_facts = fit({"bf16_autocast": True})
    assert torch.equal(default, full) and default_facts["fit_bf16_autocast"] is False
    assert half_facts["fit_bf16_autocast"] is True
    assert not torch.equal(full, half)  # bf16 passes give other gradients, so other rows
    with pytest.raises(XlangError, match=r"embedding initializer 'subword-fit': bf16_autocast: .*boolean"):
        fit({"bf16_autocast": "sometimes"})


def test_kept_states_read_only_the_positions_they_keep(base_tokenizer: Any, expanded_tokenizer: Any) -> None:
    """The English states are read keep_context tokens at a time and no further than keep_tokens: the text
    stream overshoots by up to a batch of documents, and reading it all cost SmolLM2 2.4x the time."""
    from xlang_subword_fit import SubwordFitOptions
    from xlang_subword_fit.kept import kept_states

    options = SubwordFitOptions(keep_tokens=100, keep_context=32)
    model = tiny_llama(len(expanded_tokenizer), tied=True)
    lengths: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        new = torch.tensor(check_extends(base_tokenizer, expanded_tokenizer))
        kept = kept_states(model, expanded_tokenizer, ENGLISH, model.lm_head.weight, new, 0, options)
    finally:
        handle.remove()
    assert lengths == [32, 32, 32, 4] and kept.states.shape == (100, 32) and kept.fixed.shape == (100,)
    assert kept.trained == 100 - 12  # the last eighth (rounded down) is held out
    assert kept_states(model, expanded_tokenizer, [], model.lm_head.weight, new, 0, options) is None


def test_hardest_kept_positions_are_the_most_taken_and_never_held_out() -> None:
    """The mined English positions are those where the new rows take the most mass, found only among the
    trained ones: a held-out position that the rows dominate must not leak into training."""
    from xlang_subword_fit.kept import KeptStates

    generator = torch.Generator().manual_seed(0)
    states = torch.randn(40, 8, generator=generator)
    fixed = torch.logsumexp(states @ torch.randn(8, 20, generator=generator), dim=1)
    output_rows = torch.randn(3, 8, generator=generator)
    states[5] = 4 * output_rows[1]  # a trained position the new rows dominate
    states[35] = 6 * output_rows[2]  # a held-out one that would be the hardest of all
    kept = KeptStates(states=states, fixed=fixed, trained=32, block=7)
    taken = kept.mass_taken(torch.arange(32), output_rows)

    hardest = kept.hardest(output_rows, 4)

    assert hardest.tolist() == taken.topk(4).indices.tolist()
    assert int(hardest[0]) == 5 and bool((hardest < 32).all())
    assert kept.hardest(output_rows, 0).numel() == 0
    assert kept.held_out_mass(output_rows) == round(float(kept.mass_taken(torch.arange(32, 40), output_rows).mean()), 4)


COPY_OPTIONS = {
    "fit_sequence": 16,
    "fit_learning_rate": 1e-2,
    "direction_tokens": 512,
    "spared_share": 0.5,  # the tiny random model's states are near isotropic: about half its 32 directions
    "progress": False,
}


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_subword_copy_changes_output_rows_only_beyond_the_strongest_state_directions(
    tied: bool, initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    """`spared_share` confines the fit's change to the output rows to the weak directions of the model's
    final states, so it hardly moves any logit; an untied model's input rows are not confined."""
    from xlang_subword_fit.directions import state_directions

    def fit(initializer: str, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        model = tiny_llama(len(base_tokenizer), tied=tied)
        done = expand_model(
            model, base_tokenizer, expanded_tokenizer, initializers[initializer], options=options, inputs=FIT_INPUTS
        )
        return model, done

    fitted, done = fit("subword-copy", {**COPY_OPTIONS, "fit_steps": 20})
    start, _ = fit("subword-freq", None)
    new = torch.tensor(done["new_token_ids"])
    # the directions of the same model and text, found again here (their order is fixed by their strength)
    directions = state_directions(start, base_tokenizer, [KOREAN, ENGLISH], 512, 1024, 0)
    spared = done["facts"]["fit_spared_directions"]
    held = directions.values.cumsum(0) / directions.values.sum()
    assert 1 <= spared < 32 and held[spared - 1] >= 0.5 > (held[spared - 2] if spared > 1 else 0), (spared, held)
    strong = directions.vectors[:, :spared]

    def change(model: Any, layer: str) -> Any:
        return (getattr(model, layer)().weight[new] - getattr(start, layer)().weight[new]).detach()

    output_change = change(fitted, "get_output_embeddings")
    assert float(output_change.norm()) > 1e-3  # the fit did change the rows
    assert float((output_change @ strong).norm()) < 1e-4 * float(output_change.norm())
    if not tied:
        input_change = change(fitted, "get_input_embeddings")
        assert float((input_change @ strong).norm()) > 0.1 * float(input_change.norm())
    # unconfined, the same fit does move the strong directions
    free, _ = fit("subword-copy", {**COPY_OPTIONS, "fit_steps": 20, "spared_share": 0.0})
    free_change = change(free, "get_output_embeddings")
    assert float((free_change @ strong).norm()) > 0.1 * float(free_change.norm())


def test_subword_copy_reads_no_training_text_counts_its_pool_in_prior_texts_and_stays_anchored(
    initializers: dict[str, Strategy], base_tokenizer: Any, expanded_tokenizer: Any
) -> None:
    """The copy-only map phase: no next-token loss on the training text, the copy task drawn from the
    general text's new tokens (the training text's when a language has none), and the anchor holding the
    rows near where `subword-freq` put them; copy and text losses cannot both be off."""

    def fit(options: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        model = tiny_llama(len(base_tokenizer), tied=True)
        strategy = initializers["subword-copy"]
        return expand_model(model, base_tokenizer, expanded_tokenizer, strategy, options=options, inputs=inputs)[
            "facts"
        ]

    prior = [" 대화", " 상자"] * 5
    options = {**COPY_OPTIONS, "fit_steps": 30, "anchor_weight": 0.0, "keep_weight": 0.0}  # 0: no English states
    facts = fit(options, {**FIT_INPUTS, "prior_texts": prior})
    assert facts["fit_text_loss_first_last"] is None and facts["fit_keep_nats_held_out"] is None, facts
    copy_first, copy_last = facts["fit_copy_loss_first_last"]
    assert copy_last < copy_first - 0.1, facts
    assert facts["fit_copy_source"] == "prior_texts" and facts["fit_copy_pool_tokens"] == 2, facts
    without_prior = fit(options, FIT_INPUTS)
    assert without_prior["fit_copy_source"] == "texts" and without_prior["fit_copy_pool_tokens"] > 2, without_prior
    anchored = fit({**options, "anchor_weight": 1000.0}, {**FIT_INPUTS, "prior_texts": prior})
    assert anchored["fit_drift_first_last"][1] < 0.5 * facts["fit_drift_first_last"][1], (anchored, facts)
    with pytest.raises(XlangError, match=r"'subword-copy'.*needs text_weight or copy_weight above 0"):
        fit({**options, "copy_weight": 0.0}, FIT_INPUTS)
    with pytest.raises(XlangError, match=r"'subword-copy': spared_share: .*less than 1"):
        fit({**options, "spared_share": 1.0}, FIT_INPUTS)
