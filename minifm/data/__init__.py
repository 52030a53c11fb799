"""Data for minifm: the built-in tinyworld corpus, other sources, curation and batch builders.

    tinyworld   seeded fictional world: documents, instructions, grader, reward, preferences
    sources     user text files/folders, TRL-style JSONL, the python-stdlib code corpus
    quality     C4/Gopher-style heuristic filters and the curation pipeline
    dedup       exact (hash) and near-duplicate (MinHash + LSH) removal
    batches     causal-LM packing, BERT masking, T5 span corruption, SFT and preference batches
"""
