"""Small corpora for the tokenizer tests: stdlib source and a few multilingual sentences."""
import os
import sysconfig

MULTILINGUAL = [
    "The quick brown fox jumps over the lazy dog. It's 2024 and we're testing 12345 tokens!",
    "Der schnelle braune Fuchs springt über den faulen Hund. Straße, Größe, Äpfel.",
    "El rápido zorro marrón salta sobre el perro perezoso. ¿Qué tal? ¡Muy bien!",
    "敏捷的棕色狐狸跳过了懒狗。你好，世界！今天天气很好。",
    "素早い茶色の狐がのろまな犬を飛び越える。こんにちは世界。",
    "Быстрая коричневая лиса прыгает через ленивую собаку. Привет, мир!",
    "الثعلب البني السريع يقفز فوق الكلب الكسول. مرحبا بالعالم",
    "Emoji: 🙂🙂🙂 👩‍👩‍👧 🇫🇷 café naïve e\u0301 ²³ Ⅻ ½",
]


def stdlib_sample(max_bytes: int) -> list[str]:
    """The first .py files of the interpreter's standard library (sorted walk), up to max_bytes."""
    root = sysconfig.get_paths()["stdlib"]
    texts, total = [], 0
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                text = f.read()
            texts.append(text)
            total += len(text.encode("utf-8"))
            if total >= max_bytes:
                return texts
    return texts
