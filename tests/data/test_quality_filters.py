"""Quality rules on handcrafted documents that must pass and must fail, and the pipeline's bookkeeping."""
import pytest

from minifm.data import quality as q

GOOD = (
    "Mara lives in the small town of Tollby, where the river bends twice before it reaches the sea.\n"
    "She keeps three cats and a dog, and every morning she walks with them to the bakery on the hill.\n"
    "The baker, who has known her for years, always saves a warm roll for her and a bone for the dog.\n"
    "In the evening the family sits in the garden and talks about the long summer that is coming."
)


def words(n, word="plain"):
    return " ".join([word] * n)


@pytest.mark.parametrize("rule, bad", [
    (q.DocumentWords(), "Too short to be a real page."),
    (q.DocumentWords(max_words=30), GOOD),
    (q.MeanWordLength(), "a b c d e f g h i j k l m n o p " * 5),
    (q.MeanWordLength(), "incomprehensibilities " * 60),
    (q.SymbolToWordRatio(), "Home | News | Shop | About | Contact | Login # top # more ..."),
    (q.BulletLines(), "• Home\n• News\n• Shop\n• About\n• Contact"),
    (q.EllipsisLines(), "Mara lives in...\nShe keeps three...\nThe baker who...\nRead the whole story."),
    (q.AlphabeticWords(), "12 34 56 78 90 11 22 33 44 55 word"),
    (q.StopWords(), "cheap cats best price buy now free shipping deals"),
    (q.TerminalPunctuation(), "Home page\nLatest news\nOur shop\nThe end."),
    (q.MinWordsPerLine(), "Menu\nHome\nNews\nMara lives in Tollby with her cats."),
    (q.BoilerplatePhrases(), GOOD + "\nThis website uses cookies to improve your experience."),
    (q.BoilerplatePhrases(), GOOD + "\nPlease ENABLE   JavaScript to continue."),
    (q.CurlyBraces(), GOOD + "\nfunction f() { return 1; }"),
    (q.RepeatedLines(), "Buy cats now.\nBuy cats now.\nBuy cats now.\nMara lives in Tollby."),
    (q.TopNgramFraction(), "the cat the cat the cat the cat said the cat to the cat and the cat"),
    (q.DuplicateNgramFraction(), words(3, "alpha") + " one two three four five six " * 4 + words(5, "omega")),
    (q.LineLength(), "x = 1\n" + "y" * 1500),
    (q.AlphanumericFraction(), "=== --- *** +++ ||| ;;; ((( ))) a"),
])
def test_rule_drops_bad_document_with_reason(rule, bad):
    result = rule.check(bad)
    assert not result.keep
    assert isinstance(result.reason, str) and result.reason


@pytest.mark.parametrize("rule", [
    q.DocumentWords(), q.MeanWordLength(), q.SymbolToWordRatio(), q.BulletLines(), q.EllipsisLines(),
    q.AlphabeticWords(), q.StopWords(), q.TerminalPunctuation(), q.MinWordsPerLine(), q.BoilerplatePhrases(),
    q.CurlyBraces(), q.RepeatedLines(), q.TopNgramFraction(), q.DuplicateNgramFraction(), q.LineLength(),
    q.AlphanumericFraction(),
])
def test_rule_keeps_good_prose(rule):
    result = rule.check(GOOD)
    assert result.keep and result.reason == ""


def test_thresholds_are_configurable_and_boundaries_inclusive():
    doc = words(50)
    assert q.DocumentWords(min_words=50).check(doc).keep
    assert not q.DocumentWords(min_words=51).check(doc).keep
    four_lines = "• a b c.\n• d e f.\nplain line here.\nanother plain line."
    assert q.BulletLines(max_fraction=0.5).check(four_lines).keep          # exactly 50% allowed
    assert not q.BulletLines(max_fraction=0.49).check(four_lines).keep


def test_stop_words_are_multilingual():
    assert q.StopWords().check("Mara tiene tres gatos y vive en la casa.").keep
    assert q.StopWords().check("Mara hat drei Katzen und wohnt in der Stadt.").keep


def test_code_preset_keeps_python_but_web_preset_drops_it():
    code = "\n".join(f"def function_{i}(value):\n    return value * {i} + {{'k': {i}}}['k']\n" for i in range(20))
    assert q.QualityPipeline(preset="code").run([code]).kept == [code]
    assert q.QualityPipeline(preset="web").run([code]).kept == []
    with pytest.raises(ValueError, match="preset"):
        q.QualityPipeline(preset="poetry")


def test_pipeline_bookkeeping_and_table():
    docs = [GOOD, "short page.", GOOD, GOOD + "\n{ }", GOOD.upper()]
    result = q.QualityPipeline().run(docs)
    assert result.kept_indices == [0]
    assert result.kept == [GOOD]
    by_index = {d.index: d for d in result.dropped}
    assert by_index[1].rule == "document_words"
    assert by_index[3].rule == "curly_braces"
    assert by_index[2].rule == "exact_dedup" and by_index[2].duplicate_of == 0
    assert by_index[4].rule == "exact_dedup" and by_index[4].duplicate_of == 0   # normalised: case-insensitive
    assert len(result.kept) + len(result.dropped) == len(docs)
    stats = {s.rule: s for s in result.rule_stats}
    assert stats["document_words"].seen == 5 and stats["document_words"].dropped == 1
    assert sum(s.dropped for s in result.rule_stats) == len(result.dropped)
    table = result.table()
    assert "curly_braces" in table and "exact_dedup" in table and "near_dedup" in table
    assert len(table.splitlines()) == len(result.rule_stats) + 2
    assert set(result.dropped_by_rule()) >= {"document_words", "curly_braces", "exact_dedup"}
    assert result.dropped_fraction() == 4 / 5
    assert result.top_rule().rule == "exact_dedup" and result.top_rule().dropped == 2


def test_top_rule_is_the_first_busiest_and_none_when_nothing_dropped():
    result = q.QualityPipeline([q.DocumentWords(), q.CurlyBraces()]).run(["short.", "{ }", GOOD])
    assert result.top_rule().rule == "document_words"   # both dropped 1: the first in pipeline order
    clean = q.QualityPipeline([q.CurlyBraces()]).run([GOOD])
    assert clean.top_rule() is None and clean.dropped_fraction() == 0.0
    assert q.QualityPipeline().run([]).dropped_fraction() == 0.0


def test_pipeline_rejects_non_strings_and_duplicate_rule_names():
    with pytest.raises(TypeError, match=r"docs\[1\]"):
        q.QualityPipeline().run(["fine", 3])
    with pytest.raises(ValueError, match="unique"):
        q.QualityPipeline([q.CurlyBraces(), q.CurlyBraces()])
