"""Sampling: transformers' warper semantics (math written here + a torch re-implementation of the
warpers), compiled == reference, chi-square of seeded draws, seeds, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from kernel_helpers import compiled_path
from minifm.kernels import sampling as ks
from minifm.sampling import greedy, process_logits, sample, sample_from_uniforms


def _probs(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


# ---------------------------------------------------------------- the expected math, one warper at a time


def test_top_k_keeps_every_tie_at_the_kth_value(kernel_path):
    logits = np.array([[1.0, 3.0, 2.0, 3.0, 2.0, 0.5]])
    out = process_logits(logits, top_k=3)
    # the 3rd largest value is 2.0; both 2.0s are kept with the two 3.0s
    np.testing.assert_array_equal(np.isfinite(out[0]), [False, True, True, True, True, False])
    np.testing.assert_array_equal(out[0, np.isfinite(out[0])], logits[0, np.isfinite(out[0])])


def test_top_p_keeps_the_smallest_head_reaching_top_p(kernel_path, rng):
    logits = rng.standard_normal((5, 40)) * 2
    for top_p in (0.05, 0.5, 0.9, 0.999):
        out = process_logits(logits, top_p=top_p)
        for row in range(5):
            p = _probs(logits[row])
            order = np.argsort(-p)
            # token at descending rank r is kept iff the mass strictly above it is < top_p
            mass_above = np.concatenate([[0.0], np.cumsum(p[order])[:-1]])
            expected = np.zeros(40, dtype=bool)
            expected[order[mass_above < top_p]] = True
            np.testing.assert_array_equal(np.isfinite(out[row]), expected)


def test_min_p_removes_tokens_below_fraction_of_the_best(kernel_path, rng):
    logits = rng.standard_normal((4, 30)) * 2
    out = process_logits(logits, min_p=0.1)
    for row in range(4):
        p = _probs(logits[row])
        np.testing.assert_array_equal(np.isfinite(out[row]), p >= 0.1 * p.max())


def test_typical_p_keeps_the_most_typical_tokens(kernel_path, rng):
    logits = rng.standard_normal((4, 30)) * 2
    out = process_logits(logits, typical_p=0.6)
    for row in range(4):
        p = _probs(logits[row])
        entropy = -np.sum(p * np.log(p))
        distance = np.abs(-np.log(p) - entropy)
        order = np.argsort(distance)
        cumulative = np.cumsum(p[order])
        last = int(np.sum(cumulative < 0.6))  # the first rank whose cumulative mass reaches 0.6
        np.testing.assert_array_equal(np.isfinite(out[row]), distance <= distance[order[last]])


def test_temperature_and_repetition_penalty_math(kernel_path):
    logits = np.array([[2.0, -1.0, 0.5, 4.0], [1.0, 1.0, -2.0, 3.0]])
    input_ids = np.array([[0, 1, 1, 1], [3, 2, 3, 3]])  # repeats count once
    out = process_logits(logits, input_ids=input_ids, repetition_penalty=2.0, temperature=0.5)
    expected = np.array([[2.0 / 2, -1.0 * 2, 0.5, 4.0], [1.0, 1.0, -2.0 * 2, 3.0 / 2]]) / 0.5
    np.testing.assert_allclose(out, expected)


def test_min_tokens_to_keep_overrides_every_filter(kernel_path):
    logits = np.array([[10.0, 0.0, -1.0, -2.0, -3.0]])
    for options in (dict(top_k=1), dict(top_p=0.1), dict(min_p=0.9), dict(typical_p=0.01)):
        out = process_logits(logits, min_tokens_to_keep=3, **options)
        np.testing.assert_array_equal(np.isfinite(out[0]), [True, True, True, False, False], err_msg=str(options))


# ---------------------------------------------------------------- torch re-implementation of the warpers


def _torch_warpers(torch, scores, temperature, top_k, top_p, min_p, typical_p, keep):
    """transformers' warper chain written with torch ops (stable sorts fix the order among ties)."""
    neg_inf = -float("inf")
    if temperature != 1.0:
        scores = scores / temperature
    if top_k > 0:
        k = min(max(top_k, keep), scores.size(-1))
        kth = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, neg_inf)
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False, stable=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_remove = cumulative <= (1 - top_p)
        sorted_remove[..., -keep:] = False
        remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
        scores = scores.masked_fill(remove, neg_inf)
    if min_p is not None:
        probs = torch.softmax(scores, dim=-1)
        remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
        sorted_indices = torch.argsort(scores, descending=True, stable=True)
        sorted_remove = torch.gather(remove, -1, sorted_indices)
        sorted_remove[..., :keep] = False
        remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
        scores = scores.masked_fill(remove, neg_inf)
    if typical_p < 1.0:
        normalized = torch.nn.functional.log_softmax(scores, dim=-1)
        p = torch.exp(normalized)
        entropy = -(normalized * p).nansum(-1, keepdim=True)
        shifted = torch.abs((-normalized) - entropy)
        sorted_scores, sorted_indices = torch.sort(shifted, descending=False, stable=True)
        sorted_logits = scores.gather(-1, sorted_indices)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        last = (cumulative < typical_p).sum(dim=1).clamp(max=sorted_scores.shape[-1] - 1)
        sorted_remove = sorted_scores > sorted_scores.gather(1, last.view(-1, 1))
        sorted_remove[..., :keep] = False
        remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
        scores = scores.masked_fill(remove, neg_inf)
    return scores


