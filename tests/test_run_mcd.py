"""training/run_mcd.py end to end on the built-in data: main([...]) in-process, and 2 CPU processes."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoProcessor, AutoTokenizer, pipeline

from modeling_mcd import MCDModel

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "training" / "run_mcd.py"

# A run that takes seconds: tiny towers, a few steps, small synthetic splits.
TINY_RUN = [
    "--synthetic_num_train", "48",
    "--synthetic_num_test", "15",
    "--image_size", "32",
    "--base_image_size", "36",
    "--patch_size", "8",
    "--vision_hidden_size", "24",
    "--vision_layers", "1",
    "--vision_heads", "2",
    "--text_hidden_size", "24",
    "--text_layers", "1",
    "--text_heads", "2",
    "--projection_dim", "16",
    "--tokenizer_vocab_size", "120",
    "--per_device_train_batch_size", "6",
    "--max_steps", "3",
    "--warmup_steps", "0",
    "--logging_steps", "1",
    "--save_strategy", "no",
    "--use_cpu", "true",
]


def _load_script():
    """Import training/run_mcd.py as a module (it is a script, not part of the package)."""
    if "run_mcd" not in sys.modules:
        spec = importlib.util.spec_from_file_location("run_mcd", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["run_mcd"] = module  # dataclasses look their module up while the script executes
        spec.loader.exec_module(module)
    return sys.modules["run_mcd"]


@pytest.mark.slow
def test_main_trains_evaluates_and_saves_a_loadable_model(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    metrics = run_mcd.main(TINY_RUN + ["--output_dir", str(out), "--eval_max_samples", "12"])
    for name in ("synthetic_zero_shot_top1", "synthetic_retrieval_text_to_image_R@1", "synthetic_retrieval_mean_recall"):
        assert 0.0 <= metrics[name] <= 1.0
    export = out / "mcd-model"
    model = AutoModel.from_pretrained(export)
    assert type(model) is MCDModel
    state = model.state_dict()
    assert not any(key.startswith(("teacher", "mlm_head")) for key in state)
    card = (export / "README.md").read_text()
    assert "MCD" in card and "synthetic_zero_shot_top1" in card
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["chance_synthetic_zero_shot_top1"] == pytest.approx(1 / 30, rel=0.5)

    processor = AutoProcessor.from_pretrained(export)
    # the trained tokenizer is kept in output_dir, so a resumed run (and every process) uses the same vocab
    assert AutoTokenizer.from_pretrained(out / "tokenizer").get_vocab() == processor.tokenizer.get_vocab()
    from PIL import Image

    image = Image.new("RGB", (40, 40), (220, 30, 30))
    classifier = pipeline("zero-shot-image-classification", model=str(export))
    result = classifier(image, candidate_labels=["red circle", "blue square"])
    assert {r["label"] for r in result} == {"red circle", "blue square"}
    inputs = processor(text=["a red circle"], images=[image], return_tensors="pt", padding=True)
    assert torch.isfinite(model(**inputs).logits_per_image).all()


@pytest.mark.slow
def test_evaluation_during_training_logs_the_tasks_with_the_losses(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    args = TINY_RUN + ["--output_dir", str(out), "--eval_max_samples", "9", "--eval_strategy", "steps", "--eval_steps", "2"]
    args[args.index("--save_strategy") + 1] = "steps"
    run_mcd.main(args + ["--save_steps", "3"])
    history = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    evaluations = [entry for entry in history if "eval_synthetic_zero_shot_top1" in entry]
    # every --eval_steps, and at the last step (the Trainer evaluates at the end of a step-based run)
    assert [entry["step"] for entry in evaluations] == [2, 3]
    losses = [entry for entry in history if "eval_loss" in entry]
    assert [entry["step"] for entry in losses] == [2, 3] and losses[0]["eval_loss"] > 0
    assert 0.0 <= evaluations[0]["eval_synthetic_retrieval_mean_recall"] <= 1.0


def test_evaluation_during_training_needs_a_validation_split(tmp_path):
    run_mcd = _load_script()
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"image": "a.png", "caption": "a red circle"}\n')
    with pytest.raises(ValueError, match="validation_split"):
        run_mcd.main(TINY_RUN + ["--output_dir", str(tmp_path / "o"), "--dataset", str(jsonl), "--eval_strategy", "steps"])


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    args = [a for a in TINY_RUN] + ["--output_dir", str(out), "--eval_synthetic", "false"]
    args[args.index("--save_strategy") + 1] = "steps"
    run_mcd.main(args + ["--save_steps", "2", "--max_steps", "2"])
    assert (out / "checkpoint-2").is_dir()
    run_mcd.main(args + ["--save_steps", "2", "--max_steps", "4"])
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3, 4]  # steps 1-2 from the first run, 3-4 after resuming


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_cpu_run(tmp_path):
    out = tmp_path / "run2"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
        *TINY_RUN, "--output_dir", str(out), "--eval_max_samples", "12",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "mcd-model" / "model.safetensors").is_file()
    assert type(AutoModel.from_pretrained(out / "mcd-model")) is MCDModel
    metrics = json.loads((out / "eval_results.json").read_text())
    assert "synthetic_zero_shot_top1" in metrics
    assert "'contrastive_loss'" in result.stdout + result.stderr  # every term is logged
