"""lab architectures: parameters matched within the stated tolerance, T5's split FLOP count agrees with
sizes.flops_per_token, translation pairs split without overlap, every architecture's translation format
puts each target token where its loss is taken, the token tasks feed each model what its docstring says,
the pre-training objectives see the mask rate and sentinels the preset names, the side-by-side speed
counts the tokens each objective learns from, and the context-free floor and the two-s.e. verdict."""
import numpy as np
import pytest

from minifm.data.tinyworld import FACT_KINDS, World, clean_corpus, sentences
from minifm.lab import architectures as arch
from minifm.models import T5Config
from minifm.models.sizes import flops_per_token, param_count
from minifm.data.batches import fill_sentinels
from minifm.train.pretrain import build_model, make_objective, pack, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(clean_corpus(size_bytes=30_000, seed=0, languages=arch.LANGUAGES),
                           arch.PRESETS["default"]["vocab_size"])


def test_default_preset_matches_parameters_within_the_tolerance(tokenizer):
    configs = arch.matched_configs(arch.PRESETS["default"], tokenizer)
    counts = {name: param_count(arch.model_config(config, tokenizer)) for name, config in configs.items()}
    for name in ("bert", "t5"):
        assert abs(counts[name] / counts["gpt"] - 1) <= arch.MATCH_TOLERANCE, (name, counts)
    t5 = configs["t5"]
    assert {name: config.pos for name, config in configs.items()} == arch.POSITIONS == dict.fromkeys(configs, "rope")
    assert t5.n_layer == arch.PRESETS["default"]["n_layer"] // 2 and (t5.n_embd // t5.n_head) % 2 == 0  # RoPE: pairs
    assert t5.n_head > 1  # among the widths within the tolerance, the one with the most heads
    learned = arch.matched_configs(dict(arch.PRESETS["default"], pos=dict(arch.POSITIONS, t5="learned")), tokenizer)
    assert learned["t5"].pos == "learned" and learned["t5"].n_embd % learned["t5"].n_head == 0
    assert learned["t5"].n_head == configs["gpt"].n_head  # any head size will do without RoPE: as many as GPT's
    with pytest.raises(ValueError, match="n_layer must be even"):
        arch.matched_configs(dict(arch.PRESETS["default"], n_layer=3), tokenizer)


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_t5_split_flops_equal_sizes_count_at_equal_lengths(mlp):
    config = T5Config(vocab_size=300, block_size=32, n_layer=2, n_decoder_layer=3, n_head=4, n_embd=32, mlp=mlp)
    assert arch.t5_training_flops(config, 32, 32) == flops_per_token(config, seq_len=32) * 32
    shorter = arch.t5_training_flops(config, 32, 8)
    assert shorter < arch.t5_training_flops(config, 32, 32)


def test_span_lengths_match_span_corruption(tokenizer):
    encoder, decoder = arch.span_lengths(64, tokenizer)
    assert (encoder, decoder) == (64 - 10 + 3, 10 + 3)  # 10 noise tokens in 3 spans, one sentinel each
    noise = arch.PRESETS["default"]["noise_density"]
    assert arch.span_lengths(64, tokenizer, noise) == (64 - 19 + 6, 19 + 6)  # 30%: 19 noise tokens in 6 spans


@pytest.fixture(scope="module")
def objectives(tokenizer):
    """The default preset's three pre-training objectives over a few windows of tinyworld."""
    settings = arch.PRESETS["default"]
    configs = arch.matched_configs(settings, tokenizer)
    texts = clean_corpus(size_bytes=30_000, seed=1, languages=arch.LANGUAGES)
    windows = pack(tokenizer.encode_batch(texts), settings["block_size"], tokenizer.special_tokens["<|endoftext|>"],
                   "test")
    return {name: make_objective(config, windows, windows, 64, tokenizer) for name, config in configs.items()}


def test_pretraining_objectives_use_the_presets_mask_rate_and_real_sentinels(tokenizer, objectives):
    settings = arch.PRESETS["default"]
    specials = tokenizer.special_tokens
    inputs, labels = next(objectives["bert"].batches(np.random.default_rng(0)))
    selected = labels != arch.IGNORE_INDEX
    assert abs(selected.mean() - settings["mlm_probability"]) < 0.03
    assert abs((inputs == specials["<|mask|>"]).sum() / selected.sum() - 0.8) < 0.05   # BERT sees [MASK] tokens
    original = np.where(selected, labels, inputs)
    assert (original[~selected] == inputs[~selected]).all() and not (labels[selected] == specials["<|mask|>"]).any()
    encoder, targets = next(objectives["t5"].batches(np.random.default_rng(0)))
    sentinels = [specials[f"<|extra_{i}|>"] for i in range(32)]
    assert encoder.shape[1] + targets.shape[1] == settings["block_size"] + 2 * 6
    assert np.isin(encoder, sentinels).sum(axis=1).tolist() == [6] * encoder.shape[0]
    assert targets[0, 0] == specials["<|extra_0|>"]
    restored = fill_sentinels(encoder[0], targets[0], sentinels)
    assert restored.size == settings["block_size"] and not np.isin(restored, sentinels).any()


