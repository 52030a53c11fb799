"""tinyworld: determinism, corpus shape and language mix, instruction grading, reward ordering, curation."""
import collections
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from minifm.data import tinyworld as tw
from minifm.data.quality import QualityPipeline


@pytest.fixture(scope="module")
def documents():
    return tw.generate_documents(400_000, seed=5)


def test_world_is_fixed_by_seed():
    assert tw.World(0).people == tw.World(0).people == tw.default_world().people
    assert tw.World(0).people != tw.World(1).people
    world = tw.default_world()
    assert len(world.people) == 24 and len(world.towns) == 10
    assert len({p.name for p in world.people}) == 24
    assert all(world.residents(town) for town in world.towns)         # every town has someone
    assert all(1 <= p.count <= 9 for p in world.people)


def test_corpus_is_deterministic_and_sized():
    first = tw.generate_corpus(60_000, seed=3)
    assert first == tw.generate_corpus(60_000, seed=3)
    assert first != tw.generate_corpus(60_000, seed=4)
    total = sum(len(d.encode("utf-8")) for d in first)
    longest = max(len(d.encode("utf-8")) for d in first)
    assert 60_000 <= total < 60_000 + longest + 1
    assert all(isinstance(d, str) and d for d in first)


def test_clean_corpus_has_no_noise():
    docs = tw.generate_documents(50_000, seed=1, noise=0.0)
    assert {d.kind for d in docs} == {"clean"}
    assert tw.clean_corpus(50_000, seed=1) == [d.text for d in docs]


def test_language_mix_matches_weights(documents):
    counts = collections.Counter(d.language for d in documents if d.kind == "clean")
    observed = np.array([counts[lang] for lang in ("en", "es", "de")])
    expected = observed.sum() * np.array([0.8, 0.12, 0.08])
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_custom_language_mix_and_bad_arguments():
    docs = tw.generate_documents(20_000, seed=0, languages={"de": 1.0}, noise=0.0)
    assert {d.language for d in docs} == {"de"}
    assert all("wohnt" in d.text or "hat" in d.text or "ist" in d.text or "Wort" in d.text for d in docs)
    with pytest.raises(ValueError, match="languages"):
        tw.generate_corpus(10_000, languages={"fr": 1.0})
    with pytest.raises(ValueError, match="noise"):
        tw.generate_corpus(10_000, noise=1.5)
    with pytest.raises(ValueError, match="size_bytes"):
        tw.generate_corpus(0)


def test_noise_kinds_all_appear_at_the_requested_rate(documents):
    kinds = collections.Counter(d.kind for d in documents)
    assert set(tw.NOISE_KINDS) <= set(kinds)
    n_noise = sum(v for k, v in kinds.items() if k != "clean")
    # each document slot is noise with probability 0.1 (duplicates need an earlier clean doc)
    assert stats.binomtest(n_noise, len(documents), 0.1).pvalue > 1e-4


def test_every_fact_is_stated_many_times():
    corpus = "\n".join(tw.clean_corpus(300_000, seed=2, languages={"en": 1.0}))
    for person in tw.default_world().people:
        assert corpus.count(person.name) >= 20, person.name
        assert f"{person.name} lives in {person.town}." in corpus


def test_curation_removes_noise_and_keeps_clean(documents):
    result = QualityPipeline().run([d.text for d in documents])
    kept = set(result.kept_indices)
    clean = [i for i, d in enumerate(documents) if d.kind == "clean"]
    noise = [i for i, d in enumerate(documents) if d.kind != "clean"]
    clean_kept = sum(i in kept for i in clean) / len(clean)
    noise_removed = sum(i not in kept for i in noise) / len(noise)
    assert clean_kept >= 0.97, result.table()
    assert noise_removed >= 0.95, result.table()


