"""`minifm embed`: sentence vectors from a sentence encoder, and how similar the sentences are.

    minifm embed --model all-minilm-l6-v2 "A cat sits on the mat." "A kitten rests on a rug." "Stocks fell."
    minifm embed --model DIR --output vectors.npy TEXT...        (the (n, d) float32 array, np.save format)

Prints each sentence's vector (its first values and its norm) and the table of cosine similarities.
The model is a sentence-transformers directory (modules.json: pooling, normalisation), read by
minifm.embeddings.SentenceEncoder.
"""
from __future__ import annotations

import numpy as np

from minifm.cli.common import Command, check_output_file, config_values
from minifm.embeddings import SentenceEncoder, cosine_similarity

SHOWN_VALUES = 6


def add_embed_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH_OR_NAME",
                        help="a sentence-transformers directory or the short name all-minilm-l6-v2")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="the sentences to embed")
    parser.add_argument("--output", default=None, metavar="FILE.npy", help="also save the vectors as a .npy file")


def similarity_table(texts: list[str], similarity: np.ndarray, width: int = 28) -> str:
    """The cosine-similarity matrix as aligned text, rows and columns labelled by sentence number."""
    header = " " * 6 + "".join(f"{f'[{j}]':>8}" for j in range(len(texts)))
    lines = [header]
    for i, row in enumerate(similarity):
        lines.append(f"{f'[{i}]':<6}" + "".join(f"{value:8.4f}" for value in row))
    lines.append("")
    lines.extend(f"[{i}] {text if len(text) <= width * 2 else text[:width * 2 - 3] + '...'}"
                 for i, text in enumerate(texts))
    return "\n".join(lines)


def run_embed(args) -> int:
    config_values(args, [])  # embed has no settings file keys
    if args.output is not None:
        check_output_file(args.output, "--output")
    encoder = SentenceEncoder.from_pretrained(args.model)
    vectors = encoder.encode(args.texts)  # (n, d)
    for index, vector in enumerate(vectors):
        shown = ", ".join(f"{value:+.4f}" for value in vector[:SHOWN_VALUES])
        print(f"[{index}] ({vector.size} values, norm {np.linalg.norm(vector):.4f}) [{shown}, ...]")
    print("\ncosine similarity")
    print(similarity_table(args.texts, cosine_similarity(vectors, vectors)))
    if args.output is not None:
        with open(args.output, "wb") as handle:
            np.save(handle, vectors, allow_pickle=False)
        print(f"\nwrote {args.output} ({vectors.shape[0]} x {vectors.shape[1]} float32)")
    return 0


COMMANDS = [Command("embed", "sentence vectors and their cosine similarities (all-minilm-l6-v2)",
                    add_embed_arguments, run_embed)]
