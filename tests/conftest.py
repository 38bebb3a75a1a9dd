"""Shared tiny fixtures: seeded, odd-sized configs that build in milliseconds (never full-size models)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import HfApi, RepoUrl
from safetensors.torch import load_file
from transformers import BertConfig, BertTokenizer, ViTConfig
from transformers.image_processing_utils import BaseImageProcessor

from modeling_mcd import MCDConfig, MCDModel, MCDProcessor
from modeling_mcd.hub.run_record import RECORD_NAME
from modeling_mcd.trainer.builder import evaluation_image_processor

# Tests never reach a hub: everything they load is made locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Keep the 2-core CI machine responsive when several torch processes run.
torch.set_num_threads(1)

#: Words of the tiny WordPiece vocabulary: enough for prompts like "a photo of a red circle".
TINY_WORDS = [
    "a",
    "an",
    "the",
    "photo",
    "of",
    "drawing",
    "picture",
    "this",
    "is",
    "and",
    "with",
    "on",
    "in",
    "big",
    "small",
    "large",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "black",
    "white",
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "cat",
    "dog",
    "car",
    "ship",
    "plane",
    "bird",
    "two",
    "three",
    "one",
    ".",
    ",",
]
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


def tiny_image_processor() -> BaseImageProcessor:
    """The image processor a run saves (the evaluation view of docs/method.md §1), at the tiny size."""
    return evaluation_image_processor(TINY_IMAGE_SIZE)


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
    perturb = lambda x, k: torch.nn.functional.normalize(x + 0.5 * noise[k], dim=-1)
    return {
        "image": u,
        "text": v,
        "aug": aug,
        "t_image": perturb(u, 0),
        "t_text": perturb(v, 1),
        "t_aug": perturb(aug, 2),
    }


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


#: Prepended to a script run by [`run_without_package`]: importing `modeling_mcd` raises, so everything must come
#: from the code files inside a saved folder, as it would from the Hub.
BLOCK_PACKAGE = textwrap.dedent(
    """
    import sys
    class BlockPackage:
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_mcd" or name.startswith("modeling_mcd."):
                raise ImportError("modeling_mcd must not be imported in this process")
    sys.meta_path.insert(0, BlockPackage())
    """
)


def run_without_package(script: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `script` (Python source) with `args` in a fresh interpreter that cannot import `modeling_mcd` (offline)."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_PACKAGE + textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=timeout,
    )


# Loads a folder with the Auto classes and the zero-shot pipeline, `trust_remote_code=True`, and prints what it got
# (run it with `run_without_package`: everything must come from the code files inside the folder).
REMOTE_CODE_SCRIPT = """
    import json, sys
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline
    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    image = Image.new("RGB", (33, 29), (200, 30, 30))
    inputs = processor(text=["a red circle", "a blue square"], images=[image], return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = model(**inputs).logits_per_image
    classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
    result = classifier(image, candidate_labels=["a red circle", "a blue square"], hypothesis_template="{}")
    print(json.dumps({
        "model_module": type(model).__module__,
        "processor": type(processor).__name__,
        "logits": logits.tolist(),
        "scores": {r["label"]: r["score"] for r in result},
        "package_imported": "modeling_mcd" in sys.modules,
    }))
"""


def remote_code_report(folder: str | Path, cwd: Path) -> dict:
    """Run [`REMOTE_CODE_SCRIPT`] on `folder` in a process that cannot import `modeling_mcd`; its JSON report."""
    result = run_without_package(REMOTE_CODE_SCRIPT, str(folder), cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


#: What an exported MCDModel folder holds at least, and so what a push of it uploads.
EXPORTED_FILES = {
    "model.safetensors",
    "config.json",
    "configuration_mcd.py",
    "modeling_mcd.py",
    "processing_mcd.py",
    "processor_config.json",
    "tokenizer.json",
    "README.md",
    RECORD_NAME,
}


def training_only_keys(safetensors_path: Path) -> list[str]:
    """Weights of the teacher or the MLM head in a safetensors file (an inference folder has none)."""
    return [key for key in load_file(safetensors_path) if key.startswith(("teacher", "mlm_head"))]


@dataclass
class FakeHub:
    """The Hub, as far as `HfApi.create_repo` and `HfApi.upload_folder` see it: every call is recorded (with the
    `HfApi`'s token and the list of uploaded files), and an upload copies the folder into `root/<org>/<name>`,
    the local stand-in of the repository. Nothing reaches the network."""

    root: Path
    calls: list[dict] = field(default_factory=list)

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def named(self, call: str) -> list[dict]:
        return [entry for entry in self.calls if entry["call"] == call]


def install_fake_hub(monkeypatch: pytest.MonkeyPatch, root: Path) -> FakeHub:
    """Patch `HfApi.create_repo` / `HfApi.upload_folder` with a [`FakeHub`] rooted at `root`."""
    hub = FakeHub(root)

    def create_repo(self, repo_id, **kwargs):
        hub.calls.append({"call": "create_repo", "repo_id": repo_id, "token": self.token, **kwargs})
        hub.repo_dir(repo_id).mkdir(parents=True, exist_ok=True)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        hub.calls.append(
            {
                "call": "upload_folder",
                "repo_id": repo_id,
                "folder_path": str(folder),
                "files": files,
                "token": self.token,
            }
            | kwargs
        )
        shutil.copytree(folder, hub.repo_dir(repo_id), dirs_exist_ok=True)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", oid="0")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return hub


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    """A [`FakeHub`] in `tmp_path/hub` for one test."""
    return install_fake_hub(monkeypatch, tmp_path / "hub")


def files_containing(root: Path, secret: str) -> list[str]:
    """Every file under `root` whose bytes contain `secret`."""
    needle = secret.encode()
    return [str(p) for p in Path(root).rglob("*") if p.is_file() and needle in p.read_bytes()]


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


def objective_terms(loss_fn, alpha: float = 0.0, **fields) -> dict[str, torch.Tensor]:
    """`loss_fn` (an `MCDLoss`) on the objective's tensors named by their `ObjectiveInputs` fields, at `alpha`."""
    from modeling_mcd.objective import ObjectiveInputs

    return loss_fn(ObjectiveInputs(**fields), alpha)