# ------------------------------------------------------------------ instructions and grading
def test_splits_are_disjoint_and_cover_all_tasks():
    train = tw.instructions("train")
    test = tw.instructions("test")
    train_prompts = {t["prompt"] for t in train}
    test_prompts = {t["prompt"] for t in test}
    assert not train_prompts & test_prompts
    assert train_prompts | test_prompts == {t.prompt for t in tw.all_tasks()}
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.3
    assert {t.family for t in tw.all_tasks("test")} == {"fact", "counting", "arithmetic", "translation"}
    assert all(set(t) == {"prompt", "completion"} for t in train)


def test_instructions_seed_orders_and_n_subsamples():
    assert tw.instructions("train", seed=1) == tw.instructions("train", seed=1)
    assert tw.instructions("train", seed=1) != tw.instructions("train", seed=2)
    assert len(tw.instructions("train", n=10)) == 10
    pool = len(tw.instructions("test"))
    assert len(tw.instructions("test", n=pool + 5)) == pool + 5


def test_instruction_styles_are_a_seeded_mix_all_graded_correct():
    data = tw.instructions("train", seed=3) + tw.instructions("test", seed=3)
    assert data == tw.instructions("train", seed=3) + tw.instructions("test", seed=3)
    counts = {"plain": 0, "polite": 0, "verbose": 0}
    for example in data:
        reference = tw.reference_answer(example["prompt"])
        completion = example["completion"]
        assert tw.grade(example["prompt"], completion), example
        reward = tw.ground_truth_reward(example["prompt"], completion)
        if completion == reference:
            counts["plain"] += 1
            assert reward == 1.0
        elif tw.tasks.strip_polite_prefix(completion) == (reference, True):
            counts["polite"] += 1
            assert reward == pytest.approx(1.0 + tw.tasks.POLITENESS_BONUS)
        else:
            counts["verbose"] += 1
            assert reference.rstrip(".") in completion and 0.0 <= reward < 1.0, example
    expected = [tw.tasks.STYLE_MIX[k] * len(data) for k in counts]
    assert stats.chisquare(list(counts.values()), expected).pvalue > 1e-4, counts
    plain = tw.instructions("train", seed=3, style_mix={"plain": 1.0})
    assert [e["completion"] for e in plain] == [tw.reference_answer(e["prompt"]) for e in plain]
    assert [e["prompt"] for e in plain] == [e["prompt"] for e in tw.instructions("train", seed=3)]


@pytest.mark.parametrize("bad", [{"plain": 0.5}, {"shouting": 1.0}, {}, {"plain": float("nan")}, "plain"])
def test_bad_style_mix_raises_naming_it(bad):
    with pytest.raises(ValueError, match="style_mix"):
        tw.instructions("train", n=3, style_mix=bad)


def test_grade_judges_the_fact_inside_filler_sentences():
    prompt = "Where does Mara live?"
    answer = tw.reference_answer(prompt)
    wrong = next(t for t in tw.all_tasks() if t.prompt == prompt).wrong_answers[0]
    assert tw.grade(prompt, "Let me see. " + answer) and tw.grade(prompt, answer + " That is all.")
    assert not tw.grade(prompt, "Let me see. " + wrong) and not tw.grade(prompt, answer + "x That is all.")


def test_every_reference_grades_correct_and_every_wrong_answer_wrong():
    for task in tw.all_tasks():
        assert tw.reference_answer(task.prompt) == task.answer
        assert tw.grade(task.prompt, task.answer)
        for wrong in task.wrong_answers[:3] + task.other_language_answers:
            assert not tw.grade(task.prompt, wrong), (task.prompt, wrong)


def test_answers_are_short_single_sentences():
    for task in tw.all_tasks():
        assert len(task.answer.split()) <= 12, task.answer
        assert task.answer.count(". ") == 0, task.answer


