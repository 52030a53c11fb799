"""The three languages of tinyworld: word tables and sentence renderers for English, Spanish, German.

The Spanish and German here are real languages reduced to a small lexicon written for this
project (no external dictionary). Only the grammar the templates need is implemented:

* English: singular/plural nouns, "one cat" / "three cats" / "no cats", possessive "Mara's".
* Spanish: grammatical gender (el/la, un/una), adjective agreement (rojo/roja; invariable
  azul, verde, naranja), feminine job nouns (panadero/panadera), the count "1" written un/una.
* German: gender (der/die/das), the accusative indefinite article after "hat" (einen/eine/ein),
  mixed adjective declension in the accusative (einen roten Hut, eine rote Lampe, ein rotes
  Boot), feminine job nouns (Bäcker/Bäckerin). Simplification: "lila" and "orange" are treated
  as indeclinable (the standard written form), and German genitives are avoided by using
  "von" ("die Lieblingsfarbe von Mara") so no name needs an apostrophe rule.

Each fact type has several sentence templates per language; template 0 is the *canonical* one,
used for instruction answers and sentence translation, so a tiny model sees the answer form
many times during pre-training. Names of people and towns are the same in every language.
"""
from __future__ import annotations

LANGUAGES = ("en", "es", "de")
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "de": "German"}

# ------------------------------------------------------------------ proper nouns (shared)
FEMALE_NAMES = ("Mara", "Lena", "Ida", "Nora", "Sofi", "Alma", "Vera", "Rosa", "Elin", "Tilda",
                "Juna", "Pia", "Greta", "Livia", "Ines", "Hanne")
MALE_NAMES = ("Tomas", "Bruno", "Olek", "Emil", "Pavel", "Anton", "Rafi", "Jonas", "Milo",
              "Lukas", "Timo", "Felix", "Oskar", "Beno", "Karel", "Aron")
TOWN_NAMES = ("Tollby", "Ostmark", "Brinna", "Velmo", "Carrow", "Sundal", "Mirefield", "Kessa",
              "Dorran", "Halvik", "Pennow", "Lusk", "Ambra", "Yarrow")