@pytest.mark.parametrize("seed", range(6))
def test_matches_torch_reimplementation_of_transformers_warpers(kernel_path, seed):
    torch = pytest.importorskip("torch", reason="a torch re-implementation of transformers' warpers is the oracle")
    rng = np.random.default_rng(seed)
    # small integer logits make many ties; cut-offs are chosen away from exact cumulative sums
    logits = rng.integers(-4, 5, size=(6, 25)).astype(np.float64)
    for options in (
        dict(top_k=4), dict(top_p=0.83), dict(min_p=0.13), dict(typical_p=0.71),
        dict(temperature=0.7, top_k=7, top_p=0.91), dict(top_k=10, min_p=0.05, typical_p=0.93, min_tokens_to_keep=2),
    ):
        settings = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=None, typical_p=1.0, min_tokens_to_keep=1) | options
        expected = _torch_warpers(
            torch, torch.tensor(logits), settings["temperature"], settings["top_k"], settings["top_p"],
            settings["min_p"], settings["typical_p"], settings["min_tokens_to_keep"],
        ).numpy()
        np.testing.assert_array_equal(process_logits(logits, **options), expected, err_msg=str(options))


# ---------------------------------------------------------------- compiled == reference


@given(
    logits=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 200)), elements=st.floats(-20, 20)),
    top_k=st.sampled_from([0, 1, 3, 50]),
    top_p=st.sampled_from([1.0]) | st.floats(0.01, 0.99),
    min_p=st.sampled_from([None]) | st.floats(0.0, 1.0),
    typical_p=st.sampled_from([1.0]) | st.floats(0.01, 0.99),
    keep=st.integers(1, 4),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_compiled_filters_match_reference(logits, top_k, top_p, min_p, typical_p, keep, dtype):
    logits = logits.astype(dtype)
    with compiled_path("sampling"):
        out = ks.filter_logits(logits, top_k, top_p, min_p, typical_p, keep)
    expected = ks.filter_logits_reference(logits, top_k, top_p, min_p, typical_p, keep)
    assert out.dtype == logits.dtype
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vocab, kept", [(18, 9), (10, 5), (7, 2), (300, 150), (1000, 1)])
def test_cutoff_exactly_on_equal_logits_keeps_the_exact_count(kernel_path, dtype, vocab, kept):
    # equal logits: the cumulative mass reaches top_p = kept / vocab exactly at the kept-th token in
    # exact arithmetic; the rounding of the running sum must not add or drop a token on either path
    logits = np.zeros((2, vocab), dtype=dtype)
    out = process_logits(logits, top_p=kept / vocab)
    assert (np.isfinite(out).sum(axis=-1) == kept).all()
    # stable ascending order removes the lower indices first, so the highest indices survive
    assert np.isfinite(out[:, vocab - kept:]).all()
    typical = process_logits(logits, typical_p=kept / vocab)
    assert (np.isfinite(typical).sum(axis=-1) == vocab).all()  # equal distances: all tie at the cut-off