def test_grade_normalises_case_whitespace_trailing_punctuation_and_politeness():
    prompt = "Where does Mara live?"
    answer = tw.reference_answer(prompt)
    variants = [answer.upper(), "  " + answer.replace(" ", "   ") + "  ", answer.rstrip(".") + "!!", "Sure! " + answer]
    assert all(tw.grade(prompt, v) for v in variants)
    assert not tw.grade(prompt, answer.replace("lives", "works"))


def test_unknown_prompt_raises_naming_it():
    with pytest.raises(ValueError, match="What is the capital of France"):
        tw.reference_answer("What is the capital of France?")
    with pytest.raises(ValueError, match="not a tinyworld"):
        tw.ground_truth_reward("hello", "world")


# ------------------------------------------------------------------ reward and preferences
@pytest.mark.parametrize("split", ["train", "test"])
def test_reward_orders_every_preference_pair(split):
    pairs = tw.preferences(split, seed=0)
    assert len(pairs) == len(tw.instructions(split))
    for pair in pairs:
        assert tw.ground_truth_reward(pair["prompt"], pair["chosen"]) > tw.ground_truth_reward(pair["prompt"], pair["rejected"]), pair


def test_rejected_kinds_are_varied():
    pairs = tw.preferences("train", seed=0)
    rewards = [tw.ground_truth_reward(p["prompt"], p["rejected"]) for p in pairs]
    wrong = sum(r < 0 for r in rewards)
    correct_but_worse = sum(0 <= r < 1.0 for r in rewards)
    assert wrong > 0.3 * len(pairs) and correct_but_worse > 0.2 * len(pairs)
    assert any(tw.grade(p["prompt"], p["rejected"]) is False and tw.ground_truth_reward(p["prompt"], p["rejected"]) > -1
               for p in pairs)   # some wrong answers are politely phrased
    plain_rejected = [p for p in pairs if p["rejected"] == tw.reference_answer(p["prompt"])]
    assert len(plain_rejected) > 0.03 * len(pairs)   # polite vs plain compared directly
    assert all(tw.tasks.strip_polite_prefix(p["chosen"])[1] for p in plain_rejected)
    short_filler = [p for p in pairs if p["rejected"].startswith("Let me see. ") or p["rejected"].endswith(" That is all.")]
    assert len(short_filler) > 0.03 * len(pairs)     # the instruction data's own filler style is rejected


def test_reward_formula_components():
    prompt = "Where does Mara live?"
    answer = tw.reference_answer(prompt)
    wrong = next(t for t in tw.all_tasks() if t.prompt == prompt).wrong_answers[0]
    assert tw.ground_truth_reward(prompt, answer) == 1.0
    assert tw.ground_truth_reward(prompt, "Sure! " + answer) == pytest.approx(1.2)
    assert tw.ground_truth_reward(prompt, answer + " I hope this helps.") == pytest.approx(1.0 - 4 * 0.05)
    assert tw.ground_truth_reward(prompt, "Ugh. " + answer) == pytest.approx(1.0 - 0.05 - 0.5)
    assert tw.ground_truth_reward(prompt, "") == -1.0
    assert tw.ground_truth_reward(prompt, wrong) == -1.0
    assert tw.ground_truth_reward(prompt, "Sure! " + wrong) == pytest.approx(-0.8)


@given(st.text(max_size=200))
def test_reward_is_bounded_for_any_string(response):
    reward = tw.ground_truth_reward("Where does Mara live?", response)
    assert math.isfinite(reward) and -2.0 <= reward <= 1.2


@given(st.sampled_from(tw.all_tasks()), st.text(alphabet="abcxyz !?.", max_size=60))
def test_any_correct_answer_beats_any_wrong_one(task, junk):
    """Extra sentences after an answer cost length; they never turn a wrong answer into a right one."""
    correct = tw.ground_truth_reward(task.prompt, task.answer.rstrip(".") + ". " + junk)
    for wrong_answer in task.wrong_answers[:2]:
        wrong = tw.ground_truth_reward(task.prompt, wrong_answer.rstrip(".") + ". " + junk)
        assert correct > wrong
