"""The options of `subword-fit`: every knob of the fit, with the value measured best as its default.

Set them under `stages.init.options` (or `xlang extend --initializer subword-fit --init-option fit_steps=N
--init-option row_steps=M`; `xlang strategies subword-fit` lists them). The measurements are
SmolLM2-135M-Instruct with 8,000 new tokens, scored in bits per character on the validation split; the
plugin's README.md has the full tables.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from xlang.embeddings.initializers import SubwordFreqOptions


class SubwordFitOptions(SubwordFreqOptions):
    """`subword-freq`'s options (the rows the fit starts from) plus the fit's own."""

    initializer_name: ClassVar[str] = "subword-fit"
    """The registered name these defaults belong to, for progress and messages."""

    # --- phase 1: one map shared by all new rows ---------------------------------------------------

    fit_steps: int = Field(default=150, ge=0)
    """Adam steps of the map phase (0: no map, only the row phase if `row_steps` > 0). SmolLM2-135M,
    Korean, first 6,000 validation characters: bits/char 3.701 (`subword-freq`) -> 3.682 after 60 steps
    -> 3.250 after 150 (base model 2.950, same scorer). Chinese gains nothing from more: 300 steps
    ended at 1.27x the base, 150 at 1.23-1.27x (first 20,000 characters)."""
    fit_learning_rate: float = Field(default=1e-3, gt=0)
    """Adam's learning rate in the map phase. SmolLM2, Chinese, 150 steps on documents: 3e-3 diverges
    early (text loss 11.0 at the start) and ends at 1.55x the base with English +5%; 1e-3 gives 1.23x.
    Also tried there and left out: the first piece's row as a third map input (1.27x, English +0.6%)
    and free per-row residuals for the 2,000 most frequent new tokens (1.22x: within run-to-run noise,
    for 8x the parameters)."""
    fit_sequence: int = Field(default=256, ge=2)
    """Tokens of training text per sequence in the map phase (a step reads `fit_batch` of them: 3-7.5 s
    a step for SmolLM2-135M on two CPU cores)."""
    fit_batch: int = Field(default=4, ge=1)
    """Sequences of training text (and of the copy task) per map step."""
    copy_weight: float = Field(default=1.0, ge=0)
    """Weight of the copy task in the map phase's loss. Without the copy task the map does not learn to
    copy within 40-60 steps and BPC gets worse (3.70 -> 3.76 on the first 6,000 Korean characters);
    with only the copy task the next-token loss on real text climbs (8.1 -> 13 nats/token)."""
    copy_length: int = Field(default=32, ge=1)
    """Tokens of one copy-task sequence; it is read twice after a separator (65 tokens) and scored on
    the second reading."""
    copy_pool: int = Field(default=2000, ge=1)
    """The most frequent new tokens (of `copy_source`), from which the copy task's sequences are drawn."""
    copy_source: Literal["texts", "prior_texts"] = "texts"
    """Where the copy pool's frequencies are counted: the training text, or `prior_texts` (the language's
    general word frequencies written out; the training text when a language has none). A copy task on the
    general words teaches copying the tokens that text of other kinds repeats."""
    text_weight: float = Field(default=1.0, ge=0)
    """Weight of the next-token loss on the training text in the map phase (0: a copy-only map phase, which
    reads no training text at all). The next-token loss teaches the rows the training corpus, which pays
    in domain and less out of domain; the row phase always uses it."""
    anchor_weight: float = Field(default=0.0, ge=0)
    """Weight of `|fitted - start|^2 / |start|^2` (means over the new rows) in the map phase: keeps a
    copy-only fit from drifting the rows away from what `subword-freq` measured. SmolLM2, Korean, 60
    copy-only steps in the weak directions: out-of-domain bits/char 1.249x the base at 1, 1.208x at 10,
    1.214x at 30."""
    spared_share: float = Field(default=0.0, ge=0, lt=1)
    """Confine the change to the output rows to the directions beyond the strongest ones of the model's
    final states that hold this share of their second moment (0: unconfined). A logit is `state . row`;
    SmolLM2's final states put 97% of their second moment in 200 of 576 directions and 98% in about 265, so a
    change confined to the rest moves what the model reads of a token and hardly what it predicts. For a
    tied model that is the one matrix; an untied model's input rows are not confined. The facts record
    how many directions were spared (`fit_spared_directions`)."""
    direction_tokens: int = Field(default=4096, ge=1)
    """Tokens of `texts` and as many of `keep_texts` whose final states (read with the base tokenizer)
    give the directions `spared_share` counts."""

    # --- the companion languages' text, whose predictions must not change ---------------------------

    keep_weight: float = Field(default=10.0, ge=0)
    """Weight of the kept-language term: the nats per token the new rows take from `keep_texts` (0: none,
    and their states are not computed). Mixing one English sequence in four into the next-token loss
    instead left English bits/char 2.9% up on SmolLM2 (Korean fit): that loss's gradient on the stolen mass
    is as small as the mass. Raising it does not help: a Korean fit at 30 scored 1.14x the base with
    English +2.6%, against 1.06x and +0.48% at 10 (150 steps, same scorer)."""
    keep_tokens: int = Field(default=65536, ge=1)
    """Positions of `keep_texts` whose final states are computed once; each step scores `keep_sample`
    of them. With 8,192 the map learned those states: a 300-step Chinese fit took 0.001-0.003
    nats/token on them and left English validation bits/char 9.9% up (SmolLM2); with 32,768 drawn
    uniformly a Korean fit took 0.0072 on English validation, with 65,536 and `keep_hard_share` 0.5,
    0.00037. A share `keep_held_out` of them is never trained on; the mass taken there is reported as
    `fit_keep_nats_held_out`: a floor on what English loses, not a bound (a Korean fit with
    `keep_weight` 30 held out 0.0033 nats/token and took 0.039 on English validation)."""
    keep_context: int = Field(default=1024, ge=1)
    """Tokens per forward pass that computes the kept states (at most the model's longest context): long
    contexts, as bits per character reads English (1,024-token windows). States from the fit's own
    256-token sequences missed them: a 150-step Chinese fit took 0.0018 nats/token on held-out such
    states, yet English validation rose 0.46%."""
    keep_sample: int = Field(default=2048, ge=1)
    """Kept positions scored per step (also the block size when all of them are scored at once)."""
    keep_hard_share: float = Field(default=0.5, ge=0, le=1)
    """Share of each step's kept positions taken from those where the new rows currently take the most
    mass. The mass is heavy-tailed: after a 150-step Korean fit, 1% of English positions carried 54-74%
    of it (up to 6 nats at one position: English about to say "chapter", "title" or "name", the Korean
    word's row wins). Uniform samples meet such positions rarely, so the map never learns to keep off
    them: with half of them mined, the mass on English validation fell 19-fold (0.0072 -> 0.00037
    nats/token) and English went from +0.36% to -0.02%, Korean 1.03x -> 1.01x."""
    keep_refresh: int = Field(default=10, ge=1)
    """Steps between two passes over every trained kept position that find the hardest ones."""
    keep_held_out: float = Field(default=0.125, ge=0, lt=1)
    """Share of the kept positions (the last ones) never trained on: they show whether the fit keeps off
    the companion language in general or only on the states it was fitted on."""

    # --- phase 2: a free residual per new row --------------------------------------------------------

    row_steps: int = Field(default=0, ge=0)
    """Adam steps of the second phase: the map stays as fitted and every new row gets a free residual,
    trained on `row_batch` sequences of `row_sequence` tokens a step with the same kept-language term
    and no copy task. Off by default for its cost: Chinese with 400 row steps reached 1.06x the base
    (English -0.04%) against 1.27x after the map alone, in 97 minutes instead of 21 on two CPU cores
    (about 11 s a row step)."""
    row_learning_rate: float = Field(default=1e-3, gt=0)
    """Adam's learning rate in the row phase (the 400-step Chinese fit above used 1e-3)."""
    row_sequence: int = Field(default=1024, ge=2)
    """Tokens per sequence in the row phase: real text has its own repeats at that length."""
    row_batch: int = Field(default=2, ge=1)
    """Sequences per row step."""

    bf16_autocast: bool = False
    """Compute the fit's forward and backward passes under bf16 autocast (the rows and the map stay float32).
    Faster where the hardware computes bf16 (CUDA, CPUs with AMX or AVX512-BF16) and worse rows: bf16 keeps 8
    bits of mantissa, and the new rows start as near-parallel averages whose small differences are what the
    map must sharpen. SmolLM2, the recipe's Korean expansion, 150 steps on a two-core Xeon with AVX512-BF16:
    875 s under bf16 against 1,159 s in float32, and 1.22x / 1.18x the base model's bits per character (out
    of / in domain, English +0.06%) against 1.17x / 1.11x (English +0.00%)."""

    @model_validator(mode="after")
    def _map_phase_has_a_loss(self) -> SubwordFitOptions:
        if self.fit_steps and self.text_weight == 0 and self.copy_weight == 0:
            raise ValueError("fit_steps > 0 needs text_weight or copy_weight above 0; the map would learn nothing")
        return self

    progress: bool = True
    """Show progress: a bar on a terminal; in a log or a pipe a plain line every 30 s (step, next-token loss,
    ETA) and each phase's first and last losses, since a fit on CPUs takes minutes to half an hour."""