def test_compiled_and_reference_share_the_cutoff_tolerance():
    kernel = pytest.importorskip("minifm.kernels._sampling", reason="compiled kernels not built")
    assert kernel.KERNEL_MASS_TOLERANCE == ks.MASS_TOLERANCE


@pytest.mark.parametrize("vocab", [1, 50257])
def test_compiled_matches_reference_at_vocab_edges(vocab, rng):
    logits = (rng.standard_normal((3, vocab)) * 3).astype(np.float32)
    uniforms = rng.random(3)
    for options in (dict(top_k=50), dict(top_p=0.9), dict(min_p=0.05, typical_p=0.9)):
        with compiled_path("sampling"):
            out = process_logits(logits, **options)
            ids = sample_from_uniforms(out, uniforms)
        np.testing.assert_array_equal(out, ks.filter_logits_reference(logits, **options))
        np.testing.assert_array_equal(ids, ks.sample_from_uniforms_reference(out, uniforms))


# ---------------------------------------------------------------- draws


@pytest.mark.parametrize("options", [dict(top_k=5), dict(top_p=0.8), dict(min_p=0.2, temperature=0.8), dict()])
def test_draws_follow_the_truncated_distribution(kernel_path, options):
    logits = np.linspace(-2.0, 2.0, 10)
    draws = 20000
    kept = np.isfinite(process_logits(logits, **options)[0])
    expected = _probs(logits / options.get("temperature", 1.0)) * kept
    expected = expected / expected.sum()
    tokens = sample(np.tile(logits, (draws, 1)), np.random.default_rng(7), **options)
    counts = np.bincount(tokens, minlength=10)
    assert counts[~kept].sum() == 0  # a removed token is never drawn
    result = stats.chisquare(counts[kept], draws * expected[kept])
    assert result.pvalue > 1e-4, (counts, draws * expected)


def test_same_seed_same_tokens(kernel_path, rng):
    logits = rng.standard_normal((16, 100))
    first = sample(logits, np.random.default_rng(42), top_p=0.9, temperature=0.8)
    second = sample(logits, np.random.default_rng(42), top_p=0.9, temperature=0.8)
    third = sample(logits, np.random.default_rng(43), top_p=0.9, temperature=0.8)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.int64 and first.shape == (16,)
    assert not np.array_equal(first, third)


def test_inverse_cdf_picks_the_interval_holding_the_uniform(kernel_path):
    processed = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    for u, token in ((0.0, 0), (0.05, 0), (0.15, 1), (0.35, 2), (0.65, 3), (0.999, 3)):
        assert sample_from_uniforms(processed, np.array([u]))[0] == token
    holes = np.array([[-np.inf, 0.0, -np.inf, 0.0, -np.inf]])
    assert sample_from_uniforms(holes, np.array([0.0]))[0] == 1
    assert sample_from_uniforms(holes, np.array([0.9999999]))[0] == 3


def test_greedy_takes_the_first_of_equal_maxima(kernel_path):
    np.testing.assert_array_equal(greedy(np.array([[1.0, 3.0, 3.0], [5.0, 5.0, 0.0]])), [1, 0])


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "options, name",
    [
        (dict(temperature=0.0), "temperature"), (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"),
        (dict(min_p=1.5), "min_p"), (dict(min_p=-0.1), "min_p"), (dict(typical_p=0.0), "typical_p"),
        (dict(typical_p=2.0), "typical_p"), (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(min_tokens_to_keep=0), "min_tokens_to_keep"),
    ],
)
def test_invalid_settings_name_the_argument(kernel_path, options, name):
    value = next(iter(options.values()))
    with pytest.raises(ValueError, match=f"{name} must .* got {value!r}"):
        process_logits(np.zeros((1, 4)), **options)


def test_nan_and_empty_rows_raise(kernel_path):
    with pytest.raises(ValueError, match="NaN"):
        process_logits(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        greedy(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="row 1 has no token left"):
        sample_from_uniforms(np.array([[0.0, 1.0], [-np.inf, -np.inf]]), np.array([0.5, 0.5]))
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        sample(np.zeros((1, 3)), 123)
    with pytest.raises(ValueError, match=r"input_ids values must lie in \[0, 3\)"):
        process_logits(np.zeros((1, 3)), input_ids=np.array([[5]]), repetition_penalty=1.2)
