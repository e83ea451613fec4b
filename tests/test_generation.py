"""Batched generation: the same answers as one case at a time, in input order, seeded sampling, no special tokens,
and user-facing errors and format failures instead of exceptions."""

from __future__ import annotations

import pytest
import torch

from fairmed_core.data import read_manifest
from fairmed_core.errors import FairMedInputError
from fairmed_core.models.generation import GenerationOptions, generate_answers
from fairmed_core.models.loading import load_model
from fairmed_core.models.prompting import encode_prompts


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    torch.set_num_threads(1)
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def mixed_cases(default_manifest):
    """Twelve test cases whose prompts differ in length, so batches need left padding: three of each source
    (each source asks its own question) and one doubled question per source, interleaved."""
    dataset = read_manifest(default_manifest)
    cases = dataset.cases[dataset.cases["split"] == "test"]
    picked = cases.groupby("dataset").head(4).sort_values(["dataset", "case_id"])
    questions, images = [], []
    for position, (case_id, question) in enumerate(zip(picked["case_id"], picked["problem"])):
        questions.append(f"{question} {question.replace('<image>', '').strip()}" if position % 4 == 3 else question)
        images.append([dataset.load_image(case_id)])
    order = [index for start in range(4) for index in range(start, len(questions), 4)]  # interleave sources
    return [questions[i] for i in order], [images[i] for i in order]


@pytest.fixture
def raw_outputs(loaded, monkeypatch):
    """Records (prompt length, output ids) of every model.generate call."""
    calls = []
    original = loaded.model.generate

    def recording_generate(**kwargs):
        output = original(**kwargs)
        calls.append((kwargs["input_ids"].shape[1], output))
        return output

    monkeypatch.setattr(loaded.model, "generate", recording_generate)
    return calls


