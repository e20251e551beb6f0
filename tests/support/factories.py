"""Builders for test inputs: real open_clip checkpoints written by open_clip's own code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# A real open_clip CLIP architecture small enough to build in milliseconds (open_clip's own
# tests/test_modern_text.py trick). The default tokenizer has 49408 tokens, so the text tower keeps
# that vocabulary and a narrow width.
TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 1},
}


def write_open_clip_checkpoint(directory: Path, *, seed: int = 0, pickle_too: bool = False) -> Path:
    """Save a tiny CLIP the way open_clip's `save_for_hf` does (its config writer, safetensors
    `save_file` of the state dict, and `torch.save` for the pickle variant). `save_for_hf` itself
    insists on a Hugging Face tokenizer, which the default CLIP tokenizer is not."""
    import open_clip
    import safetensors.torch
    import torch
    from open_clip.push_to_hf_hub import save_config_for_hf

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CFG)
    # What open_clip.create_model sets on every model it builds; save_config_for_hf reads them.
    model.visual.image_mean = open_clip.OPENAI_DATASET_MEAN  # type: ignore[union-attr]
    model.visual.image_std = open_clip.OPENAI_DATASET_STD  # type: ignore[union-attr]
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    safetensors.torch.save_file(state, str(directory / "open_clip_model.safetensors"))
    if pickle_too:
        torch.save(state, directory / "open_clip_pytorch_model.bin")
    save_config_for_hf(model, directory / "open_clip_config.json", model_config=TINY_CLIP_CFG)
    return directory
