"""Model loading: every wrong folder is refused with a message naming what was found and what was expected;
LoRA adapters load through the same call; a folder laid out like MedGemma-4B's loads and generates."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from transformers import Gemma3ForConditionalGeneration

from fairmed_core.data import read_manifest
from fairmed_core.errors import FairMedInputError
from fairmed_core.models import loading
from fairmed_core.models.architectures import (
    MEDGEMMA_4B_CONFIG,
    medgemma_4b_config,
    scaled_down_medgemma_config,
    write_random_checkpoint,
)
from fairmed_core.models.generation import GenerationOptions, generate_answers
from fairmed_core.models.loading import check_model_directory, load_model
from fairmed_core.models.prompting import encode_prompts
from fairmed_core.training.sft import tiny_corpus

GIB = 1024 ** 3


@pytest.fixture(scope="module")
def some_cases(default_manifest):
    """Two test cases of each source: questions and their images."""
    dataset = read_manifest(default_manifest)
    cases = dataset.cases[dataset.cases["split"] == "test"].groupby("dataset").head(2)
    return list(cases["problem"]), [[dataset.load_image(case_id)] for case_id in cases["case_id"]]


@pytest.fixture(scope="module")
def medgemma_like_dir(tmp_path_factory):
    """A random-weight, test-sized checkpoint in MedGemma-4B's folder layout (two safetensors shards)."""
    return write_random_checkpoint(tmp_path_factory.mktemp("medgemma-like") / "model",
                                   scaled_down_medgemma_config(), tiny_corpus())


def _copy(source, tmp_path, name="model"):
    return shutil.copytree(source, tmp_path / name)


def _refusal(directory, **kwargs) -> str:
    with pytest.raises(FairMedInputError) as caught:
        load_model(directory, **kwargs)
    return str(caught.value)


# --- wrong folders ---------------------------------------------------------------------------------------------


def test_a_missing_directory_is_named_with_what_was_expected(tmp_path):
    message = _refusal(tmp_path / "nowhere")
    assert "nowhere" in message and "does not exist" in message and "config.json" in message


def test_a_file_is_not_a_model_directory(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 16)
    message = _refusal(weights)
    assert "found a file" in message and "expected a model directory" in message


