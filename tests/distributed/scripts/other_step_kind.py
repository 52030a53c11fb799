"""A step kind other than SupervisedStep (as PPO's) under mpiexec: every rank must get the same ValueError."""
import numpy as np

from minifm.distributed import is_raised_on_every_rank
from minifm.models import GPT, GPTConfig
from minifm.train.config import TrainConfig
from minifm.train.loop import TrainingLoop, make_optimizer


class OneIteration:
    def __init__(self, model, config):
        self.model = model
        self.optimizer = make_optimizer(model, config)
        self.extra_models = {}
        self.updating = False

    def run_step(self, step):
        return {"step": step + 1}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def progress(self, row):
        return {}


config = TrainConfig(max_steps=2, disable_tqdm=True)
model = GPT(GPTConfig(vocab_size=16, block_size=4, n_layer=1, n_head=1, n_embd=8))
try:
    TrainingLoop(OneIteration(model, config), config, stage="ppo").fit()
except ValueError as error:
    assert is_raised_on_every_rank(error)
    print(f"refused: {error}", flush=True)
