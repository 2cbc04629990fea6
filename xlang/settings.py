"""One source of truth for configuration: CLI flags > `XLANG_*` env vars > `xlang.toml` > defaults.

Run-wide choices (language, base model, recipe, companions, corpus kind) are top-level settings; stage
knobs live under `stages.<stage>` (TOML `[stages.expand]`, env `XLANG_STAGES__EXPAND__BUDGET`, or a flag
the recipe declares, such as `--budget`); the recipe's own pydantic config validates them, so an unknown
knob is an error there. Stage defaults live only in those configs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from xlang.errors import XlangError

DEFAULT_CONFIG_FILE = "xlang.toml"
PROGRESS_EVERY_VARIABLE = "XLANG_PROGRESS_EVERY_S"
"""The `progress_every_s` setting as the training loop reads it (stage code takes no settings object)."""
TRUST_REMOTE_CODE_VARIABLE = "XLANG_TRUST_REMOTE_CODE"
"""The `trust_remote_code` setting as the model loaders read it (`xlang.assets.loading.trust_remote_code`)."""


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/xlang` (usually `~/.cache/xlang`): a folder xlang owns, HF_HOME included.

    The same for `make`, the `xlang` command and Python, from any working folder, so an asset is fetched
    and converted once; `XLANG_CACHE_DIR` (or `cache_dir` in xlang.toml) moves it for all of them."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xlang"


DistributedMode = Literal["ddp", "fsdp", "deepspeed"]
"""How the launched processes of a training stage share it (the setting `distributed`, `--distributed`)."""
DISTRIBUTED_MODES: tuple[str, ...] = get_args(DistributedMode)
DEEPSPEED_MISSING = (
    "distributed=deepspeed needs the deepspeed package, but deepspeed is not installed; "
    "`pip install --no-build-isolation deepspeed` (docs/scale.md), or use fsdp"
)


def deepspeed_installed() -> bool:
    """Looked up, not imported: importing DeepSpeed costs seconds and probes the machine's accelerators."""
    return importlib.util.find_spec("deepspeed") is not None


class XlangSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XLANG_", env_nested_delimiter="__", extra="forbid")

    cache_dir: Path = Field(default_factory=default_cache_dir)
    """Downloads, converted models, built corpora."""
    hf_home: Path | None = None
    """Hugging Face cache; defaults to `<cache_dir>/hf` so nothing lands in a shared folder by surprise."""
    runs_dir: Path = Path("runs")
    """Where a run folder goes when `out` is not set: `<runs_dir>/<recipe>-<language>`."""
    out: Path | None = None
    """The run folder (`--out`)."""
    language: str | None = None
    """The target language code (`--lang`); required by `xlang extend`."""
    base_model: str = "smollm2-135m"
    """An embedded model name, a local Hugging Face folder or a hub id (`--base`)."""
    recipe: str = "x-llava"
    companions: tuple[str, ...] | None = None
    """Languages trained and measured next to the target (`--companions en`); unset: the language's own
    `companions`; empty: none."""
    corpus_kind: Literal["offline", "hub"] = "offline"
    """Which of a language's corpus sources a run reads: those that work offline, or the hub-scale ones."""
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    distributed: DistributedMode = "ddp"
    """How the processes of an `xlang extend` launched with torchrun or accelerate launch share a training
    stage (`--distributed`): `ddp`, each holds the whole model; `fsdp`, the model is sharded across them;
    `deepspeed`, ZeRO stage 2 (gradients and optimizer state sharded), or stage 3 with
    `ACCELERATE_DEEPSPEED_ZERO_STAGE=3` (the parameters too); needs the deepspeed package and grad_accum 1.
    The global batch is micro_batch x grad_accum x processes. One process: not used."""

    @field_validator("distributed")
    @classmethod
    def _deepspeed_installed(cls, value: str) -> str:
        """Said when the settings load, not after expansion and initialization have run."""
        if value == "deepspeed" and not deepspeed_installed():
            raise ValueError(DEEPSPEED_MISSING)
        return value

    trust_remote_code: bool = False
    """Let a model folder run the Python code it ships (`auto_map`) when it is loaded. Off: such a folder is
    refused, as `transformers` does by default; turn it on only for folders whose code you trust."""
    progress_every_s: float = Field(default=30.0, ge=0)
    """Seconds between the plain progress lines a training loop prints when output is not a terminal (a log
    file, a pipe); a line also follows the first and the last step; 0: a line after every step."""

    teacher: str = "openai"
    """The teacher `xlang data generate` asks (a `register_teachers` name: `openai` for any OpenAI-compatible
    endpoint, `local` for a model folder run in process)."""
    teacher_url: str | None = None
    """The `openai` teacher's base URL, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`."""
    teacher_model: str | None = None
    """The model the teacher is asked for: a served model's name, or a folder for the `local` teacher."""
    teacher_api_key: SecretStr | None = None
    """The endpoint's key (`XLANG_TEACHER_API_KEY`; `OPENAI_API_KEY` when unset). Never logged or recorded."""
    teacher_options: dict[str, Any] = Field(default_factory=dict)
    """The chosen teacher's own options (its `Options` class validates them)."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Knobs of `xlang data generate` (`[data]` in TOML, `XLANG_DATA__CONCURRENCY`, or its flags)."""

    config_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.config_file))
        return tuple(sources)

    @property
    def hf_cache(self) -> Path:
        return self.hf_home or self.cache_dir / "hf"

    def teacher_key(self) -> SecretStr | None:
        """The teacher's key: the setting, else `OPENAI_API_KEY`, the variable OpenAI clients read."""
        if self.teacher_api_key is not None:
            return self.teacher_api_key
        fallback = os.environ.get("OPENAI_API_KEY")
        return SecretStr(fallback) if fallback else None

    def stage(self, name: str) -> dict[str, Any]:
        return dict(self.stages.get(name, {}))

    def apply_environment(self) -> None:
        """The one place xlang sets process environment: Hugging Face libraries use xlang's cache unless the
        user chose one, and their per-file progress bars (loading weights, generating splits) stay off
        because xlang draws its own progress; setting any of these variables first keeps the user's value.

        The libraries read these variables once, when they are imported: a Python session that imported
        one of them before calling `xlang.runner.extend` gets its bars switched off here too."""
        os.environ.setdefault("HF_HOME", str(self.hf_cache))
        os.environ[PROGRESS_EVERY_VARIABLE] = str(self.progress_every_s)  # the setting already read the variable
        os.environ[TRUST_REMOTE_CODE_VARIABLE] = "1" if self.trust_remote_code else "0"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        chosen = {name: name in os.environ for name in _PROGRESS_BAR_VARIABLES}
        for variable in _PROGRESS_BAR_VARIABLES:
            os.environ.setdefault(variable, "1")
        if not chosen["HF_HUB_DISABLE_PROGRESS_BARS"]:
            if "huggingface_hub" in sys.modules:
                sys.modules["huggingface_hub"].utils.disable_progress_bars()
            if "transformers" in sys.modules:
                sys.modules["transformers"].utils.logging.disable_progress_bar()
        if not chosen["HF_DATASETS_DISABLE_PROGRESS_BARS"] and "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()


