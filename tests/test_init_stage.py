"""The init stage: old logits bit-identical for every initializer, tied stays tied, bad input refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_llama

from xlang import plugins
from xlang.contract import Strategy
from xlang.embeddings import initialize_embeddings
from xlang.errors import XlangError

INITIALIZERS = ("random", "mean", "covariance", "subword-mean", "subword-freq", "subword-fit", "subword-copy")

KOREAN = [
    "한국어 문장을 여러 번 반복합니다. 안녕하세요, 반갑습니다.",
    "서울은 대한민국의 수도입니다. 한국어 토큰을 배웁니다.",
] * 20


@pytest.fixture(scope="module")
def initializers() -> dict[str, Strategy]:
    return plugins.strategies("embedding_initializers", plugins.make_plugin_manager())


@pytest.fixture(scope="module")
def expanded_tokenizer(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xlang.tokenizer import expand_tokenizer

    ko = plugins.get_language("ko")
    out = tmp_path_factory.mktemp("tok") / "ko"
    expand_tokenizer(smollm2_dir, ko, KOREAN, budget=40, out_dir=out, pad_to_multiple_of=64)
    return out


def _tiny_base(smollm2_dir: Path, folder: Path, tied: bool) -> Path:
    """A tiny random Llama that shares SmolLM2's tokenizer (the pretrained weights are not the point)."""
    from transformers import AutoTokenizer

    tiny_llama(49_152, tied=tied).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("name", INITIALIZERS)
def test_old_logits_are_bit_identical(smollm2_dir, initializers, expanded_tokenizer, tmp_path, name, tied):
    from transformers import AutoModelForCausalLM

    base = _tiny_base(smollm2_dir, tmp_path / "base", tied)
    # the plugin's fits need text to fit on; the others run as the stage runs them without it
    fitting = name in ("subword-fit", "subword-copy")
    result = initialize_embeddings(
        base,
        expanded_tokenizer,
        tmp_path / "out",
        initializers[name],
        options={"fit_steps": 2, "fit_sequence": 16, "progress": False} if fitting else None,
        inputs={"texts": KOREAN, "seed": 0} if fitting else {"seed": 0},
    )
    before = AutoModelForCausalLM.from_pretrained(base).eval()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor([[504, 216, 34, 32, 3575, 282, 4649, 314]])
    with torch.no_grad():
        old = before(ids).logits
        new = after(ids).logits
    assert new.shape[-1] == result.vocab_size and result.vocab_size % 64 == 0
    assert torch.equal(old, new[..., : old.shape[-1]])
    same_matrix = after.get_output_embeddings().weight.data_ptr() == after.get_input_embeddings().weight.data_ptr()
    assert same_matrix == tied
    new_rows = after.get_input_embeddings().weight[49_152:]
    assert torch.isfinite(new_rows).all() and new_rows.abs().sum() > 0