def test_a_folder_without_config_lists_what_it_holds(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    (folder / "config.json").unlink()
    message = _refusal(folder)
    assert "no config.json" in message and "model.safetensors" in message and "tokenizer.json" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "an empty folder" in _refusal(empty)


def test_a_config_that_is_not_json_is_refused(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    (folder / "config.json").write_text("{not json", encoding="utf-8")
    assert "config.json is not valid JSON" in _refusal(folder)


def test_another_architecture_is_refused_naming_both_model_types(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    message = _refusal(folder)
    assert "'llama'" in message and "LlamaForCausalLM" in message
    assert "expected 'gemma3'" in message and "Gemma3ForConditionalGeneration" in message


@pytest.mark.parametrize(("removed", "missing"), [
    ("processor_config.json", "processor_config.json or preprocessor_config.json"),
    ("tokenizer.json", "tokenizer.json or tokenizer.model"),
])
def test_missing_processor_files_are_named_beside_what_was_found(tiny_model_dir, tmp_path, removed, missing):
    folder = _copy(tiny_model_dir, tmp_path)
    (folder / removed).unlink()
    message = _refusal(folder)
    assert f"processor files missing: {missing}" in message
    assert "found [" in message and "config.json" in message and removed not in message.split("found")[1]


def test_pickled_weights_are_refused_without_being_unpickled(tiny_model_dir, tmp_path, monkeypatch):
    folder = _copy(tiny_model_dir, tmp_path)
    state = Gemma3ForConditionalGeneration.from_pretrained(folder).state_dict()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a user-supplied pickle was opened")

    monkeypatch.setattr(torch, "load", no_unpickling)
    message = _refusal(folder)
    assert "pytorch_model.bin" in message and "pickled" in message and "safetensors only" in message
    assert "safe_serialization=True" in message


def test_a_folder_without_any_weights_lists_what_it_holds(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    (folder / "model.safetensors").unlink()
    message = _refusal(folder)
    assert "no model.safetensors or model.safetensors.index.json" in message and "config.json" in message


def test_a_shard_index_pointing_at_a_missing_shard_names_it(medgemma_like_dir, tmp_path):
    folder = _copy(medgemma_like_dir, tmp_path)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) == 2
    (folder / shards[1]).unlink()
    message = _refusal(folder)
    assert "lists 2 weight files" in message and f"missing: {shards[1]}" in message and shards[0] not in message


def test_a_corrupt_shard_index_is_refused(medgemma_like_dir, tmp_path):
    folder = _copy(medgemma_like_dir, tmp_path)
    (folder / "model.safetensors.index.json").write_text('{"metadata": {}}')
    assert "not a valid shard index" in _refusal(folder)


@pytest.mark.parametrize("escape", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors",
                                    "linked/shard.safetensors"])
def test_a_shard_index_cannot_name_a_file_outside_the_model_folder(medgemma_like_dir, tmp_path, escape):
    folder = _copy(medgemma_like_dir, tmp_path)
    outside = tmp_path / "outside.safetensors"
    shutil.copy(sorted(folder.glob("*-of-00002.safetensors"))[0], outside)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(outside, tmp_path / "elsewhere" / "shard.safetensors")
    (folder / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = escape
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    message = _refusal(folder)
    assert "not a file inside the model folder" in message and escape in message


def test_a_shard_that_is_a_symlink_inside_the_folder_is_followed(medgemma_like_dir, tmp_path):
    # The Hugging Face hub cache keeps every snapshot file as a link to its blob elsewhere.
    folder = _copy(medgemma_like_dir, tmp_path)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for shard in folder.glob("*-of-00002.safetensors"):
        shard.rename(blobs / shard.name)
        shard.symlink_to(blobs / shard.name)
    assert check_model_directory(folder).parameter_count > 0


@pytest.mark.parametrize("header", [b"[1, 2]", b'{"w": 5}', b'{"w": {"shape": ["a"], "data_offsets": [0, 4]}}',
                                    b'{"w": {"shape": [2], "data_offsets": [0]}}', b"[" * 5000 + b"]" * 5000,
                                    b'{"w": {"shape": [-3], "data_offsets": [0, 4]}}'])
def test_a_malformed_safetensors_header_is_a_clear_refusal(tiny_model_dir, tmp_path, header):
    folder = _copy(tiny_model_dir, tmp_path)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    message = _refusal(folder)
    assert "model.safetensors has a corrupt safetensors header" in message


def _sparse_safetensors(path, model) -> None:
    """A safetensors file of ``model``'s parameters (bf16) whose data is a hole: full size on paper, no disk."""
    header, offset = {}, 0
    for name, parameter in model.named_parameters():
        size = parameter.numel() * 2
        header[name] = {"dtype": "BF16", "shape": list(parameter.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)


def test_too_little_memory_for_medgemma_4b_is_refused_before_loading(medgemma_like_dir, tmp_path, monkeypatch):
    with torch.device("meta"):
        full_size = Gemma3ForConditionalGeneration(medgemma_4b_config())
    folder = tmp_path / "medgemma-4b"
    folder.mkdir()
    for name in ("preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(medgemma_like_dir / name, folder / name)
    (folder / "config.json").write_text(json.dumps(MEDGEMMA_4B_CONFIG))
    _sparse_safetensors(folder / "model.safetensors", full_size)
    checked = check_model_directory(folder)
    assert checked.parameter_count == sum(p.numel() for p in full_size.parameters())

    monkeypatch.setattr(loading, "_available_memory_bytes", lambda device: 8 * GIB)
    message = _refusal(folder, device="cpu")
    needed = 4_300_079_472 * 4 * 1.2 / GIB
    assert "4.30B parameters" in message and f"about {needed:.1f} GiB in torch.float32 on cpu" in message
    assert "8.0 GiB is available" in message and "GPU" in message
    # In bf16 the same weights need half as much: 16 GiB is enough.
    monkeypatch.setattr(loading, "_available_memory_bytes", lambda device: 16 * GIB)
    loading._check_memory(checked, torch.device("cpu"), torch.bfloat16)


def test_a_truncated_shard_is_refused_before_loading(medgemma_like_dir, tmp_path):
    folder = _copy(medgemma_like_dir, tmp_path)
    shard = sorted(folder.glob("*-of-00002.safetensors"))[1]
    size = shard.stat().st_size
    with shard.open("r+b") as handle:
        handle.truncate(size - 1000)
    message = _refusal(folder)
    assert f"{shard.name} is truncated" in message and f"{size:,} bytes" in message
    assert f"holds {size - 1000:,}" in message


def test_an_unknown_memory_size_does_not_block_loading(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(loading, "_available_memory_bytes", lambda device: None)
    assert load_model(tiny_model_dir).parameter_count > 0


# --- LoRA adapters ---------------------------------------------------------------------------------------------


def _save_adapter(base_dir, out, *, zero_b: bool = True, pickled: bool = False):
    from peft import LoraConfig, get_peft_model

    base = Gemma3ForConditionalGeneration.from_pretrained(base_dir)
    # init_lora_weights=False leaves B random (a "trained" adapter); the default starts B at zero.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=zero_b)
    get_peft_model(base, config).save_pretrained(out, safe_serialization=not pickled)
    return out


@pytest.fixture(scope="module")
def fresh_adapter(tiny_model_dir, tmp_path_factory):
    return _save_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "fresh-lora")


def test_a_fresh_lora_adapter_loads_and_changes_nothing(tiny_model_dir, fresh_adapter, some_cases):
    assert (fresh_adapter / "adapter_model.safetensors").is_file()
    base = load_model(tiny_model_dir)
    adapted = load_model(tiny_model_dir, adapter=fresh_adapter)
    assert adapted.adapter == fresh_adapter and adapted.name == f"{tiny_model_dir.name}+fresh-lora"
    lora_b = {name: p for name, p in adapted.model.named_parameters() if "lora_B" in name}
    assert lora_b and all(not p.any() for p in lora_b.values())
    assert any(".language_model." in name and "q_proj" in name for name in lora_b)
    questions, images = some_cases
    options = GenerationOptions(max_new_tokens=24, batch_size=8)
    before = generate_answers(base, questions, images, options)
    after = generate_answers(adapted, questions, images, options)
    assert [g.completion for g in after] == [g.completion for g in before]


def test_a_trained_adapter_changes_the_model_output(tiny_model_dir, some_cases, tmp_path):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "trained-lora", zero_b=False)
    base = load_model(tiny_model_dir)
    adapted = load_model(tiny_model_dir, adapter=adapter)
    questions, images = some_cases
    batch = encode_prompts(base.processor, questions[:2], images[:2])
    with torch.inference_mode():
        difference = (adapted.model(**batch).logits - base.model(**batch).logits).abs().max()
    assert difference > 1e-3


def test_a_missing_adapter_is_refused(tiny_model_dir, tmp_path):
    message = _refusal(tiny_model_dir, adapter=tmp_path / "no-such-adapter")
    assert "adapter directory does not exist" in message and "adapter_model.safetensors" in message
    (tmp_path / "a-file").write_text("x")
    assert "found a file" in _refusal(tiny_model_dir, adapter=tmp_path / "a-file")


def test_a_folder_that_is_not_an_adapter_is_refused(tiny_model_dir, fresh_adapter, tmp_path):
    # A model folder given as the adapter: it has weights but no adapter_config.json.
    message = _refusal(tiny_model_dir, adapter=tiny_model_dir)
    assert "no adapter_config.json" in message and "found [" in message and "config.json" in message
    config_only = _copy(fresh_adapter, tmp_path, "config-only")
    (config_only / "adapter_model.safetensors").unlink()
    message = _refusal(tiny_model_dir, adapter=config_only)
    assert "no adapter_model.safetensors" in message and "adapter_config.json" in message


def test_a_pickled_adapter_is_refused_without_being_unpickled(tiny_model_dir, tmp_path, monkeypatch):
    adapter = _save_adapter(tiny_model_dir, tmp_path / "pickled-lora", pickled=True)
    assert (adapter / "adapter_model.bin").is_file() and not (adapter / "adapter_model.safetensors").exists()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a user-supplied pickle was opened"))
    message = _refusal(tiny_model_dir, adapter=adapter)
    assert "adapter_model.bin" in message and "pickled" in message and "safetensors only" in message


def test_an_adapter_made_for_another_model_is_refused_naming_its_base(tiny_model_dir, medgemma_like_dir, tmp_path):
    adapter = _save_adapter(medgemma_like_dir, tmp_path / "other-base-lora")
    message = _refusal(tiny_model_dir, adapter=adapter)
    assert "does not fit the model" in message and "size mismatch" in message
    assert f"made for {medgemma_like_dir}" in message


# --- MedGemma-4B's architecture and folder layout --------------------------------------------------------------


def test_medgemma_4b_config_reproduces_the_published_architecture():
    config = medgemma_4b_config()
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.head_dim, text.intermediate_size) == (2560, 34, 8, 4, 256, 10240)
    assert (text.vocab_size, text.sliding_window, text.query_pre_attn_scalar) == (262_208, 1024, 256)
    assert text.rope_parameters["full_attention"] == {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}
    assert text.rope_parameters["sliding_attention"] == {"rope_type": "default", "rope_theta": 1e4}
    # 5 local : 1 global: layers 6, 12, ..., 30 are global.
    assert [i + 1 for i, kind in enumerate(text.layer_types) if kind == "full_attention"] == [6, 12, 18, 24, 30]
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers,
            vision.num_attention_heads, vision.intermediate_size, vision.vision_use_head) == (
            896, 14, 1152, 27, 16, 4304, False)
    assert (config.mm_tokens_per_image, config.boi_token_index, config.eoi_token_index,
            config.image_token_index, config.eos_token_id) == (256, 255_999, 256_000, 262_144, [1, 106])
    with torch.device("meta"):
        model = Gemma3ForConditionalGeneration(config)
    assert sum(p.numel() for p in model.parameters()) == 4_300_079_472  # "4B": 4.30B as published


def test_overrides_scale_medgemma_down_keeping_its_shape_rules():
    config = medgemma_4b_config(text_config={"num_hidden_layers": 12}, mm_tokens_per_image=64)
    assert config.text_config.hidden_size == 2560 and config.mm_tokens_per_image == 64
    assert config.text_config.layer_types.count("full_attention") == 2
    small = scaled_down_medgemma_config()
    assert small.text_config.layer_types == ["sliding_attention"] * 5 + ["full_attention"]
    assert small.text_config.rope_parameters == medgemma_4b_config().text_config.rope_parameters
    assert small.vision_config.patch_size == 14 and small.vision_config.vision_use_head is False


def test_a_medgemma_layout_folder_loads_and_generates_through_the_same_path(medgemma_like_dir, some_cases):
    names = {path.name for path in medgemma_like_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "preprocessor_config.json",
            "processor_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "model.safetensors" not in names and sum(name.endswith("-of-00002.safetensors") for name in names) == 2
    preprocessor = json.loads((medgemma_like_dir / "preprocessor_config.json").read_text())
    assert preprocessor["image_processor_type"] == "Gemma3ImageProcessor"
    assert preprocessor["processor_class"] == "Gemma3Processor" and preprocessor["size"]["height"] == 112

    loaded = load_model(medgemma_like_dir, device="cpu")
    assert type(loaded.model).__name__ == "Gemma3ForConditionalGeneration" and loaded.dtype == torch.float32
    # No torchvision here: AutoProcessor maps the "Gemma3ImageProcessor" type to its PIL implementation.
    assert type(loaded.processor.image_processor).__name__ == "Gemma3ImageProcessorPil"
    assert loaded.processor.image_processor.size == {"height": 112, "width": 112}
    assert loaded.model.config.text_config.layer_types[-1] == "full_attention"
    questions, images = some_cases
    generations = generate_answers(loaded, questions, images, GenerationOptions(max_new_tokens=5, batch_size=4))
    assert len(generations) == len(questions)
    assert all(1 <= g.new_tokens <= 5 and g.completion for g in generations)
