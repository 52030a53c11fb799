"""A graded question set for a real chat model: 42 arithmetic and factual questions with known answers.

tinyworld grades minifm's own models, but a real model such as SmolLM2-135M-Instruct knows nothing
of tinyworld's people and towns. The laboratory asks it these instead: 20 arithmetic questions
(small sums, differences, products, quotients, a power, a square root) and 22 factual ones
(capitals, planets, animals, chemistry, everyday counts), each with one right answer that fits in
a few words. The questions are short on purpose: SmolLM2 decodes ~20-30 tokens per second on two
CPU cores, so every answer is cut at about a dozen tokens, and the system prompt asks for brevity.

Grading (`grade_answer`), after Unicode NFKC and casefolding:

    arithmetic   the LAST number in the reply (digits, "1,000"-style groups, or a number word up
                 to ninety-nine such as "forty-two") equals the answer: "7 + 5 = 12" is right,
                 "15 - 8 = 15" is wrong, and a reply cut before it states a result is wrong
    factual      one of the accepted spellings appears as a whole word: "The capital of France
                 is Paris." is right, "Neptune, but ..." is wrong for the largest planet

No arithmetic answer equals one of its own operands, so echoing the question never counts as right.

`answer_key(question, reply)` is what two replies must share to "agree" (self-consistency and
majority vote): the last number for arithmetic; for a factual question the accepted answer when
the reply states it; else (no number, no accepted answer) the reply's normalised text, so wrong
replies agree only when they say the same.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

SYSTEM_PROMPT = "Answer in as few words as possible."


@dataclass(frozen=True)
class Question:
    text: str
    answers: tuple[str, ...]   # accepted spellings; for arithmetic, the number as digits
    kind: str                  # "arithmetic" or "factual"


def _arithmetic(text: str, answer: int) -> Question:
    return Question(text, (str(answer),), "arithmetic")


def _factual(text: str, *answers: str) -> Question:
    return Question(text, tuple(answers), "factual")


QUESTIONS: tuple[Question, ...] = (
    _arithmetic("What is 7 plus 5?", 12),
    _arithmetic("What is 9 times 3?", 27),
    _arithmetic("What is 15 minus 8?", 7),
    _arithmetic("What is 6 times 7?", 42),
    _arithmetic("What is 20 divided by 4?", 5),
    _arithmetic("What is 13 plus 28?", 41),
    _arithmetic("What is 100 minus 37?", 63),
    _arithmetic("What is 8 times 8?", 64),
    _arithmetic("What is 45 divided by 9?", 5),
    _arithmetic("What is 3 plus 4?", 7),
    _arithmetic("What is 12 times 12?", 144),
    _arithmetic("What is 50 plus 50?", 100),
    _arithmetic("What is 72 divided by 8?", 9),
    _arithmetic("What is 2 to the power of 5?", 32),
    _arithmetic("What is half of 30?", 15),
    _arithmetic("What is 25 plus 18?", 43),
    _arithmetic("What is 11 times 4?", 44),
    _arithmetic("What is 90 minus 36?", 54),
    _arithmetic("What is the square root of 49?", 7),
    _arithmetic("What is 1000 minus 1?", 999),
    _factual("What is the capital of France?", "paris"),
    _factual("What is the capital of Japan?", "tokyo"),
    _factual("What is the capital of Italy?", "rome"),
    _factual("What is the capital of Germany?", "berlin"),
    _factual("What is the capital of Spain?", "madrid"),
    _factual("How many legs does a spider have?", "8", "eight"),
    _factual("How many days are in a week?", "7", "seven"),
    _factual("How many continents are there?", "7", "seven"),
    _factual("What is the largest planet in the solar system?", "jupiter"),
    _factual("Which planet is known as the Red Planet?", "mars"),
    _factual("Who wrote Romeo and Juliet?", "shakespeare"),
    _factual("What is the chemical symbol for gold?", "au"),
    _factual("What is the chemical formula of water?", "h2o"),
    _factual("What is the boiling point of water in degrees Celsius?", "100", "one hundred"),
    _factual("What colour is the sky on a clear day?", "blue"),
    _factual("What is the largest ocean on Earth?", "pacific"),
    _factual("Which animal is known as the king of the jungle?", "lion", "lions"),
    _factual("What gas do plants absorb from the air?", "carbon dioxide", "co2"),
    _factual("What is the opposite of hot?", "cold"),
    _factual("How many hours are in a day?", "24", "twenty-four", "twenty four"),
    _factual("What is the fastest land animal?", "cheetah", "cheetahs"),
    _factual("In which country are the pyramids of Giza?", "egypt"),
)
BY_TEXT = {question.text: question for question in QUESTIONS}

UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
NUMBER_PATTERN = re.compile(r"\d+(?:\.\d+)?|[a-z]+(?:-[a-z]+)?")


def fold(text: str) -> str:
    """NFKC, casefold, runs of whitespace -> one space (H₂O becomes h2o)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def word_value(word: str) -> int | None:
    """The value of a number word up to ninety-nine ("seven", "forty", "forty-two"), else None."""
    if word in UNITS:
        return UNITS.index(word)
    if word in TENS:
        return TENS[word]
    tens, _, unit = word.partition("-")
    if tens in TENS and unit in UNITS[1:10]:
        return TENS[tens] + UNITS.index(unit)
    return None


def numbers_in(text: str) -> list[float]:
    """Every number stated in `text`, in order: digits (thousands commas allowed) and number words."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", fold(text))  # 1,000 -> 1000
    numbers = []
    for piece in NUMBER_PATTERN.findall(text):
        if piece[0].isdigit():
            numbers.append(float(piece))
        else:
            value = word_value(piece)
            if value is not None:
                numbers.append(float(value))
    return numbers


def states(text: str, phrase: str) -> bool:
    """Whether the folded `phrase` appears in the folded `text` as whole words."""
    return re.search(rf"(?<![a-z0-9]){re.escape(fold(phrase))}(?![a-z0-9])", fold(text)) is not None


def grade_answer(question: str, reply: str) -> bool:
    """Whether `reply` answers `question` (one of QUESTIONS, by its text) correctly; rules in the docstring."""
    if question not in BY_TEXT:
        raise ValueError(f"grade_answer: {question!r} is not one of the lab's {len(QUESTIONS)} questions")
    entry = BY_TEXT[question]
    if entry.kind == "arithmetic":
        numbers = numbers_in(reply)
        return bool(numbers) and numbers[-1] == float(entry.answers[0])
    return any(states(reply, answer) for answer in entry.answers)


def answer_key(question: str, reply: str) -> str:
    """What two replies to `question` must share to count as the same answer (see the module docstring)."""
    entry = BY_TEXT[question]
    if entry.kind == "arithmetic":
        numbers = numbers_in(reply)
        return f"{numbers[-1]:g}" if numbers else fold(reply).rstrip(" .!?")
    for answer in entry.answers:
        if states(reply, answer):
            return entry.answers[0]
    return fold(reply).rstrip(" .!?")


__all__ = ["QUESTIONS", "Question", "SYSTEM_PROMPT", "answer_key", "grade_answer", "numbers_in"]
