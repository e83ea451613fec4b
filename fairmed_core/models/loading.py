"""Load a Gemma 3 image-text model (MedGemma-4B, a FairMedGemma checkpoint, the tiny model) from a local folder.

One code path for every size: ``AutoModelForImageTextToText`` + ``AutoProcessor`` from a directory, safetensors
only, never the hub. bf16 with ``device_map="auto"`` on CUDA, fp32 on CPU, an optional LoRA adapter (peft).
Everything that can be checked before loading is checked first, so a wrong folder gets a message that names
what was found and what was expected instead of a stack trace from deep inside transformers.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from fairmed_core.errors import FairMedInputError
from fairmed_core.models.chat_template import render_chat_template
from fairmed_core.models.prompting import chat_messages

__all__ = ["LoadedModel", "check_model_directory", "estimate_parameter_count", "load_model", "ModelDirectory"]

GEMMA3_MODEL_TYPE = "gemma3"
GEMMA3_ARCHITECTURE = "Gemma3ForConditionalGeneration"
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")
_SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                            "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
# Headroom over the weights for activations, the KV cache and the allocator.
_MEMORY_HEADROOM = 1.2


@dataclass(frozen=True)
class ModelDirectory:
    """What a model folder holds, as checked before loading."""

    path: Path
    config: dict
    weight_files: tuple[Path, ...]
    parameter_count: int


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for generation, with its processor and where it came from."""

    model: torch.nn.Module
    processor: object
    directory: Path
    device: torch.device
    dtype: torch.dtype
    adapter: Path | None
    parameter_count: int

    @property
    def name(self) -> str:
        base = self.directory.name
        return f"{base}+{self.adapter.name}" if self.adapter is not None else base

    @property
    def context_length(self) -> int:
        text_config = getattr(self.model.config, "text_config", self.model.config)
        return int(getattr(text_config, "max_position_embeddings", 8192))


def _fail(message: str, directory: Path, hint: str | None = None) -> FairMedInputError:
    return FairMedInputError(message, source=str(directory), hint=hint)


def _safetensors_parameter_count(path: Path) -> int:
    """Parameters in one safetensors file, read from its JSON header only (no tensor is loaded)."""
    corrupt = f"{path.name} has a corrupt safetensors header"
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise _fail(f"{path.name} is truncated (no safetensors header)", path.parent)
        (header_size,) = struct.unpack("<Q", raw)
        if header_size > 100_000_000:
            raise _fail(f"{path.name} is not a safetensors file (header size {header_size})", path.parent)
        try:
            header = json.loads(handle.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _fail(f"{corrupt}: {error}", path.parent) from error
        except (RecursionError, ValueError):  # nesting too deep, an integer too long to convert
            raise _fail(f"{corrupt}: its JSON cannot be read", path.parent) from None
    if not isinstance(header, dict):
        raise _fail(f"{corrupt}: expected a JSON object, got {type(header).__name__}", path.parent)
    total, data_bytes = 0, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape", []) if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets", [0, 0]) if isinstance(entry, dict) else None
        if (not isinstance(shape, list) or not all(_is_count(size) for size in shape)
                or not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)):
            raise _fail(f"{corrupt}: tensor {name[:80]!r} has no valid shape and data_offsets", path.parent)
        count = 1
        for size in shape:
            count *= size
        total += count
        data_bytes = max(data_bytes, offsets[1])
    expected_size = 8 + header_size + data_bytes
    actual_size = path.stat().st_size
    if actual_size < expected_size:
        # An interrupted download or copy: safetensors would fail deep inside from_pretrained.
        raise _fail(f"{path.name} is truncated: its header describes {expected_size:,} bytes, the file holds "
                    f"{actual_size:,}", path.parent, hint="copy or download the file again")
    return total