_PROGRESS_BAR_VARIABLES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def setting_origin(name: str, config_file: Path | str | None = None) -> str:
    """Where the value of top-level setting `name` comes from (without flags): its `XLANG_*` variable, the
    TOML file that sets it, or the default. `xlang assets where` says it, so a user knows what to change."""
    variable = f"XLANG_{name.upper()}"
    if variable in os.environ:
        return f"environment variable {variable}"
    path = config_path(config_file)
    if path is not None:
        try:
            if name in tomllib.loads(path.read_text(encoding="utf-8")):
                return f"{name} in {path}"
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            pass
    return "default"


def config_path(config_file: Path | str | None = None) -> Path | None:
    """The TOML file settings are read from: `config_file`, else `$XLANG_CONFIG`, else `./xlang.toml` when it
    exists; an explicitly named file that does not exist is an error."""
    path = Path(config_file) if config_file else Path(os.environ.get("XLANG_CONFIG", DEFAULT_CONFIG_FILE))
    explicit = config_file is not None or "XLANG_CONFIG" in os.environ
    if not path.exists():
        if explicit:
            raise XlangError(f"config file {path} does not exist; pass an existing TOML file or drop --config")
        return None
    return path


def merge_nested(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, nested mappings merged key by key rather than replaced."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> XlangSettings:
    """Settings with the layering above. `config_file` defaults to `$XLANG_CONFIG` or `./xlang.toml` if present.

    Stage overrides passed here are merged into (not substituted for) the stages from env and TOML.
    """
    path = config_path(config_file)
    if path is not None:
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise XlangError(f"config file {path} is not valid TOML ({error}); fix the file or remove it") from error
        except OSError as error:
            raise XlangError(f"config file {path} cannot be read ({error.strerror}); check its permissions") from error

    stage_overrides = overrides.pop("stages", {}) or {}
    overrides = {key: value for key, value in overrides.items() if value is not None}

    class _Configured(XlangSettings):
        config_file = path

    try:
        settings = _Configured(**overrides)
        if stage_overrides:
            settings = _Configured(**overrides, stages=merge_nested(settings.stages, stage_overrides))
    except ValidationError as error:
        where = f"config file {path}, " if path else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise XlangError(f"invalid settings ({where}XLANG_* environment or flags): {problems}") from error
    return XlangSettings.model_construct(**settings.model_dump())
