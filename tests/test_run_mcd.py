"""training/run_mcd.py end to end on the built-in data: main([...]) in-process, and 2 CPU processes."""

import contextlib
import importlib.util
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from _bad_corpus import write_bad_corpus
from conftest import EXPORTED_FILES, files_containing, install_fake_hub, remote_code_report, training_only_keys
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image
from transformers import AutoModel, AutoProcessor, AutoTokenizer, pipeline

from modeling_mcd import MCDModel
from modeling_mcd.data import BadSampleError, ImageTextDataset
from modeling_mcd.evaluation import load_model_and_processor
from modeling_mcd.objective.pairs import PADDING_PAIR_ID

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "training" / "run_mcd.py"

# A run that takes seconds: tiny towers, a few steps, small synthetic splits.
TINY_RUN = [
    "--synthetic_num_train",
    "48",
    "--synthetic_num_test",
    "15",
    "--image_size",
    "32",
    "--base_image_size",
    "36",
    "--patch_size",
    "8",
    "--vision_hidden_size",
    "24",
    "--vision_layers",
    "1",
    "--vision_heads",
    "2",
    "--text_hidden_size",
    "24",
    "--text_layers",
    "1",
    "--text_heads",
    "2",
    "--projection_dim",
    "16",
    "--tokenizer_vocab_size",
    "120",
    "--per_device_train_batch_size",
    "6",
    "--max_steps",
    "3",
    "--warmup_steps",
    "0",
    "--logging_steps",
    "1",
    "--save_strategy",
    "no",
    "--use_cpu",
    "true",
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
    for name in (
        "synthetic_zero_shot_top1",
        "synthetic_retrieval_text_to_image_R@1",
        "synthetic_retrieval_mean_recall",
    ):
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
    args = TINY_RUN + [
        "--output_dir",
        str(out),
        "--eval_max_samples",
        "9",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "2",
    ]
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
        run_mcd.main(
            TINY_RUN + ["--output_dir", str(tmp_path / "o"), "--dataset", str(jsonl), "--eval_strategy", "steps"]
        )


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
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        *TINY_RUN,
        "--output_dir",
        str(out),
        "--eval_max_samples",
        "12",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "mcd-model" / "model.safetensors").is_file()
    assert type(AutoModel.from_pretrained(out / "mcd-model")) is MCDModel
    metrics = json.loads((out / "eval_results.json").read_text())
    assert "synthetic_zero_shot_top1" in metrics
    assert "'contrastive_loss'" in result.stdout + result.stderr  # every term is logged


# ------------------------------------------------------------------------------- --push_to_hub
HUB_TOKEN = "hf_RunTokenThatMustNeverBeWritten"
PUSH_FLAGS = [
    "--push_to_hub",
    "true",
    "--hub_model_id",
    "org/x",
    "--hub_private_repo",
    "true",
    "--hub_token",
    HUB_TOKEN,
]


