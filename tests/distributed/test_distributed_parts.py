"""The parts of minifm.distributed that need no second process, and the promise that a run without
mpiexec imports nothing of MPI.

    the gradient hook      Tensor.register_post_accumulate_grad_hook: once per backward, after the last
                           contribution, with the final .grad; removable; leaves only
    the environment        the launchers' variables, read before mpi4py is imported
    the settings           MINIFM_DIST_* parsed and checked, errors naming the variable
    one-process World      every collective returns its input
    buckets, ZeRO's partition, the checksum
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import minifm as mf
from minifm.config import ConfigError
from minifm.distributed import (
    DistributedConfig, World, parameter_checksum, partition_parameters, rank_and_size_from_environment,
)
from minifm.distributed.buckets import make_buckets
from minifm.nn import Parameter


# ---------------------------------------------------------------------------- the gradient hook
def test_the_hook_runs_once_per_backward_with_the_final_gradient():
    w = mf.tensor(np.array([1.0, 2.0]), requires_grad=True, dtype=np.float64)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda leaf: seen.append(leaf.grad.copy()))
    loss = (w * 3.0).sum() + (w * w).sum()  # two uses of w: the hook must wait for both
    loss.backward()
    assert len(seen) == 1 and np.array_equal(seen[0], [5.0, 7.0])  # 3 + 2w
    (w * 1.0).sum().backward()  # accumulates: the hook sees the sum so far
    assert len(seen) == 2 and np.array_equal(seen[1], [6.0, 8.0])
    handle.remove()
    (w * 1.0).sum().backward()
    assert len(seen) == 2


def test_hooks_fire_from_the_last_layer_to_the_first_while_backward_goes_on():
    first = Parameter(np.ones((3, 3)))
    second = Parameter(np.ones((3, 3)))
    order = []
    for name, param in (("first", first), ("second", second)):
        param.register_post_accumulate_grad_hook(lambda leaf, name=name: order.append(name))
    x = mf.tensor(np.ones((2, 3)))
    ((x @ first) @ second).sum().backward()
    assert order == ["second", "first"]


def test_a_leaf_the_backward_does_not_reach_gets_no_call_and_non_leaves_are_refused():
    used, unused = Parameter(np.ones(2)), Parameter(np.ones(2))
    calls = []
    unused.register_post_accumulate_grad_hook(calls.append)
    (used * 2.0).sum().backward()
    assert calls == []
    with pytest.raises(RuntimeError, match="only leaf tensors"):
        (used * 2.0).register_post_accumulate_grad_hook(print)
    with pytest.raises(TypeError, match="hook must be callable"):
        used.register_post_accumulate_grad_hook(3)


# ---------------------------------------------------------------------------- environment and settings
def test_launchers_are_recognised_from_their_variables():
    assert rank_and_size_from_environment({}) is None
    assert rank_and_size_from_environment({"PMI_RANK": "1", "PMI_SIZE": "4"}) == (1, 4)
    assert rank_and_size_from_environment({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}) == (0, 2)
    with pytest.raises(ValueError, match="PMI_RANK=5 is not a rank of a world of PMI_SIZE=2"):
        rank_and_size_from_environment({"PMI_RANK": "5", "PMI_SIZE": "2"})


def test_settings_come_from_minifm_dist_variables_with_errors_naming_them():
    config = DistributedConfig.from_environment({"MINIFM_DIST_BUCKET_MB": "4", "MINIFM_DIST_OVERLAP": "off",
                                                 "MINIFM_DIST_ZERO": "1", "MINIFM_DIST_TIMEOUT": "30",
                                                 "MINIFM_DIST_CHECK_EVERY": "0"})
    assert (config.bucket_cap_bytes, config.overlap, config.zero_stage, config.timeout_s, config.check_every) == (
        4 * 1024 * 1024, False, 1, 30.0, 0)
    assert DistributedConfig.from_environment({}) == DistributedConfig()
    with pytest.raises(ConfigError, match="MINIFM_DIST_ZERO: .*zero_stage must be one of \\[0, 1\\], got 2"):
        DistributedConfig.from_environment({"MINIFM_DIST_ZERO": "2"})
    with pytest.raises(ConfigError, match="MINIFM_DIST_TIMEOUT must be a number, got 'soon'"):
        DistributedConfig.from_environment({"MINIFM_DIST_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match="MINIFM_DIST_OVERLAP must be one of"):
        DistributedConfig.from_environment({"MINIFM_DIST_OVERLAP": "maybe"})


def test_a_run_without_mpiexec_imports_nothing_of_mpi():
    code = ("import sys, minifm.cli, minifm.train.loop, minifm.distributed as d; w = d.get_world(); "
            "assert (w.rank, w.size) == (0, 1), w.describe(); "
            "assert not [m for m in sys.modules if m.startswith('mpi4py')], 'mpi4py was imported'")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PMI_", "OMPI_", "MV2_"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------- one process
def test_the_world_of_one_process_returns_its_inputs():
    world = World()
    assert (world.rank, world.size, world.is_writer, world.distributed) == (0, 1, True, False)
    values = np.array([1.0, 2.0])
    assert np.array_equal(world.allreduce(values, "max"), values)
    assert world.broadcast_bytes(b"abc") == b"abc"
    assert world.share_from_root(lambda: b"state", "a test") == b"state"
    world.check_same("anything", b"digest")
    world.barrier()


def test_ddp_over_one_process_leaves_the_gradients_as_they_are():
    from minifm.distributed import DistributedDataParallel

    first, second = Parameter(np.arange(3.0)), Parameter(np.ones((2, 2)))
    ddp = DistributedDataParallel([first, second], World(), bucket_cap_mb=1e-5)  # a bucket per parameter
    ((first * first).sum() + (second * 3.0).sum()).backward()
    ddp.finish_gradient_sync()
    assert np.array_equal(first.grad, [0.0, 2.0, 4.0]) and np.array_equal(second.grad, np.full((2, 2), 3.0))
    assert ddp.stats.buckets_sent_in_backward == 2


# ---------------------------------------------------------------------------- buckets, partition, checksum
def test_buckets_take_parameters_in_reverse_order_up_to_the_cap_one_dtype_each():
    params = [Parameter(np.zeros(100, np.float32)) for _ in range(5)] + [Parameter(np.zeros(10, np.float64))]
    buckets = make_buckets(params, cap_bytes=800)  # two float32 parameters of 400 bytes per bucket
    assert [[params.index(p) for p in b.params] for b in buckets] == [[4, 3], [2, 1], [5], [0]]
    assert all(len({p.data.dtype for p in b.params}) == 1 for b in buckets)
    big = make_buckets([Parameter(np.zeros(1000, np.float32))], cap_bytes=10)  # larger than the cap: alone
    assert len(big) == 1 and big[0].buffer.size == 1000 + 1  # + its used flag


def test_zero_partition_balances_the_elements_and_is_deterministic():
    params = [Parameter(np.zeros(size)) for size in (100, 10, 60, 50, 5, 40)]
    owners = partition_parameters(params, 2)
    load = [sum(p.data.size for p, owner in zip(params, owners) if owner == rank) for rank in (0, 1)]
    assert owners == partition_parameters(params, 2) and sorted(load) == [125, 140]  # 100+40 | 60+50+10+5
    assert partition_parameters(params, 1) == [0] * 6


def test_the_checksum_changes_with_any_element():
    array = np.random.default_rng(0).standard_normal((50, 20)).astype(np.float32)
    changed = array.copy()
    changed[17, 3] = np.nextafter(changed[17, 3], np.float32(np.inf))  # one bit of one element
    assert parameter_checksum(array) != parameter_checksum(changed)
    assert parameter_checksum(array) == parameter_checksum(array.copy())
