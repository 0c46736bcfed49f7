"""The tiny model loads offline through the Auto classes and its template fits TRL."""

from django.core.management import call_command

from training.tiny_model import EOS_TOKEN, HEAD_DIM, build_tiny_model

CONVERSATION = [
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
]


def test_tiny_model_loads_with_auto_classes(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    assert model.config.model_type == "llama"
    assert model.config.hidden_size == 128
    assert model.config.num_hidden_layers == 2
    assert model.config.head_dim == HEAD_DIM >= 32
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = "The capital of France is Paris."
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_chat_template_marks_assistant_tokens_and_prompt_is_prefix(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tokenizer.apply_chat_template(
        CONVERSATION[:1], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert full.startswith(prompt)
    assert full[len(prompt) :].startswith("Two plus two is four." + EOS_TOKEN)

    encoded = tokenizer.apply_chat_template(
        CONVERSATION, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [
        token
        for token, flag in zip(
            encoded["input_ids"], encoded["assistant_masks"], strict=True
        )
        if flag
    ]
    assert tokenizer.decode(masked) == "Two plus two is four." + EOS_TOKEN


def test_same_seed_gives_same_weights_and_other_seed_differs(tmp_path):
    import torch
    from safetensors.torch import load_file

    first = build_tiny_model(tmp_path / "a", seed=3)
    call_command("make_tiny_model", str(tmp_path / "b"), "--seed", "3")
    other = build_tiny_model(tmp_path / "c", seed=4)

    weights_a = load_file(first / "model.safetensors")
    weights_b = load_file(tmp_path / "b" / "model.safetensors")
    weights_c = load_file(other / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)
    assert (first / "tokenizer.json").read_text() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_text()


def test_tiny_model_generates(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    max_new_tokens = 4
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    inputs = tokenizer.apply_chat_template(
        CONVERSATION[:1],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        do_sample=False,
    )
    assert output.shape[1] == inputs["input_ids"].shape[1] + max_new_tokens
