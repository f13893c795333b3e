"""The training program that runs in the trainer image: `python -m kubetune.trainer validate|stage|train`.

Heavy libraries (torch, transformers, peft, deepspeed) are imported inside the commands that need
them, so `--help`, config parsing and data validation stay fast and torch-free.
"""