def _one_line(error: BaseException, limit: int = 300) -> str:
    """A library's exception text as one line, cut to ``limit`` characters (the CLI prints one line)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def estimate_parameter_count(weight_files: tuple[Path, ...]) -> int:
    """Total parameters over the safetensors files."""
    return sum(_safetensors_parameter_count(path) for path in weight_files)


def _weight_files(directory: Path) -> tuple[Path, ...]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        invalid = "model.safetensors.index.json is not a valid shard index"
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
            raise _fail(f"{invalid}: {error}", directory) from error
        except (RecursionError, ValueError):
            raise _fail(f"{invalid}: its JSON cannot be read", directory) from None
        if not shards or not all(isinstance(name, str) and name for name in shards):
            raise _fail(f"{invalid}: its weight_map must name at least one shard file", directory)
        files = tuple(_shard_inside(directory, name) for name in shards)
        missing = [name for name, file in zip(shards, files) if not file.is_file()]
        if missing:
            raise _fail(f"the shard index lists {len(shards)} weight files; missing: {', '.join(missing)}",
                        directory, hint="copy the whole checkpoint folder")
        return files
    single = directory / "model.safetensors"
    if single.is_file():
        return (single,)
    pickled = [name for name in _PICKLED_WEIGHTS if (directory / name).exists()]
    found = sorted(p.name for p in directory.iterdir())[:12]
    if pickled:
        raise _fail(
            f"weights are pickled ({', '.join(pickled)}); FairMed loads safetensors only",
            directory, hint="convert the checkpoint with save_pretrained(..., safe_serialization=True)",
        )
    raise _fail(f"no model.safetensors or model.safetensors.index.json; found {found}", directory)


def _shard_inside(directory: Path, name: str) -> Path:
    """The path of a shard named by the index, which must be a relative name inside the model folder.

    Absolute names, ``..`` and names whose resolved form leaves the folder through a link the index itself
    spells (``sub/../..``) are refused. A shard file that is itself a symlink is followed: the Hugging Face hub
    cache stores every file of a snapshot folder as a link to its blob, and those links were made by whoever
    made the folder, not by the index.
    """
    relative = Path(name)
    plain = (not relative.is_absolute() and ".." not in relative.parts and "\x00" not in name
             and relative.parts not in ((), (".",)))
    if plain:
        try:
            parent = (directory / relative).parent.resolve()
            plain = parent.is_relative_to(directory.resolve())
        except (OSError, RuntimeError, ValueError):  # a name over 255 bytes, a symlink loop
            plain = False
    if not plain:
        shown = name if len(name) <= 120 else name[:117] + "..."
        raise _fail(f"the shard index names {shown!r}, which is not a file inside the model folder", directory,
                    hint="shard names in model.safetensors.index.json are file names inside the model folder")
    return directory / relative


def check_model_directory(directory: str | Path) -> ModelDirectory:
    """Check that ``directory`` holds a Gemma 3 image-text checkpoint with safetensors weights and a processor."""
    path = Path(directory).expanduser()
    if not path.exists():
        raise _fail("model directory does not exist", path, hint="give the folder that holds config.json")
    if not path.is_dir():
        raise _fail("expected a model directory, found a file", path)
    config_path = path / "config.json"
    if not config_path.is_file():
        found = sorted(p.name for p in path.iterdir())[:12]
        raise _fail(f"no config.json; found {found or 'an empty folder'}", path,
                    hint="a Hugging Face checkpoint folder (config.json, processor, safetensors weights)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(f"config.json is not valid JSON: {error}", path) from error
    except (RecursionError, ValueError):  # nesting too deep, an integer too long to convert
        raise _fail("config.json is not valid JSON: it cannot be read", path) from None
    if not isinstance(config, dict):
        raise _fail("config.json does not hold an object", path)
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type != GEMMA3_MODEL_TYPE:
        raise _fail(
            f"model_type is {model_type!r} (architectures {architectures}); expected {GEMMA3_MODEL_TYPE!r} "
            f"({GEMMA3_ARCHITECTURE}, the MedGemma/FairMedGemma image-text model)", path,
        )
    missing = []
    if not any((path / name).is_file() for name in _PROCESSOR_FILES):
        missing.append(" or ".join(_PROCESSOR_FILES))
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        missing.append(" or ".join(_TOKENIZER_FILES))
    if missing:
        found = sorted(p.name for p in path.iterdir())[:12]
        raise _fail(f"processor files missing: {'; '.join(missing)}; found {found}", path,
                    hint="save the processor beside the model (processor.save_pretrained(folder))")
    weight_files = _weight_files(path)
    return ModelDirectory(path=path, config=config, weight_files=weight_files,
                          parameter_count=estimate_parameter_count(weight_files))


def _available_memory_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _check_memory(checked: ModelDirectory, device: torch.device, dtype: torch.dtype) -> None:
    needed = checked.parameter_count * torch.finfo(dtype).bits // 8 * _MEMORY_HEADROOM
    available = _available_memory_bytes(device)
    if available is not None and needed > available:
        gib = 1024 ** 3
        raise _fail(
            f"{checked.parameter_count / 1e9:.2f}B parameters need about {needed / gib:.1f} GiB in {dtype} on "
            f"{device.type}; {available / gib:.1f} GiB is available", checked.path,
            hint="use a GPU machine, close other models, or choose a smaller checkpoint",
        )


def _resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FairMedInputError(f"device {device!r} requested but CUDA is not available", hint="use device='cpu'")
    return resolved


_ADAPTER_HINT = "a folder written by peft's save_pretrained: adapter_config.json and adapter_model.safetensors"


def _check_adapter(adapter: Path) -> None:
    if not adapter.exists():
        raise _fail("adapter directory does not exist", adapter, hint=_ADAPTER_HINT)
    if not adapter.is_dir():
        raise _fail("expected a LoRA adapter directory, found a file", adapter, hint=_ADAPTER_HINT)
    found = sorted(p.name for p in adapter.iterdir())[:12]
    if not (adapter / "adapter_config.json").is_file():
        raise _fail(f"not a LoRA adapter: no adapter_config.json; found {found or 'an empty folder'}", adapter,
                    hint=_ADAPTER_HINT)
    if not (adapter / "adapter_model.safetensors").is_file():
        if (adapter / "adapter_model.bin").is_file():
            raise _fail("adapter weights are pickled (adapter_model.bin); FairMed loads safetensors only", adapter,
                        hint="re-save the adapter with save_pretrained(folder, safe_serialization=True)")
        raise _fail(f"no adapter_model.safetensors; found {found}", adapter, hint=_ADAPTER_HINT)


def load_model(directory: str | Path, *, adapter: str | Path | None = None, device: str | None = None,
               dtype: torch.dtype | None = None) -> LoadedModel:
    """Load model and processor from ``directory`` for generation (eval mode, left padding).

    ``device`` None/"auto" picks CUDA when present (``device_map="auto"``); "cuda:N" puts the whole model on GPU N.
    ``dtype`` defaults to bf16 on CUDA and fp32 on CPU."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    checked = check_model_directory(directory)
    adapter_path = None if adapter is None else Path(adapter).expanduser()
    if adapter_path is not None:
        _check_adapter(adapter_path)
    target = _resolve_device(device)
    dtype = dtype or (torch.bfloat16 if target.type == "cuda" else torch.float32)
    _check_memory(checked, target, dtype)
    try:
        processor = AutoProcessor.from_pretrained(checked.path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as error:
        raise _fail(f"cannot load the processor: {_one_line(error)}", checked.path) from error
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(tokenizer, "image_token_id", None) is None:
        raise _fail("the processor has no tokenizer with a Gemma 3 image token", checked.path)
    tokenizer.padding_side = "left"
    # The folder's chat template is code from whoever sent it: refused before the weights load if it is too long,
    # fails or does not finish on a one-image question (TRL's training renders it without our step limit).
    render_chat_template(processor, [chat_messages("Is there a finding?", 1)])
    kwargs = {"dtype": dtype, "local_files_only": True, "use_safetensors": True}
    if target.type == "cuda":
        # "cuda": spread over the visible GPUs as they fit; "cuda:N": all of it on GPU N (one process per GPU
        # under a multi-process launch, where each rank holds its own copy).
        kwargs["device_map"] = "auto" if target.index is None else {"": target.index}
    try:
        model = AutoModelForImageTextToText.from_pretrained(checked.path, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        raise _fail(f"cannot load the model weights: {_one_line(error)}", checked.path) from error
    if target.type != "cuda":
        model = model.to(target)
    if adapter_path is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter_path, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as error:
            # Typically an adapter trained on another base model: a size mismatch per adapted layer.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            detail = next((line for line in lines if "mismatch" in line), lines[0] if lines else repr(error))
            try:
                made_for = json.loads((adapter_path / "adapter_config.json").read_text(encoding="utf-8")).get(
                    "base_model_name_or_path")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                made_for = None
            raise _fail(f"the adapter does not fit the model in {checked.path}: {detail}", adapter_path,
                        hint=f"it was made for {made_for}" if made_for else None) from error
    model.eval()
    first = next(model.parameters())
    return LoadedModel(model=model, processor=processor, directory=checked.path, device=first.device,
                       dtype=first.dtype, adapter=adapter_path, parameter_count=checked.parameter_count)


def default_device_name() -> str:
    """"cuda" when a GPU is visible, else "cpu" (what ``load_model`` picks by default)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the Rust tokenizer in pages
