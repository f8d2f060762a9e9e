"""HF configs stored inside our own config.json."""

import json

from transformers import PretrainedConfig


def config_dict(config: PretrainedConfig) -> dict:
    """The full config as plain JSON values, so it compares equal after a save/load."""
    return json.loads(config.to_json_string(use_diff=False))
