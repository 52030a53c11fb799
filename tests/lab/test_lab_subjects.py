"""The lab's shared pieces: the graded question set, answer keys, and where the own models are kept."""
import pytest

from minifm.lab import questions
from minifm.lab.own_model import SHARED_FOLDER, build_lock, models_directory
from minifm.lab.subjects import tinyworld_answer_key


@pytest.mark.parametrize("question, reply, right", [
    ("What is 7 plus 5?", "7 + 5 = 12", True),
    ("What is 15 minus 8?", "15 - 8 = 15", False),
    ("What is 6 times 7?", "Forty-two.", True),
    ("What is 1000 minus 1?", "1,000 - 1 = 999", True),
    ("What is 7 plus 5?", "To add 7 and 5, we can use the", False),  # cut before it states a result
    ("What is the capital of France?", "The capital of France is Paris.", True),
    ("What is the largest planet in the solar system?", "The largest planet is Neptune, but it", False),
    ("What is the chemical formula of water?", "H₂O", True),
    ("How many legs does a spider have?", "A spider has eight legs.", True),
    ("What is the chemical symbol for gold?", "It is gold, a metal.", False),  # "au" is not a word of this reply
])
def test_grade_answer(question, reply, right):
    assert questions.grade_answer(question, reply) is right


def test_the_question_set():
    assert len(questions.QUESTIONS) == 42 and len(questions.BY_TEXT) == 42
    for question in questions.QUESTIONS:
        assert questions.grade_answer(question.text, question.answers[0])
        if question.kind == "arithmetic":  # echoing the question never counts as right
            assert not questions.grade_answer(question.text, question.text)
    with pytest.raises(ValueError, match="not one of the lab's"):
        questions.grade_answer("What is love?", "baby don't hurt me")


def test_numbers_and_answer_keys():
    assert questions.numbers_in("twenty-one and 3.5, then seven") == [21.0, 3.5, 7.0]
    assert questions.answer_key("What is 7 plus 5?", "It is 12.") == questions.answer_key("What is 7 plus 5?", "twelve")
    assert questions.answer_key("What is the capital of Italy?", "Rome!") == "rome"
    assert questions.answer_key("What is the capital of Italy?", "Milan.") == "milan"


def test_tinyworld_answer_key_ignores_style():
    plain = tinyworld_answer_key("Where does Mara live?", "Mara lives in Tollby.")
    assert tinyworld_answer_key("Where does Mara live?", "Sure! Mara lives in Tollby.") == plain
    assert tinyworld_answer_key("Where does Mara live?", "Let me see. Mara lives in Tollby.") == plain
    assert tinyworld_answer_key("Where does Mara live?", "Mara lives in Tollby. That is all.") == plain
    assert tinyworld_answer_key("Where does Mara live?", "Mara lives in Velmo.") != plain


def test_models_directory_names_the_preset_and_the_overrides(tmp_path):
    assert models_directory(tmp_path, "default", None) == tmp_path / SHARED_FOLDER / "lifecycle-default"
    changed = models_directory(tmp_path, "tiny", {"pretrain": {"max_steps": 20}})
    assert changed.name.startswith("lifecycle-tiny-") and changed != models_directory(tmp_path, "tiny", {"x": 1})
    with build_lock(changed):
        assert (changed / ".lock").exists()
