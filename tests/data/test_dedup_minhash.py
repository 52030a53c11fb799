"""MinHash estimates vs exact Jaccard, the LSH S-curve and parameter choice, planted near duplicates."""
import numpy as np
import pytest

from minifm.data import dedup


def random_docs(rng, n_docs, n_words=120, vocab=5000):
    return [" ".join(f"w{k}" for k in rng.integers(0, vocab, size=n_words)) for _ in range(n_docs)]


def edit_words(rng, text, n_edits):
    words = text.split()
    for i in rng.choice(len(words), size=n_edits, replace=False):
        words[i] = f"edit{rng.integers(10**9)}"
    return " ".join(words)


def test_minhash_estimate_matches_exact_jaccard_within_statistical_bound(rng):
    hasher = dedup.MinHasher(num_perm=256, seed=3)
    base = random_docs(rng, 1, n_words=200)[0]
    variants = [edit_words(rng, base, k) for k in (0, 2, 5, 10, 20, 40, 80, 150)]
    signatures = hasher.signatures([base] + variants)
    base_shingles = dedup.shingles(base)
    for row, text in enumerate(variants, start=1):
        exact = dedup.jaccard(base_shingles, dedup.shingles(text))
        estimate = dedup.estimated_jaccard(signatures[0], signatures[row])
        sd = np.sqrt(exact * (1 - exact) / 256)
        assert abs(estimate - exact) <= 4.5 * sd + 1e-9, (exact, estimate)


def test_minhash_estimates_are_unbiased_over_many_pairs(rng):
    hasher = dedup.MinHasher(num_perm=64, seed=0)
    a_docs = random_docs(rng, 40, n_words=80, vocab=300)
    b_docs = [edit_words(rng, d, 15) for d in a_docs]
    signatures = hasher.signatures(a_docs + b_docs)
    errors = []
    for i in range(40):
        exact = dedup.jaccard(dedup.shingles(a_docs[i]), dedup.shingles(b_docs[i]))
        errors.append(dedup.estimated_jaccard(signatures[i], signatures[40 + i]) - exact)
    # the mean of 40 errors with sd <= 0.5/sqrt(64) each: |mean| well within 4 standard errors
    assert abs(np.mean(errors)) < 4 * 0.0625 / np.sqrt(40)


def test_signatures_are_seeded_and_independent_of_batching(rng):
    docs = random_docs(rng, 30)
    one = dedup.MinHasher(seed=1).signatures(docs)
    small_chunks = dedup.MinHasher(seed=1, chunk_columns=50).signatures(docs)
    np.testing.assert_array_equal(one, small_chunks)
    singles = np.stack([dedup.MinHasher(seed=1).signatures([d])[0] for d in docs[:5]])
    np.testing.assert_array_equal(one[:5], singles)
    assert not np.array_equal(one, dedup.MinHasher(seed=2).signatures(docs))
    assert one.dtype == np.uint64 and one.shape == (30, 128)


def test_shingles_and_jaccard_basics():
    assert dedup.shingles("A b  c d e f", size=5) == {"a b c d e", "b c d e f"}
    assert dedup.shingles("two words", size=5) == {"two words"}
    assert dedup.shingles("", size=5) == set()
    assert dedup.shingles("abcd", kind="char", size=3) == {"abc", "bcd"}
    assert dedup.jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    with pytest.raises(ValueError, match="kind"):
        dedup.shingles("x", kind="sentence")


def test_s_curve_and_chosen_parameters():
    s = np.linspace(0, 1, 101)
    p = dedup.candidate_probability(s, bands=12, rows=10)
    assert p[0] == 0.0 and p[-1] == 1.0 and np.all(np.diff(p) >= 0)
    for threshold in (0.5, 0.8, 0.9):
        bands, rows = dedup.lsh_params(threshold, 128)
        assert bands * rows <= 128
        # the S-curve's steep part straddles the threshold
        assert dedup.candidate_probability(threshold - 0.2, bands, rows) < 0.5 < dedup.candidate_probability(
            min(threshold + 0.1, 1.0), bands, rows)
    b_recall, r_recall = dedup.lsh_params(0.8, 128, 0.2, 0.8)
    b_equal, r_equal = dedup.lsh_params(0.8, 128, 0.5, 0.5)
    assert dedup.candidate_probability(0.8, b_recall, r_recall) >= dedup.candidate_probability(0.8, b_equal, r_equal)


def test_lsh_finds_planted_near_duplicates_and_not_unrelated_docs(rng):
    originals = random_docs(rng, 60, n_words=150)
    planted = {}
    docs = list(originals)
    for source in rng.choice(60, size=15, replace=False):
        planted[len(docs)] = int(source)
        docs.append(edit_words(rng, originals[source], 2))    # Jaccard ~ 0.88
    rule = dedup.MinHashDedup(threshold=0.8)
    found = {dropped: kept for dropped, kept, _ in rule.find_duplicates(docs)}
    assert found == planted
    results = rule.run(docs)
    assert [i for i, r in enumerate(results) if not r.keep] == sorted(planted)
    assert all(results[i].duplicate_of == planted[i] for i in planted)


def test_exact_dedup_normalises_and_reports_first_occurrence():
    docs = ["Hello  World", "other", "hello world", "HELLO WORLD\n", "other "]
    results = dedup.ExactDedup().run(docs)
    assert [r.keep for r in results] == [True, True, False, False, False]
    assert [r.duplicate_of for r in results] == [None, None, 0, 0, 1]


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="threshold"):
        dedup.MinHashDedup(threshold=1.5)
    with pytest.raises(ValueError, match="num_perm"):
        dedup.MinHasher(num_perm=0)
    with pytest.raises(ValueError, match="bands"):
        dedup.MinHashDedup(bands=4)
