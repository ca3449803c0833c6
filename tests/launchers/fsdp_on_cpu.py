"""`python -m dvd.train` under accelerate's FSDP2 mode on CPU processes (start it with torchrun; gloo).

It takes the settings `accelerate launch --config_file configs/accelerate/fsdp2.yaml` would pass on, but
accelerate enables FSDP only on accelerator devices, while the sharding itself (torch's `fully_shard` over gloo)
runs on CPUs too. So this sets accelerate's process state as it is on GPUs, and the trainer's FSDP2 path — DTensor
parameters, gathered checkpoints, sharded optimizer restore, unsharded validation — runs in the test suite.
"""

import os
import sys
from pathlib import Path

from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from accelerate.utils.launch import prepare_multi_gpu_env

config = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "fsdp2.yaml"
launch_args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(config), "-"]))
os.environ.update(
    {k: v for k, v in prepare_multi_gpu_env(launch_args).items() if k.startswith(("ACCELERATE_", "FSDP_"))}
)
PartialState(cpu=True).distributed_type = DistributedType.MULTI_GPU

from dvd.train import main

sys.exit(main(sys.argv[1:]))
