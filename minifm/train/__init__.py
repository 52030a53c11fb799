"""Training: the one shared loop, the knobs every stage shares, and one file per lifecycle stage.

    config.py     TrainConfig (transformers' TrainingArguments names) and PostTrainingConfig
    loop.py       TrainingLoop: schedule, metrics, progress bar, checkpoints, bit-for-bit resume,
                  Ctrl-C / SIGTERM and NaN safety around a step kind; SupervisedStep (loss_fn +
                  batches + gradient accumulation) with Trainer / train(); every stage runs through it
    pretrain.py   causal LM (GPT), masked LM (BERT), span corruption (T5); held-out perplexity
    sft.py, reward.py, dpo.py   supervised post-training stages (SupervisedStep)
    ppo.py        PPO / GRPO (and PPO-ptx) as a step kind of the loop, one iteration per step
    rl_math.py    the formulas of RLHF: KL estimators, GAE, whitening, clipped losses, Bradley-Terry, DPO
    plots.py      loss curves and other figures (matplotlib, Agg backend)

Submodules are imported on demand (`from minifm.train.loop import train`), so importing the
package stays cheap.
"""
