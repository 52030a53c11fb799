"""SentenceEncoder against sentence-transformers: the real all-MiniLM-L6-v2, and every pooling mode.

all-MiniLM-L6-v2 is loaded by both from the same installed directory; the vectors must agree to a
cosine of at least 0.99999 (measured: 1 - 1e-7; max abs difference about 2e-7).
"""
import numpy as np
import pytest

from oracles import require
from minifm.embeddings import POOLING_MODES, SentenceEncoder, cosine_similarity, l2_normalise, pool
from minifm.models import BERT

torch = require("torch")

SENTENCES = [
    "A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell sharply on Monday.",
    "The quick brown fox jumps over the lazy dog!", "東京は日本の首都です。", "naïve café, déjà vu — Ünïcödé",
    "Mara lives in Tollby.", "Mara vive en Tollby.", "Mara wohnt in Tollby.", "", "   ",
    "emoji 😀🎉 and symbols ©®™ and numbers 3.14159 2,718", "word " * 400,  # longer than max_seq_length 256
]


@pytest.fixture(scope="module")
def both_encoders(minilm_dir):
    sentence_transformers = require("sentence_transformers")
    return (SentenceEncoder.from_pretrained(minilm_dir),
            sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu"))


def test_minilm_embeddings_equal_sentence_transformers(both_encoders):
    ours, theirs = both_encoders
    mine = ours.encode(SENTENCES, batch_size=4)
    expected = theirs.encode(SENTENCES, batch_size=4)
    assert mine.shape == expected.shape == (len(SENTENCES), 384) and mine.dtype == np.float32
    cosines = (mine * expected).sum(axis=1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.99999, cosines
    np.testing.assert_allclose(mine, expected, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-6)  # the Normalize module


def test_the_short_name_and_similarities(both_encoders):
    encoder = SentenceEncoder.from_pretrained("all-minilm-l6-v2")
    assert encoder.pooling == "mean" and encoder.normalize and encoder.max_seq_length == 256
    vectors = encoder.encode(["A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell sharply."])
    similarity = cosine_similarity(vectors, vectors)
    assert similarity[0, 1] > similarity[0, 2] + 0.3  # paraphrases are close, unrelated sentences are not
    assert encoder.encode("one sentence").shape == (384,)


def test_bert_hidden_states_equal_transformers(minilm_dir):
    transformers = require("transformers")
    tokenizers = require("tokenizers")
    ids = np.array([tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json")).encode(
        "The cat sat on the mat, naïvely. 東京").ids])
    reference = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(BERT.from_pretrained(minilm_dir)(ids).data, expected, atol=2e-5)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pooling_modes_equal_sentence_transformers_pooling(mode):
    require("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Pooling

    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 5, 8)).astype(np.float32)  # (B, T, d)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    pooling = Pooling(8, pooling_mode="mean_sqrt_len_tokens" if mode == "mean_sqrt_len" else mode)
    features = pooling({"token_embeddings": torch.tensor(hidden), "attention_mask": torch.tensor(mask)})
    np.testing.assert_allclose(pool(hidden, mask, mode), features["sentence_embedding"].numpy(), atol=1e-6)


def test_normalise_and_bad_inputs(both_encoders):
    vectors = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalise(vectors), [[0.6, 0.8], [0.0, 0.0]])  # a zero vector stays zero
    encoder = both_encoders[0]
    with pytest.raises(TypeError, match=r"sentences\[1\] must be a str"):
        encoder.encode(["fine", 3])
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode(["fine"], batch_size=0)
    with pytest.raises(ValueError, match="pooling mode"):
        pool(np.zeros((1, 2, 3)), np.ones((1, 2)), "median")


def test_unsupported_modules_are_named(tmp_path, minilm_dir):
    import json
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(minilm_dir, copy)
    modules = json.loads((copy / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="sentence_transformers.models.Dense"):
        SentenceEncoder.from_pretrained(copy)
