"""Training: the one shared loop (loop.py) and one file per lifecycle stage.

    loop.py       TrainConfig, Trainer / train(): accumulation, clipping, schedule, eval, checkpoints,
                  bit-for-bit resume, Ctrl-C and NaN safety; every stage below runs through it
    pretrain.py   causal LM (GPT), masked LM (BERT), span corruption (T5); held-out perplexity
    plots.py      loss curves and other figures (matplotlib, Agg backend)
    sft.py, reward.py, ppo.py, dpo.py   post-training stages (see docs/post-training.md)

Submodules are imported on demand (`from minifm.train.loop import train`), so importing the
package stays cheap.
"""
