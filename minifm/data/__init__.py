"""Data for minifm: the built-in tinyworld corpus, other sources, curation and batch builders.

    tinyworld      seeded fictional world: documents, instructions, grader, reward, preferences
    sources        user text files/folders, TRL-style JSONL, the python-stdlib code corpus
    rules          the Rule interface every curation step follows (quality filters and dedup)
    quality        C4/Gopher-style heuristic filters and the curation pipeline
    dedup          exact (hash) and near-duplicate (MinHash + LSH) removal
    conversations  TRL's dataset rows (prompt/completion, messages, prompt/chosen/rejected) -> token ids
    batches        causal-LM packing, BERT masking, T5 span corruption; post-training padding, collation
                   and shuffled batches
"""