class _Capture(logging.Handler):
    """Keeps every formatted log record of the loggers it is attached to."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory):
    """The main job with `--push_to_hub` against the stand-in Hub (`conftest.FakeHub`), with a checkpoint saved
    on the way (it must stay local), every log line and printed line kept, and the `eval_preprocess` that the
    Trainer got (the training-time evaluation path)."""
    run_mcd = _load_script()
    root = tmp_path_factory.mktemp("pushed")
    out = root / "run"
    args = TINY_RUN + ["--output_dir", str(out), "--eval_max_samples", "12", "--log_level", "info"]
    args[args.index("--save_strategy") + 1] = "steps"
    received = {}

    class RecordingTrainer(run_mcd.MCDTrainer):
        def __init__(self, *a, **kwargs):
            received.update(kwargs)
            super().__init__(*a, **kwargs)

    capture, loggers = (
        _Capture(),
        [logging.getLogger(), logging.getLogger("run_mcd"), logging.getLogger("transformers")],
    )
    printed = io.StringIO()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(printed),
        contextlib.redirect_stderr(printed),
    ):
        hub = install_fake_hub(patch, root / "hub")
        patch.setattr(run_mcd, "MCDTrainer", RecordingTrainer)
        for logger in loggers:
            logger.addHandler(capture)
        try:
            metrics = run_mcd.main(args + ["--save_steps", "3"] + PUSH_FLAGS)
        finally:
            for logger in loggers:
                logger.removeHandler(capture)
    return SimpleNamespace(
        out=out,
        export=out / "mcd-model",
        hub=hub,
        repo=hub.repo_dir("org/x"),
        metrics=metrics,
        trainer_args=received["args"],
        eval_preprocess=received["eval_preprocess"],
        output="\n".join(capture.lines) + printed.getvalue(),
    )


@pytest.mark.slow
def test_main_job_pushes_the_exported_folder_once(pushed_run):
    assert (pushed_run.out / "checkpoint-3" / "optimizer.pt").is_file()  # the Trainer saved a checkpoint ...
    assert pushed_run.trainer_args.push_to_hub is False  # ... and was told not to push it
    (create,), (upload,) = pushed_run.hub.named("create_repo"), pushed_run.hub.named("upload_folder")
    assert (create["repo_id"], create["private"], create["exist_ok"]) == ("org/x", True, True)
    assert upload["repo_id"] == "org/x" and upload["folder_path"] == str(pushed_run.export)
    assert upload["commit_message"] == "End of training: 3 steps, objective mcd"
    assert create["token"] == upload["token"] == HUB_TOKEN
    files = upload["files"]
    assert files == sorted(os.listdir(pushed_run.export))
    assert EXPORTED_FILES <= set(files)
    assert not [name for name in files if "checkpoint" in name or name.endswith((".pt", ".bin", ".pth"))]
    assert training_only_keys(pushed_run.repo / "model.safetensors") == []


@pytest.mark.slow
def test_the_hub_token_is_written_and_logged_nowhere(pushed_run):
    assert (pushed_run.out / "checkpoint-3" / "training_args.bin").is_file()  # the pickled arguments are checked too
    assert files_containing(pushed_run.out, HUB_TOKEN) == []
    assert files_containing(pushed_run.hub.root, HUB_TOKEN) == []
    assert "pushed the inference model to https://huggingface.co/org/x" in pushed_run.output  # logs were captured
    assert HUB_TOKEN not in pushed_run.output
    assert "--hub_token '<redacted>'" in (pushed_run.repo / "README.md").read_text()


@pytest.mark.slow
def test_the_pushed_card_holds_the_run(pushed_run):
    card = (pushed_run.repo / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["pipeline_tag"] == "zero-shot-image-classification" and "base_model" not in header
    _, results = model_index_to_eval_results(header["model-index"])
    saved = json.loads((pushed_run.out / "eval_results.json").read_text())
    top1 = [r for r in results if r.task_type == "zero-shot-image-classification" and r.metric_type == "accuracy"]
    assert [(r.dataset_name, r.dataset_split) for r in top1] == [("synthetic", "test")]
    assert top1[0].metric_value == pytest.approx(saved["synthetic_zero_shot_top1"])
    assert {r.metric_name for r in results if r.task_type == "image-text-retrieval"} >= {"text→image R@1"}
    assert "training/run_mcd.py --synthetic_num_train 48" in card and "Recipe `training/configs/demo.yaml`" in card
    assert "| processes | 1 |" in card and "| device | cpu |" in card and "steps: 3" in card
    assert "| initialisation | from scratch |" in card
    assert '"org/x"' in card
    assert "The processor resizes the shorter side of an image to 32 px and centre-crops 32 × 32" in card


@pytest.mark.slow
def test_the_pushed_folder_loads_in_a_clean_process(pushed_run, tmp_path):
    report = remote_code_report(pushed_run.repo, tmp_path)
    assert report["model_module"].startswith("transformers_modules.") and report["package_imported"] is False
    model = MCDModel.from_pretrained(pushed_run.export).eval()
    processor = AutoProcessor.from_pretrained(pushed_run.export)
    image = Image.new("RGB", (33, 29), (200, 30, 30))  # the script's image and labels
    inputs = processor(text=["a red circle", "a blue square"], images=[image], return_tensors="pt", padding=True)
    with torch.inference_mode():
        expected = model(**inputs).logits_per_image
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, rtol=1e-5, atol=1e-5)
    assert report["scores"]["a red circle"] == pytest.approx(expected.softmax(-1)[0, 0].item(), abs=1e-5)


@pytest.mark.slow
def test_saved_processor_is_the_training_time_evaluation_view(pushed_run):
    """One image processor: a non-square image gives the same pixels through the Trainer's evaluation, the
    folder's processor (`AutoProcessor`, `mcd eval`) and the pipeline, and the pipeline the model's scores."""
    image = Image.fromarray(np.random.RandomState(7).randint(0, 256, (23, 57, 3), dtype=np.uint8))
    during_training = pushed_run.eval_preprocess([image])["pixel_values"]
    processor = AutoProcessor.from_pretrained(pushed_run.repo)
    saved = processor(images=[image], return_tensors="pt")["pixel_values"]
    assert saved.shape == (1, 3, 32, 32)
    torch.testing.assert_close(saved, during_training, rtol=0, atol=0)
    _, mcd_eval_preprocess, _ = load_model_and_processor(str(pushed_run.export))
    torch.testing.assert_close(mcd_eval_preprocess([image]), during_training, rtol=0, atol=0)
    # resize the shorter side (23 -> 32, 57 -> int(32 * 57 / 23) = 79), then centre-crop: not a squash to 32 x 32
    resized = np.asarray(image.resize((79, 32), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    reference = torch.from_numpy((resized[:, 23:55] - 0.5) / 0.5).permute(2, 0, 1)[None]
    torch.testing.assert_close(saved, reference, rtol=0, atol=1e-5)

    labels = ["red circle", "blue square", "green star"]
    classifier = pipeline("zero-shot-image-classification", model=str(pushed_run.repo))
    scores = {r["label"]: r["score"] for r in classifier(image, candidate_labels=labels, hypothesis_template="{}")}
    model = AutoModel.from_pretrained(pushed_run.repo).eval()
    with torch.inference_mode():
        probs = model(**processor(text=labels, images=[image], return_tensors="pt", padding=True)).logits_per_image
    for label, prob in zip(labels, probs.softmax(-1)[0].tolist()):
        assert scores[label] == pytest.approx(prob, abs=1e-6)


def test_push_to_hub_needs_a_repo_id_before_training(tmp_path):
    run_mcd = _load_script()
    with pytest.raises(ValueError, match="--hub_model_id"):
        run_mcd.main(TINY_RUN + ["--output_dir", str(tmp_path / "o"), "--push_to_hub", "true"])
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_pickled_files_in_a_run_folder_are_the_trainers_own_never_weights(pushed_run):
    """Weights are written as safetensors only; the Trainer's resume state (optimizer, scheduler, RNG, arguments) is
    its own business (tests/test_security.py: nothing of this package unpickles a file)."""
    pickled = sorted(p.name for p in pushed_run.out.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
    assert set(pickled) <= {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert "training_args.bin" in pickled  # the check saw the checkpoint
    assert (pushed_run.out / "checkpoint-3" / "model.safetensors").is_file()


ENV_TOKEN = "hf_EnvironmentTokenThatMustNeverBeWritten"


@pytest.mark.slow
def test_a_token_in_the_environment_is_written_and_logged_nowhere(tmp_path, monkeypatch):
    """`HF_TOKEN` (huggingface_hub's own lookup, no --hub_token): not in a log line, a printed line, the run folder
    (checkpoint included), the card or the pushed repository."""
    run_mcd = _load_script()
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    hub = install_fake_hub(monkeypatch, tmp_path / "hub")
    out = tmp_path / "run"
    args = TINY_RUN + ["--output_dir", str(out), "--eval_max_samples", "6", "--log_level", "info", "--save_steps", "3"]
    args[args.index("--save_strategy") + 1] = "steps"
    capture, printed = _Capture(), io.StringIO()
    loggers = [logging.getLogger(), logging.getLogger("run_mcd"), logging.getLogger("transformers")]
    for logger in loggers:
        logger.addHandler(capture)
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            run_mcd.main(args + ["--push_to_hub", "true", "--hub_model_id", "org/env"])
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
    assert [call["repo_id"] for call in hub.named("upload_folder")] == ["org/env"]  # the push did happen
    assert (out / "checkpoint-3" / "training_args.bin").is_file()
    assert files_containing(out, ENV_TOKEN) == [] and files_containing(hub.root, ENV_TOKEN) == []
    output = "\n".join(capture.lines) + printed.getvalue()
    assert "pushed the inference model" in output and ENV_TOKEN not in output


# ------------------------------------------------------------------------------------------- bad data
def _corpus_args(corpus, out) -> list[str]:
    """The tiny run on the hostile corpus: two whole epochs, the last short batch kept, no synthetic evaluation."""
    args = TINY_RUN + ["--output_dir", str(out), "--dataset", corpus.path, "--eval_synthetic", "false"]
    args[args.index("--max_steps") + 1] = "-1"
    return args + ["--num_train_epochs", "2", "--dataloader_drop_last", "false"]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    """A run on `_bad_corpus.write_bad_corpus` that records every sample the Trainer asks for: (row, pair id)."""
    run_mcd = _load_script()
    root = tmp_path_factory.mktemp("corpus_run")
    corpus = write_bad_corpus(root)
    requests = []

    class RecordingDataset(ImageTextDataset):
        def __getitem__(self, index):
            sample = super().__getitem__(index)
            requests.append((int(self.indices[index]), sample["pair_id"]))
            return sample

    capture = _Capture()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            run_mcd, "image_text_dataset", lambda rows, size, **kwargs: RecordingDataset(rows, size, **kwargs)
        )
        logging.getLogger().addHandler(capture)
        try:
            run_mcd.main(_corpus_args(corpus, root / "run"))
        finally:
            logging.getLogger().removeHandler(capture)
    return SimpleNamespace(corpus=corpus, out=root / "run", requests=requests, log="\n".join(capture.lines))


@pytest.mark.slow
def test_a_run_on_a_hostile_corpus_trains_every_good_row_exactly_once_per_epoch(corpus_run):
    corpus, requests = corpus_run.corpus, corpus_run.requests
    usable = len(corpus.good) + len(corpus.decode_bad)  # the rows not known bad before training
    assert len(requests) == 2 * usable  # two epochs: nothing more was read
    for epoch in (requests[:usable], requests[usable:]):
        # A caption file has one row a line: row r is line r + 1.
        trained = sorted(row + 1 for row, pair_id in epoch if pair_id != PADDING_PAIR_ID)
        placeholders = sorted(row + 1 for row, pair_id in epoch if pair_id == PADDING_PAIR_ID)
        assert trained == sorted(corpus.good)  # every good row once, no bad row, no row twice
        assert placeholders == sorted(corpus.decode_bad)  # rows found bad when decoded: seen by no loss term


@pytest.mark.slow
def test_a_run_on_a_hostile_corpus_logs_and_saves_every_skipped_row(corpus_run):
    corpus = corpus_run.corpus
    saved = [json.loads(line) for line in (corpus_run.out / "skipped_samples.jsonl").read_text().splitlines()]
    assert {record["file"] for record in saved} == {corpus.path}
    assert {record["line"]: (record["reason"], record["column"]) for record in saved} == corpus.bad
    assert len(saved) == len(corpus.bad)  # each row once, though the decode-time ones were met in both epochs
    counts = ", ".join(f"{reason}={n}" for reason, n in sorted(Counter(r for r, _ in corpus.bad.values()).items()))
    assert f"{len(corpus.bad)} rows of the training data were skipped ({counts})" in corpus_run.log
    assert f"skipping {corpus.path}:2: empty_line: an empty line" in corpus_run.log  # row by row, at warning level
    truncated = next(line for line, (reason, _) in corpus.bad.items() if reason == "truncated")
    assert f"skipping {corpus.path}:{truncated}, column 'image': truncated: " in corpus_run.log
    assert (corpus_run.out / "mcd-model" / "model.safetensors").is_file()  # the run completed


@pytest.mark.slow
def test_with_raise_the_first_bad_row_stops_the_run_naming_its_place(tmp_path):
    run_mcd = _load_script()
    corpus = write_bad_corpus(tmp_path)
    with pytest.raises(BadSampleError, match=rf"^empty_line: {re.escape(corpus.path)}:2: an empty line$"):
        run_mcd.main(_corpus_args(corpus, tmp_path / "run") + ["--on_bad_sample", "raise"])
    # A row found bad only when decoded stops the run when it is met.
    lines = Path(corpus.path).read_bytes().split(b"\n")
    truncated = next(line for line, (reason, _) in corpus.bad.items() if reason == "truncated")
    keep = [line for line in corpus.good] + [truncated]
    (tmp_path / "data" / "only.jsonl").write_bytes(b"\n".join(lines[line - 1].lstrip(b"\xef\xbb\xbf") for line in keep))
    where = rf"{re.escape(str(tmp_path / 'data' / 'only.jsonl'))}:{len(keep)}, column 'image'"
    with pytest.raises(BadSampleError, match=rf"^truncated: {where}: .*cut.jpg"):
        run_mcd.main(
            _corpus_args(corpus, tmp_path / "run2")
            + ["--dataset", str(tmp_path / "data" / "only.jsonl"), "--on_bad_sample", "raise"]
        )
