"""`python -m dvd.train` under accelerate's DeepSpeed mode on CPU processes (start it with torchrun; gloo).

accelerate counts a DeepSpeed run on a machine without accelerators as one process, whatever the launcher started.
Initialising its process state for CPUs first (gloo, the real world size) and then asking for DeepSpeed gives the
state it has on GPUs, so the trainer's DeepSpeed path — ZeRO partitions, DeepSpeed's checkpoint files, float32
master weights — runs in the test suite. The ZeRO stage comes from ACCELERATE_DEEPSPEED_ZERO_STAGE.
"""

import os
import sys

from accelerate.state import PartialState

PartialState(cpu=True)
os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"

from dvd.train import main

sys.exit(main(sys.argv[1:]))