def test_subword_mean_is_the_mean_of_the_pieces(smollm2_dir, initializers, expanded_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = _tiny_base(smollm2_dir, tmp_path / "base", tied=True)
    initialize_embeddings(base, expanded_tokenizer, tmp_path / "out", initializers["subword-mean"])
    old = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight
    new = AutoModelForCausalLM.from_pretrained(tmp_path / "out").get_input_embeddings().weight
    tokenizer = AutoTokenizer.from_pretrained(expanded_tokenizer)
    base_tokenizer = AutoTokenizer.from_pretrained(base)
    token_id = tokenizer.encode("한국어", add_special_tokens=False)[0]
    assert token_id >= 49_152
    pieces = base_tokenizer.backend_tokenizer.model.tokenize(tokenizer.convert_ids_to_tokens(token_id))
    expected = old[[piece.id for piece in pieces]].mean(dim=0)
    assert torch.allclose(new[token_id], expected, atol=1e-6)


def test_unknown_initializer_lists_the_known_ones(fresh_plugins):
    with pytest.raises(XlangError) as caught:
        plugins.get_strategy("embedding_initializers", "magic", fresh_plugins)
    assert "subword-mean" in caught.value.message and "random" in caught.value.message


def test_pickle_only_checkpoint_is_refused(smollm2_dir, initializers, expanded_tokenizer, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(smollm2_dir / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(XlangError, match="never unpickles"):
        initialize_embeddings(folder, expanded_tokenizer, tmp_path / "out", initializers["mean"])
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_that_does_not_extend_the_base_is_refused(smollm2_dir, initializers, tmp_path):
    from xlang.assets.wheels import MISTRAL_V1_TOKENIZER, wheel_member
    from xlang.tokenizer.sentencepiece import sentencepiece_folder

    base = _tiny_base(smollm2_dir, tmp_path / "base", tied=True)
    other = sentencepiece_folder(wheel_member(MISTRAL_V1_TOKENIZER, smollm2_dir.parent.parent), tmp_path / "mistral")
    with pytest.raises(XlangError, match="does not extend the base tokenizer"):
        initialize_embeddings(base, other, tmp_path / "out", initializers["mean"])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_extend_runs_subword_fit_with_english_kept(smollm2_dir, cli_env, tmp_path):
    """`xlang extend --initializer subword-fit --init-option fit_steps=N --init-option row_steps=M` through the
    recipe: the fit gets the target text and the companion English text, and its facts land in the folder's
    xlang-init.json."""
    import json
    import subprocess
    import sys

    base = _tiny_base(smollm2_dir, tmp_path / "base", tied=True)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "xlang.cli", "extend", "--lang", "ko", "--base", str(base), "--out", str(run)]
    command += ["--until", "init", "--budget", "300", "--initializer", "subword-fit", "--init-option", "fit_steps=2"]
    command += ["--init-option", "row_steps=2"]
    # an option with no flag of its own, from the environment (fewer English states: a quicker test)
    env = {**cli_env, "XLANG_STAGES__INIT__OPTIONS__KEEP_TOKENS": "4096"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "init" / "model" / "xlang-init.json").read_text())
    assert record["initializer"] == "subword-fit"
    assert record["options"]["fit_steps"] == 2 and record["options"]["row_steps"] == 2
    assert record["options"]["keep_tokens"] == 4096
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["init"]["options"] == record["options"]
    facts = record["facts"]
    # the stage passed the Korean word-frequency lists as general text: subword-freq's counts blend them in
    assert facts["prior_weight"] == 0.6 and facts["tokens_seen_only_in_the_prior"] >= 0
    assert facts["fit_steps"] == 2 and len(facts["fit_keep_nats_taken_first_last"]) == 2, facts
    assert facts["fit_row_steps"] == 2 and len(facts["fit_row_text_loss_first_last"]) == 2, facts
    assert facts["fit_stream_tokens"] > 2 * 4 * 257


@pytest.mark.slow
def test_korean_and_chinese_default_to_subword_copy(smollm2_dir, cli_env, tmp_path):
    """`xlang extend --lang ko` with no `--initializer` runs the language's default, `subword-copy` from the
    xlang-subword-fit plugin (a dependency of the Korean package): a copy-only fit confined to the weak
    directions, reading the general word lists, and Chinese names the same default."""
    import json
    import subprocess
    import sys

    from xlang.plugins import get_language

    assert get_language("zh").defaults.embedding_initializer == "subword-copy"
    base = _tiny_base(smollm2_dir, tmp_path / "base", tied=True)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "xlang.cli", "extend", "--lang", "ko", "--base", str(base), "--out", str(run)]
    command += ["--until", "init", "--budget", "300", "--init-option", "fit_steps=2"]
    command += ["--init-option", "keep_tokens=2048", "--init-option", "direction_tokens=1024"]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env)
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "init" / "model" / "xlang-init.json").read_text())
    assert record["initializer"] == "subword-copy"
    assert record["options"]["text_weight"] == 0 and record["options"]["spared_share"] == 0.98
    facts = record["facts"]
    assert facts["fit_copy_source"] == "prior_texts" and facts["fit_steps"] == 2, facts
    assert 0 < facts["fit_spared_directions"] < 32, facts  # the tiny base's hidden size is 32
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["init"]["initializer"] == "subword-copy"


@pytest.mark.slow
def test_init_text_is_what_the_initializer_reads(smollm2_dir, cli_env, tmp_path):
    """`xlang extend --init-text FILE`: the initializer counts the file's documents, not the training split's
    (subword-freq's token counts show which text it read), and the record says which file it was."""
    import json
    import subprocess
    import sys

    from transformers import AutoTokenizer

    paragraphs = ["대한민국은 민주공화국이다.", "대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다."]
    (tmp_path / "laws.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    base = _tiny_base(smollm2_dir, tmp_path / "base", tied=True)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "xlang.cli", "extend", "--lang", "ko", "--base", str(base), "--out", str(run)]
    command += ["--until", "init", "--budget", "300", "--initializer", "subword-freq", "--init-text", "laws.txt"]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["init"]["texts"] == [f"file://{(tmp_path / 'laws.txt').resolve()}"]
    metrics = manifest["stages"]["init"]["metrics"]
    assert (metrics["text_documents"], metrics["text_chars"]) == (2, sum(map(len, paragraphs)))
    assert "It read 2 documents" in (run / "report.md").read_text() and "laws.txt" in (run / "report.md").read_text()
    # the new tokens the two sentences contain are the only ones with a count from the text
    tokenizer = AutoTokenizer.from_pretrained(run / "expand" / "tokenizer")
    base_size = len(AutoTokenizer.from_pretrained(base))
    in_text = {
        i for text in paragraphs for i in tokenizer(text, add_special_tokens=False)["input_ids"] if i >= base_size
    }
    record = json.loads((run / "init" / "model" / "xlang-init.json").read_text())
    facts = record["facts"]
    assert len(in_text) >= 5, in_text
    not_in_text = facts["unseen_tokens"] + facts["tokens_seen_only_in_the_prior"]
    new_tokens = len(tokenizer) - base_size - record["zero_rows"]  # rows padded to a multiple stay zero
    assert new_tokens == 300 and not_in_text == new_tokens - len(in_text), (facts, len(in_text))