def test_speed_counts_the_tokens_each_objective_learns_from(tokenizer):
    settings = dict(arch.PRESETS["tiny"], vocab_size=tokenizer.vocab_size)
    configs = arch.matched_configs(settings, tokenizer)
    texts = clean_corpus(size_bytes=20_000, seed=1, languages=arch.LANGUAGES)
    speed = arch.measure_speed(settings, configs, tokenizer, texts)
    window = settings["batch_size"] * settings["block_size"]
    assert speed["gpt"]["loss_tokens_per_step"] == window
    assert 0.25 < speed["bert"]["loss_tokens_per_step"] / window < 0.55
    decoder = arch.span_lengths(settings["block_size"], tokenizer, settings["noise_density"])[1]
    assert speed["t5"]["loss_tokens_per_step"] == settings["batch_size"] * decoder
    for name in arch.ARCHITECTURES:
        assert speed[name]["window_tokens_per_s"] == pytest.approx(window / speed[name]["step_s"])


def test_unigram_baseline_guesses_the_most_frequent_token():
    class Letters:  # token id = letter index
        vocab_size = 4

        def encode_batch(self, texts):
            return [[ord(letter) - ord("a") for letter in text] for text in texts]

    windows = np.array([[2] * 9, [1] * 9])  # the targets at 1/4, 1/2, 3/4: c, c, c, b, b, b
    baseline = arch.unigram_baseline(Letters(), ["abcc", "cccd"], windows)
    assert baseline["accuracy"] == 0.5
    probability = {2: (5 + 1) / (8 + 4), 1: (1 + 1) / (8 + 4)}  # add-one counts
    assert baseline["loss"] == pytest.approx(-(np.log(probability[2]) + np.log(probability[1])) / 2)


def test_compare_names_a_clear_lead_only_beyond_two_standard_errors():
    accuracy = {"t": {"gpt": (0.70, 0.01), "bert": (0.60, 0.01), "t5": (0.10, 0.0)}}
    assert arch.compare(accuracy, "t") == ("gpt", "bert", True)
    accuracy["t"]["bert"] = (0.68, 0.01)
    assert arch.compare(accuracy, "t") == ("gpt", "bert", False)


def test_translation_pairs_are_parallel_and_split_without_overlap():
    train_pairs, test_pairs = arch.translation_pairs(3)
    assert train_pairs and test_pairs
    assert not {source for source, _ in train_pairs} & {source for source, _ in test_pairs}
    assert 0.1 < len(test_pairs) / (len(train_pairs) + len(test_pairs)) < 0.3
    for seed in range(3):
        person = World(seed).people[0]
        for kind in FACT_KINDS:
            pair = (sentences.fact_sentence(person, kind, "en"), sentences.fact_sentence(person, kind, "es"))
            assert pair in train_pairs + test_pairs


@pytest.mark.parametrize("name", arch.ARCHITECTURES)
def test_translation_format_puts_each_target_token_where_the_loss_is_taken(name, tokenizer):
    form = arch.TranslationFormat(name, tokenizer, max_target=6)
    pairs = [([11, 12, 13], [21, 22]), ([14], [23, 24, 25, 26])]
    inputs, labels, mask = form.batch(pairs)
    for row, (source, target) in enumerate(pairs):
        taken = labels[row][labels[row] != arch.IGNORE_INDEX].tolist()
        if name == "bert":  # every output slot: the target, <|end|>, then padding
            assert taken == target + [form.end] + [form.pad] * (6 - len(target) - 1)
            assert inputs[row, :len(source) + 2].tolist() == [form.cls] + source + [form.sep]
        else:
            assert taken == target + [form.end]
        if name == "gpt":  # the label at position j is the input at j + 1: teacher forcing on one sequence
            sequence = source + [form.sep] + target + [form.end]
            assert inputs[row, :len(sequence) - 1].tolist() == sequence[:-1]
            positions = np.flatnonzero(labels[row] != arch.IGNORE_INDEX)
            assert [sequence[p + 1] for p in positions] == taken
        if name == "t5":
            assert inputs[row, :len(source)].tolist() == source and mask[row].sum() == len(source)


@pytest.mark.parametrize("name", arch.ARCHITECTURES)
def test_token_tasks_see_the_sides_each_architecture_can_see(name, tokenizer):
    """The logit for a blank must not change when GPT's right side changes, and must for BERT and T5."""
    settings = dict(arch.PRESETS["tiny"], vocab_size=tokenizer.vocab_size)
    config = arch.pretrain_config(name, settings, 2, 16, 2)
    model = build_model(config, tokenizer.vocab_size, tokenizer.special_tokens)
    rng = np.random.default_rng(0)
    left = rng.integers(0, 200, size=(2, 5))
    right = rng.integers(0, 200, size=(2, 4))
    other_right = (right + 7) % 200
    first = arch.logits_at(name, model, tokenizer, left, right)
    second = arch.logits_at(name, model, tokenizer, left, other_right)
    assert first.shape == (2, tokenizer.vocab_size)
    assert np.allclose(first, second) == (name == "gpt")
    loss, accuracy = arch.score_predictions(first, np.argmax(first, axis=-1))
    assert accuracy == 1.0 and loss > 0
