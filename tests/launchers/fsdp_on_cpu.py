"""`python -m dvd.train` under accelerate's FSDP2 mode on CPU processes (start it with torchrun; gloo).

accelerate enables FSDP only on accelerator devices, while the sharding itself (torch's `fully_shard` over gloo)
runs on CPUs too. This sets accelerate's process state as it is on GPUs, so the trainer's FSDP2 path — DTensor
parameters, gathered checkpoints, sharded optimizer restore, unsharded validation — runs in the test suite.
"""

import os
import sys

from accelerate.state import PartialState
from accelerate.utils import DistributedType

os.environ["ACCELERATE_USE_FSDP"] = "true"
os.environ["FSDP_VERSION"] = "2"
PartialState(cpu=True).distributed_type = DistributedType.MULTI_GPU

from dvd.train import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
