"""Shared tiny fixtures: seeded, odd-sized configs that build in milliseconds (never full-size models)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertTokenizer, ViTConfig, ViTImageProcessorPil

from modeling_mcd import MCDConfig, MCDModel, MCDProcessor

# Tests never reach a hub: everything they load is made locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Keep the 2-core CI machine responsive when several torch processes run.
torch.set_num_threads(1)

#: Words of the tiny WordPiece vocabulary: enough for prompts like "a photo of a red circle".
TINY_WORDS = (
    "a an the photo of drawing picture this is and with on in big small large "
    "red green blue yellow purple orange black white circle square triangle star cross "
    "cat dog car ship plane bird two three one . ,"
).split()
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

TINY_IMAGE_SIZE = 30  # odd multiple of the patch size: 5 x 5 patches of 6 px


def tiny_tokenizer() -> BertTokenizer:
    """A real WordPiece BERT tokenizer over `TINY_WORDS` (no download)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + TINY_WORDS)}
    return BertTokenizer(vocab=vocab, do_lower_case=True)


def tiny_config(projection_dim: int = 11, **kwargs) -> MCDConfig:
    vision = ViTConfig(
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=TINY_IMAGE_SIZE,
        patch_size=6,
    )
    text = BertConfig(
        hidden_size=20,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=33,
        vocab_size=len(SPECIAL_TOKENS) + len(TINY_WORDS),
        max_position_embeddings=40,
    )
    return MCDConfig.from_vision_text_configs(vision, text, projection_dim=projection_dim, **kwargs)


def tiny_image_processor() -> ViTImageProcessorPil:
    return ViTImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})


@pytest.fixture
def tiny_model() -> MCDModel:
    torch.manual_seed(0)
    return MCDModel(tiny_config()).eval()


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model) -> str:
    """A saved MCDModel folder with its processor: what `save_pretrained` gives a user."""
    folder = os.path.join(tmp_path, "mcd-tiny")
    tiny_model.save_pretrained(folder)
    MCDProcessor(image_processor=tiny_image_processor(), tokenizer=tiny_tokenizer()).save_pretrained(folder)
    return folder


#: Rows and width of the unit embeddings that the loss tests share: odd, small, more rows than 2.
EMBED_ROWS, EMBED_DIM = 5, 7


def unit(*shape: int, seed: int) -> torch.Tensor:
    """Seeded float64 rows of unit length, shape `shape` (normalised along the last axis)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


@pytest.fixture
def embeds() -> dict[str, torch.Tensor]:
    """Student u, v, ũ and a perturbed teacher ū, v̄, ū̃, all (EMBED_ROWS, EMBED_DIM) unit rows."""
    u, v, aug = (unit(EMBED_ROWS, EMBED_DIM, seed=seed) for seed in range(3))
    noise = unit(3, EMBED_ROWS, EMBED_DIM, seed=3)
    perturb = lambda x, k: torch.nn.functional.normalize(x + 0.5 * noise[k], dim=-1)  # noqa: E731
    return {"image": u, "text": v, "aug": aug, "t_image": perturb(u, 0), "t_text": perturb(v, 1), "t_aug": perturb(aug, 2)}


def comparable_config(config) -> dict:
    """`config.to_dict()` without the fields that legitimately change on save/load: where it was loaded
    from, the `auto_map` that `save_pretrained` writes, and `dtype` (`None` until the weights are saved,
    then the dtype they were saved in)."""
    volatile = ("_name_or_path", "auto_map", "dtype")

    def strip(d: dict) -> dict:
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k not in volatile}

    return strip(config.to_dict())


#: The real data shipped beside the repository (`../shared/data`); tests may read it, the product never does.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_worker(path: Path):
    """Import a `tests/_*_worker.py` script as a module (it is also run as a torchrun entry point)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_two_process_worker(worker_path: Path, out_dir: Path, timeout: int = 180) -> list[dict]:
    """Run `worker_path out_dir` under `torchrun --standalone --nproc_per_node 2` (gloo on CPU; --standalone
    picks a free port) and load each rank's `rank{r}.pt`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*command, str(worker_path), str(out_dir)],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        cwd=worker_path.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(2)]


def fixed_pretraining_batch(
    captions: list[str], masked: list[tuple[int, int]], seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """A batch for `MCDForPreTraining.forward` with no randomness left: pre-made views `(B, 3, S, S)` from
    `seed`, and an MLM copy of the captions with exactly the `(row, token)` positions in `masked` masked."""
    generator = torch.Generator().manual_seed(seed)
    shape = (2, len(captions), 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    pixel_values, aug_pixel_values = torch.randn(shape, generator=generator, dtype=dtype)
    tokenizer = tiny_tokenizer()
    text = tokenizer(captions, padding=True, return_tensors="pt")  # (B, L)
    mlm_input_ids, mlm_labels = text["input_ids"].clone(), torch.full_like(text["input_ids"], -100)
    for row, token in masked:
        mlm_labels[row, token] = text["input_ids"][row, token]
        mlm_input_ids[row, token] = tokenizer.mask_token_id
    return {
        "pixel_values": pixel_values,
        "aug_pixel_values": aug_pixel_values,
        **text,
        "mlm_input_ids": mlm_input_ids,
        "mlm_labels": mlm_labels,
    }