def test_prompts_of_the_mixed_cases_really_differ_in_length(loaded, mixed_cases):
    questions, images = mixed_cases
    batch = encode_prompts(loaded.processor, questions, images)
    lengths = batch["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) >= 5 and int(lengths.max() - lengths.min()) > 20


def test_batched_greedy_answers_equal_one_case_at_a_time(loaded, mixed_cases):
    questions, images = mixed_cases
    alone = generate_answers(loaded, questions, images, GenerationOptions(batch_size=1, max_new_tokens=48))
    batched = generate_answers(loaded, questions, images, GenerationOptions(batch_size=8, max_new_tokens=48))
    assert [g.completion for g in batched] == [g.completion for g in alone]
    assert [g.new_tokens for g in batched] == [g.new_tokens for g in alone]
    assert all(g.new_tokens > 0 for g in alone)


def test_left_padding_does_not_move_a_prompt_s_positions(loaded, mixed_cases):
    # generate derives position ids from the attention mask (cumsum - 1), so a left-padded prompt gets the same
    # positions, and next-token scores, as alone; what differs is float rounding only.
    questions, images = mixed_cases
    options = {"max_new_tokens": 3, "do_sample": False, "output_logits": True, "return_dict_in_generate": True,
               "pad_token_id": loaded.processor.tokenizer.pad_token_id}
    with torch.inference_mode():
        batch = encode_prompts(loaded.processor, questions, images)
        together = loaded.model.generate(**batch, **options)
        padded_rows = [row for row in range(len(questions)) if not batch["attention_mask"][row].all()]
        assert padded_rows
        for row in padded_rows:
            alone = loaded.model.generate(**encode_prompts(loaded.processor, [questions[row]], [images[row]]),
                                          **options)
            for step in range(3):
                assert torch.allclose(together.logits[step][row], alone.logits[step][0], atol=1e-4)


def test_results_keep_the_input_order(loaded, mixed_cases):
    questions, images = mixed_cases
    options = GenerationOptions(batch_size=5, max_new_tokens=32)
    forward = generate_answers(loaded, questions, images, options)
    backward = generate_answers(loaded, questions[::-1], images[::-1], options)
    assert [g.completion for g in backward] == [g.completion for g in forward][::-1]


def test_progress_is_reported_after_every_batch(loaded, mixed_cases):
    questions, images = mixed_cases
    calls = []
    generate_answers(loaded, questions, images, GenerationOptions(batch_size=5, max_new_tokens=4),
                     progress=lambda done, total: calls.append((done, total)))
    assert calls == [(5, 12), (10, 12), (12, 12)]


def test_sampling_is_reproducible_with_the_same_seed(loaded, mixed_cases):
    questions, images = mixed_cases

    def sample(seed):
        options = GenerationOptions(do_sample=True, temperature=1.5, seed=seed, batch_size=8, max_new_tokens=24)
        return [g.completion for g in generate_answers(loaded, questions, images, options)]

    first = sample(7)
    assert sample(7) == first
    assert sample(8) != first


def test_special_tokens_are_never_generated(loaded, mixed_cases, raw_outputs):
    # A hot sampling temperature makes every token likely; none of the tokenizer's special tokens (image, turn,
    # padding markers) may be produced before the stop token, only the stop tokens themselves.
    tokenizer = loaded.processor.tokenizer
    special = {token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special}
    stops = set(tokenizer.convert_tokens_to_ids(["<eos>", "<end_of_turn>"]))
    assert {tokenizer.image_token_id, tokenizer.convert_tokens_to_ids("<start_of_turn>")} <= special
    questions, images = mixed_cases
    options = GenerationOptions(do_sample=True, temperature=3.0, seed=1, batch_size=12, max_new_tokens=64)
    generations = generate_answers(loaded, questions * 2, images * 2, options)
    produced = []
    for prompt_length, output in raw_outputs:
        for row in output[:, prompt_length:].tolist():
            produced.extend(row[:next((n for n, t in enumerate(row) if t in stops), len(row))])
    assert len(produced) > 500
    assert not special & set(produced)
    names = ("<start_of_turn>", "<start_of_image>", "<image_soft_token>", "<pad>", "<bos>", "<unk>")
    assert not any(name in g.completion for g in generations for name in names)


def test_a_question_too_long_for_the_context_is_an_input_error_naming_its_row(loaded, mixed_cases):
    questions, images = mixed_cases
    long_question = "<image> " + " opacity" * 2000 + " ?"
    questions = [*questions[:5], long_question, *questions[5:]]
    images = [*images[:5], images[0], *images[5:]]
    with pytest.raises(FairMedInputError) as caught:
        generate_answers(loaded, questions, images, GenerationOptions(batch_size=4, max_new_tokens=16))
    error = caught.value
    assert error.row == 5 and error.column == "problem"
    assert f"at most {loaded.context_length - 16}" in error.message and "shorten the question" in str(error)


def test_truncated_and_off_choice_completions_are_format_failures(loaded, mixed_cases):
    questions, images = mixed_cases
    truncated = generate_answers(loaded, questions, images, GenerationOptions(max_new_tokens=2),
                                 choices=["yes", "no"])
    assert all(not g.format_ok and g.answer is None and "no \\boxed{} answer" in g.failure for g in truncated)
    assert all(g.new_tokens == 2 for g in truncated)
    full = generate_answers(loaded, questions, images, GenerationOptions(max_new_tokens=64), choices=["yes", "no"])
    boxed = [g for g in full if g.answer is not None]
    assert boxed, "the warm-started model answers in the boxed format"
    # The same completions against labels the model never says: parsed, but counted as failures.
    off_choice = generate_answers(loaded, questions, images, GenerationOptions(max_new_tokens=64),
                                  choices=["benign", "malignant"])
    for before, after in zip(full, off_choice):
        assert after.completion == before.completion
        if before.answer is not None:
            assert not after.format_ok and "not one of" in after.failure


def test_mismatched_questions_and_images_are_refused(loaded, mixed_cases):
    questions, images = mixed_cases
    with pytest.raises(ValueError, match="12 questions but 11 image lists"):
        generate_answers(loaded, questions, images[:-1])
