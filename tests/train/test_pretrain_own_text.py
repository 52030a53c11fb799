"""Your own text trains: one large .txt file (curated or not), one short document, the repository's
docs/ folder, and a folder the curation rules do not fit (the per-rule table in the log, one error
line with the way out), end to end through run_pretraining and the `minifm pretrain` command."""
import math
import re
from pathlib import Path

import pytest

from minifm import cli
from minifm.data import tinyworld
from minifm.data.quality import QualityPipeline
from minifm.data.sources import load_texts
from minifm.train.config import TrainConfig
from minifm.train.pretrain import MAX_CURATION_DROP, PretrainConfig, check_curation, run_pretraining

REPO_DOCS = Path(__file__).resolve().parents[2] / "docs"
TINY_MODEL = dict(block_size=32, n_layer=1, n_head=2, n_embd=16, vocab_size=300, eval_batches=1)
TINY_FLAGS = ["--max-steps", "2", "--block-size", "32", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
              "--vocab-size", "300", "--eval-batches", "1", "--per-device-train-batch-size", "4", "--disable-tqdm"]
# Markdown notes without sentences: headings and bullet lists fail the prose ("web") rules
NOTES = "# Shopping list {i}\n\n- apples\n- pears\n- bread\n- milk\n\n## Later\n\n- call Ivo\n- water the plants\n"


def tiny_train_config() -> TrainConfig:
    return TrainConfig(max_steps=2, per_device_train_batch_size=4, warmup_steps=1, eval_steps=2, disable_tqdm=True)


@pytest.fixture(scope="module")
def big_text_file(tmp_path_factory):
    """One clean 200+ KB .txt file: tinyworld's clean documents as paragraphs."""
    path = tmp_path_factory.mktemp("own-text") / "corpus.txt"
    path.write_text("\n\n".join(tinyworld.clean_corpus(size_bytes=210_000, seed=0)) + "\n", encoding="utf-8")
    assert path.stat().st_size > 200_000
    return path


@pytest.mark.parametrize("curate", [True, False])
def test_one_large_text_file_pretrains(tmp_path, big_text_file, curate):
    said = []
    config = PretrainConfig(corpus=str(big_text_file), curate=curate, **TINY_MODEL)
    summary = run_pretraining(tmp_path / "run", config, tiny_train_config(), log=said.append)
    assert summary["steps"] == 2 and math.isfinite(summary["val_loss"])
    split_line = re.fullmatch(rf"{re.escape(str(big_text_file))}: 21\d KB -> (\d+) documents \(split on blank lines "
                              r"into [\d,]+ paragraphs, merged to ~2,000 characters per document, at most 4,000\)",
                              said[0])
    assert split_line, said[0]
    n_documents = int(split_line.group(1))
    assert n_documents >= 60
    if curate:
        assert f"curation (web rules) kept {summary['curation_kept']} of {n_documents} documents" in said
        assert summary["curation_kept"] >= 0.9 * n_documents
    else:
        assert summary["documents"] == n_documents and summary["curation_kept"] is None
    assert summary["held_out_split"] == "document"
    assert any(line.endswith("chosen at random (a document-level split)") for line in said)
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_one_short_document_pretrains_with_a_token_level_split(tmp_path):
    path = tmp_path / "note.txt"
    path.write_text(" ".join(tinyworld.clean_corpus(size_bytes=6_000, seed=2)).replace("\n", " "), encoding="utf-8")
    said = []
    config = PretrainConfig(corpus=str(path), curate=False, val_fraction=0.1, **TINY_MODEL)
    summary = run_pretraining(tmp_path / "run", config, tiny_train_config(), log=said.append)
    assert said[0].startswith(f"{path}: ") and "-> 2 documents" in said[0]     # one 6 KB line, cut in two
    assert summary["held_out_split"] == "token" and summary["steps"] == 2
    assert any(re.fullmatch(r"held out the last [\d,]+ of [\d,]+ tokens \(10\.0%\), a token-level split since 2 "
                            r"documents are fewer than 20", line) for line in said)


def test_the_repository_docs_folder_trains_or_says_which_rules_to_try(tmp_path):
    """Whichever is true of docs/ as it stands: the web rules keep enough of it and it trains, or they drop
    (nearly) everything and the run stops with the table logged, one error line, nothing written, and the
    suggested preset then trains."""
    said = []
    config = PretrainConfig(corpus=str(REPO_DOCS), **TINY_MODEL)
    expected = QualityPipeline(preset="web").run(load_texts(REPO_DOCS))
    if expected.kept and expected.dropped_fraction() <= MAX_CURATION_DROP:
        summary = run_pretraining(tmp_path / "run", config, tiny_train_config(), log=said.append)
        assert summary["steps"] == 2 and summary["curation_kept"] == len(expected.kept)
        return
    with pytest.raises(ValueError) as refused:
        run_pretraining(tmp_path / "run", config, tiny_train_config(), log=said.append)
    message = str(refused.value)
    assert re.fullmatch(rf"curation kept {len(expected.kept)} of {expected.n_input} documents with the 'web' rules "
                        rf"\(table above; {expected.top_rule().rule} dropped {expected.top_rule().dropped}\); "
                        r"try --no-curate or --rules code", message), message
    assert expected.table() in said and "terminal_punctuation" in expected.table()
    assert not (tmp_path / "run").exists()
    summary = run_pretraining(tmp_path / "code", PretrainConfig(corpus=str(REPO_DOCS), rules="code", **TINY_MODEL),
                              tiny_train_config(), log=said.append)
    assert summary["steps"] == 2 and summary["curation_kept"] > 0


def test_the_command_prints_the_table_and_one_error_line(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(12):
        (notes / f"list{i:02}.md").write_text(NOTES.format(i=i), encoding="utf-8")
    argv = ["pretrain", "--corpus", str(notes), "--out", str(tmp_path), "--run-name", "r"] + TINY_FLAGS
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "\n" not in err.strip()
    assert err.startswith("minifm pretrain: error: curation kept 0 of 12 documents with the 'web' rules (table "
                          "above; document_words dropped 12); try --no-curate or --rules code")
    assert f"{notes} (12 files): " in out and "-> 12 documents" in out
    assert re.search(r"^document_words\s+12\s+12\s+100\.00%", out, re.MULTILINE)      # the per-rule table
    assert not (tmp_path / "r").exists()
    assert cli.main(argv + ["--no-curate"]) == 0                                 # the suggestion trains
    out, _ = capsys.readouterr()
    assert "a token-level split since 12 documents are fewer than 20" in out


def test_check_curation_lets_a_fitting_curation_pass_and_names_the_other_preset():
    said = []
    prose = ["Mara lives in the small town of Tollby, where the river bends twice before it reaches the sea.\n"
             "She keeps three cats and a dog, and every morning she walks with them to the bakery on the hill.\n"
             "The baker, who has known her for years, always saves a warm roll for her and a bone for the dog."]
    check_curation(QualityPipeline(preset="web").run(prose), "web", said.append)
    assert said == []
    code = QualityPipeline(preset="code").run(["x"])
    with pytest.raises(ValueError, match=r"^curation kept 0 of 1 documents with the 'code' rules \(table above; "
                                         r"document_words dropped 1\); try --no-curate or --rules web$"):
        check_curation(code, "code", said.append)
    assert said == [code.table()]
    nearly_all = QualityPipeline(preset="web").run(prose + ["too short."] * 20)    # 20 of 21 dropped: 95.2%
    with pytest.raises(ValueError, match="curation kept 1 of 21 documents"):
        check_curation(nearly_all, "web", said.append)