# ------------------------------------------------------------------ common nouns and adjectives
# animals: english singular, english plural, spanish (singular, plural, gender),
#          german (singular, plural, gender)
ANIMALS = {
    "cat": ("cat", "cats", ("gato", "gatos", "m"), ("Katze", "Katzen", "f")),
    "dog": ("dog", "dogs", ("perro", "perros", "m"), ("Hund", "Hunde", "m")),
    "horse": ("horse", "horses", ("caballo", "caballos", "m"), ("Pferd", "Pferde", "n")),
    "goat": ("goat", "goats", ("cabra", "cabras", "f"), ("Ziege", "Ziegen", "f")),
    "rabbit": ("rabbit", "rabbits", ("conejo", "conejos", "m"), ("Kaninchen", "Kaninchen", "n")),
    "duck": ("duck", "ducks", ("pato", "patos", "m"), ("Ente", "Enten", "f")),
    "sheep": ("sheep", "sheep", ("oveja", "ovejas", "f"), ("Schaf", "Schafe", "n")),
    "fish": ("fish", "fish", ("pez", "peces", "m"), ("Fisch", "Fische", "m")),
}
# colours: english, spanish (masculine, feminine), german (predicative stem, noun, declinable)
COLOURS = {
    "red": ("red", ("rojo", "roja"), ("rot", "Rot", True)),
    "blue": ("blue", ("azul", "azul"), ("blau", "Blau", True)),
    "green": ("green", ("verde", "verde"), ("grün", "Grün", True)),
    "yellow": ("yellow", ("amarillo", "amarilla"), ("gelb", "Gelb", True)),
    "black": ("black", ("negro", "negra"), ("schwarz", "Schwarz", True)),
    "white": ("white", ("blanco", "blanca"), ("weiß", "Weiß", True)),
    "orange": ("orange", ("naranja", "naranja"), ("orange", "Orange", False)),
    "purple": ("purple", ("morado", "morada"), ("lila", "Lila", False)),
}
# objects: english, spanish (noun, gender), german (noun, gender)
OBJECTS = {
    "hat": ("hat", ("sombrero", "m"), ("Hut", "m")),
    "bike": ("bike", ("bicicleta", "f"), ("Fahrrad", "n")),
    "book": ("book", ("libro", "m"), ("Buch", "n")),
    "lamp": ("lamp", ("lámpara", "f"), ("Lampe", "f")),
    "ball": ("ball", ("pelota", "f"), ("Ball", "m")),
    "boat": ("boat", ("barco", "m"), ("Boot", "n")),
    "drum": ("drum", ("tambor", "m"), ("Trommel", "f")),
    "kite": ("kite", ("cometa", "f"), ("Drachen", "m")),
}
# jobs: english (singular, plural), spanish (masc, fem, plural), german (masc, fem, plural)
JOBS = {
    "baker": (("baker", "bakers"), ("panadero", "panadera", "panaderos"), ("Bäcker", "Bäckerin", "Bäcker")),
    "farmer": (("farmer", "farmers"), ("granjero", "granjera", "granjeros"), ("Bauer", "Bäuerin", "Bauern")),
    "teacher": (("teacher", "teachers"), ("maestro", "maestra", "maestros"), ("Lehrer", "Lehrerin", "Lehrer")),
    "doctor": (("doctor", "doctors"), ("médico", "médica", "médicos"), ("Arzt", "Ärztin", "Ärzte")),
    "painter": (("painter", "painters"), ("pintor", "pintora", "pintores"), ("Maler", "Malerin", "Maler")),
    "fisher": (("fisher", "fishers"), ("pescador", "pescadora", "pescadores"), ("Fischer", "Fischerin", "Fischer")),
    "carpenter": (("carpenter", "carpenters"), ("carpintero", "carpintera", "carpinteros"),
                  ("Tischler", "Tischlerin", "Tischler")),
    "singer": (("singer", "singers"), ("cantante", "cantante", "cantantes"), ("Sänger", "Sängerin", "Sänger")),
}
NUMBER_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
           "eighteen", "nineteen", "twenty"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez",
           "once", "doce", "trece", "catorce", "quince", "dieciséis", "diecisiete", "dieciocho",
           "diecinueve", "veinte"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn",
           "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn",
           "neunzehn", "zwanzig"),
}
PRONOUNS = {"en": {"f": "she", "m": "he"}, "es": {"f": "ella", "m": "él"}, "de": {"f": "sie", "m": "er"}}
AND_WORD = {"en": "and", "es": "y", "de": "und"}
GERMAN_ACCUSATIVE_INDEFINITE = {"m": "einen", "f": "eine", "n": "ein"}
GERMAN_NOMINATIVE_DEFINITE = {"m": "der", "f": "die", "n": "das"}
GERMAN_ACCUSATIVE_MIXED_ENDING = {"m": "en", "f": "e", "n": "es"}  # einen roten / eine rote / ein rotes


def capitalise(sentence: str) -> str:
    """Upper-case the first character (sentence-initial pronouns and number words)."""
    return sentence[:1].upper() + sentence[1:]


def join_names(names: list[str], language: str) -> str:
    """"A", "A and B", "A, B and C" in the given language."""
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + f" {AND_WORD[language]} " + names[-1]


def number_word(n: int, language: str) -> str:
    """The word for 0 <= n <= 20 in `language`."""
    if not 0 <= n <= 20:
        raise ValueError(f"number_word: n must be in [0, 20], got {n}")
    return NUMBER_WORDS[language][n]


