"""The three transformer families, built from the blocks in minifm.nn.

    gpt.py    GPT / GPTConfig      decoder-only (causal LM)
    bert.py   BERT / BERTConfig    encoder-only (masked LM, classification)
    t5.py     T5 / T5Config        encoder-decoder (cross-attention)
    heads.py  RewardModel, ValueModel  scalar heads on a GPT backbone (RLHF's reward model and critic)
    sizes.py  closed-form parameter counts, FLOPs per token, memory estimates
    config.py shared config/init helpers
"""
from minifm.models import sizes
from minifm.models.bert import BERT, BERTConfig
from minifm.models.gpt import GPT, GPTConfig
from minifm.models.heads import RewardModel, ValueModel
from minifm.models.t5 import T5, T5Config

__all__ = ["BERT", "BERTConfig", "GPT", "GPTConfig", "RewardModel", "T5", "T5Config", "ValueModel", "sizes"]
