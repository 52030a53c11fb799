"""generate(..., streamer=): the tokens streamed equal the tokens returned; TextStreamer's text is final."""
import io

import numpy as np
import pytest

from minifm.models import GPT, GPTConfig
from minifm.sampling.generate import generate
from minifm.sampling.streamer import TextStreamer
from minifm.tokenizer import BPETokenizer


class Recorder:
    def __init__(self):
        self.calls = []

    def put(self, ids):
        self.calls.append(np.ravel(ids).tolist())

    def end(self):
        self.calls.append("end")


def _model(vocab=300):
    return GPT(GPTConfig(vocab_size=vocab, block_size=64, n_layer=1, n_head=2, n_embd=16, seed=3))


@pytest.mark.parametrize("do_sample", [False, True])
def test_streamed_tokens_are_the_generated_tokens(do_sample):
    model, recorder = _model(), Recorder()
    prompt = [[5, 6, 7]]
    out = generate(model, prompt, 9, do_sample=do_sample, seed=1, streamer=recorder)
    assert recorder.calls[0] == [5, 6, 7] and recorder.calls[-1] == "end"
    assert [token for call in recorder.calls[1:-1] for token in call] == out[0, 3:].tolist()


def test_left_padding_is_not_streamed_and_stopping_ends_the_stream():
    model, recorder = _model(), Recorder()
    first = generate(model, [[1, 2]], 1)[0, -1]
    out = generate(model, np.array([[0, 0, 1, 2]]), 8, attention_mask=np.array([[0, 0, 1, 1]]),
                   eos_token_id=int(first), streamer=recorder)
    assert recorder.calls == [[1, 2], [int(first)], "end"] and out.shape == (1, 5)


def test_streaming_needs_one_sequence():
    with pytest.raises(ValueError, match="streamer needs one sequence"):
        generate(_model(), [[1], [2]], 3, streamer=Recorder())
    with pytest.raises(ValueError, match="num_beams"):
        generate(_model(), [[1]], 3, num_beams=2, streamer=Recorder())


def test_text_streamer_never_prints_a_half_character():
    tokenizer = BPETokenizer.train(["héllo wörld 東京 " * 20], vocab_size=262)
    text = "東京 wörld"
    ids = list(text.encode())  # one token per byte: every multi-byte character is split
    stream = io.StringIO()
    streamer = TextStreamer(tokenizer, stream=stream)
    streamer.put([0])  # the prompt, skipped
    written = []
    for token in ids:
        streamer.put([token])
        written.append(stream.getvalue())
    assert all("\ufffd" not in part for part in written)
    assert written[-1] == text
    streamer.end()
    assert stream.getvalue() == text + "\n"