class SubwordCopyOptions(SubwordFitOptions):
    """`subword-copy`: the map phase on the copy task alone, anchored, in the directions the output layer
    hardly reads. Its defaults are what measured best on SmolLM2 (the plugin's README has the table)."""

    initializer_name: ClassVar[str] = "subword-copy"

    fit_steps: int = Field(default=60, ge=0)
    """Copy-only Adam steps. SmolLM2, Korean, 300 directions spared (a one-off script): 1.208x the base out of
    domain after 60 steps, 1.194x after 120, within the 1.2% two seeds differ by."""
    text_weight: float = Field(default=0.0, ge=0)
    """No training text: what the corpus teaches the rows does not travel to text of other kinds."""
    anchor_weight: float = Field(default=10.0, ge=0)
    """See `subword-fit`; 10 measured best (1 and 30 worse)."""
    spared_share: float = Field(default=0.98, ge=0, lt=1)
    """98%: 261-269 of SmolLM2's 576 directions (Korean, Chinese). A one-off script found Korean best with 200
    spared (1.196x; 300: 1.208x, 400: 1.218x) and Chinese with 300-400 (1.296-1.297x; 200: 1.303x); through the
    plugin 0.97 (200 spared) and 0.98 differ by less than two seeds do."""
    copy_source: Literal["texts", "prior_texts"] = "prior_texts"
    """The general words, not the corpus's."""
    keep_tokens: int = Field(default=16384, ge=1)
    """A quarter of `subword-fit`'s: confined to the weak directions the change takes little mass from
    English, and the English states take a minute instead of four. Without the term (`keep_weight` 0)
    English rose 0.17% after a Chinese fit."""