# ------------------------------------------------------------------ noun phrases with counts
def animal_word(animal: str, language: str, plural: bool) -> str:
    en_sg, en_pl, es, de = ANIMALS[animal]
    if language == "en":
        return en_pl if plural else en_sg
    if language == "es":
        return es[1] if plural else es[0]
    return de[1] if plural else de[0]


def counted_animals(animal: str, count: int, language: str) -> str:
    """ "three cats" / "one cat" / "no cats"; Spanish un/una, German accusative einen/eine/ein."""
    if language == "en":
        if count == 0:
            return f"no {animal_word(animal, 'en', True)}"
        return f"{number_word(count, 'en')} {animal_word(animal, 'en', count != 1)}"
    if count <= 0:
        raise ValueError(f"counted_animals: Spanish/German forms need count >= 1, got {count}")
    if language == "es":
        gender = ANIMALS[animal][2][2]
        if count == 1:
            return f"{'un' if gender == 'm' else 'una'} {animal_word(animal, 'es', False)}"
        return f"{number_word(count, 'es')} {animal_word(animal, 'es', True)}"
    gender = ANIMALS[animal][3][2]
    if count == 1:
        return f"{GERMAN_ACCUSATIVE_INDEFINITE[gender]} {animal_word(animal, 'de', False)}"
    return f"{number_word(count, 'de')} {animal_word(animal, 'de', True)}"


def colour_word(colour: str, language: str, gender: str = "m") -> str:
    """Predicative/agreeing colour adjective (Spanish agrees with `gender`)."""
    en, es, de = COLOURS[colour]
    if language == "en":
        return en
    if language == "es":
        return es[1] if gender == "f" else es[0]
    return de[0]


def colour_noun(colour: str, language: str) -> str:
    """The colour as a noun: "red", "el rojo" (article added by templates), "Rot"."""
    en, es, de = COLOURS[colour]
    return {"en": en, "es": es[0], "de": de[1]}[language]


def object_word(obj: str, language: str) -> str:
    en, es, de = OBJECTS[obj]
    return {"en": en, "es": es[0], "de": de[0]}[language]


def object_with_article(obj: str, language: str, definite: bool) -> str:
    """ "the hat"/"el sombrero"/"der Hut" (definite, nominative) or "a hat"/"un sombrero"/"einen Hut"."""
    en, (es_noun, es_gender), (de_noun, de_gender) = OBJECTS[obj]
    if language == "en":
        return f"{'the' if definite else 'a'} {en}"
    if language == "es":
        if definite:
            return f"{'el' if es_gender == 'm' else 'la'} {es_noun}"
        return f"{'un' if es_gender == 'm' else 'una'} {es_noun}"
    if definite:
        return f"{GERMAN_NOMINATIVE_DEFINITE[de_gender]} {de_noun}"
    return f"{GERMAN_ACCUSATIVE_INDEFINITE[de_gender]} {de_noun}"


def coloured_object_indefinite(obj: str, colour: str, language: str) -> str:
    """ "a red hat" / "un sombrero rojo" / "einen roten Hut" (German accusative, mixed declension)."""
    en, (es_noun, es_gender), (de_noun, de_gender) = OBJECTS[obj]
    if language == "en":
        return f"a {colour_word(colour, 'en')} {en}"
    if language == "es":
        article = "un" if es_gender == "m" else "una"
        return f"{article} {es_noun} {colour_word(colour, 'es', es_gender)}"
    stem, _, declinable = COLOURS[colour][2]
    article = GERMAN_ACCUSATIVE_INDEFINITE[de_gender]
    ending = GERMAN_ACCUSATIVE_MIXED_ENDING[de_gender] if declinable else ""
    return f"{article} {stem}{ending} {de_noun}"


def job_word(job: str, language: str, gender: str = "m", plural: bool = False) -> str:
    en, es, de = JOBS[job]
    if language == "en":
        return en[1] if plural else en[0]
    forms = es if language == "es" else de
    if plural:
        return forms[2]
    return forms[1] if gender == "f" else forms[0]
