"""`modeling_mcd.hub.push`, `model_card` and `run_record`: model cards rendered from the Jinja template and read back
with huggingface_hub, and the push of an exported folder, tested at the huggingface_hub boundary
(`HfApi`, patched by `fake_hub`)."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import (
    EXPORTED_FILES,
    files_containing,
    remote_code_report,
    run_without_package,
    tiny_config,
    training_only_keys,
)
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, VisionTextDualEncoderModel

from modeling_mcd.cli.main import main as mcd
from modeling_mcd.hub.model_card import (
    DEFAULT_TEMPLATE,
    eval_results,
    load_results,
    render_model_card,
    write_model_card,
)
from modeling_mcd.hub.push import HubTarget, check_inference_folder
from modeling_mcd.hub.run_record import TrainingRecord, recipe_record, training_record
from modeling_mcd.trainer.training_arguments import MCDTrainingArguments

REPO_ID = "some-org/mcd-tiny-b5"
METRICS = {"synthetic_zero_shot_top1": 0.123456, "synthetic_retrieval_text_to_image_R@1": 0.5, "mean_recall": 1.0}
CHANCE = {"synthetic_zero_shot_top1": 1 / 30, "synthetic_retrieval_text_to_image_R@1": 1 / 15}


@pytest.fixture(scope="module")
def training_args(tmp_path_factory):
    return MCDTrainingArguments(
        output_dir=str(tmp_path_factory.mktemp("run")),
        per_device_train_batch_size=5,
        learning_rate=3e-4,
        use_mlm=True,
        use_cpu=True,
        report_to="none",
    )


def _render(training_args, template_path=None, **kwargs):
    defaults = dict(
        repo_id=REPO_ID,
        dataset_description="seven captioned shapes",
        metrics=METRICS,
        chance=CHANCE,
        steps=7,
    )
    fields = {key: value for key, value in {**defaults, **kwargs}.items() if value is not None}
    record = training_record(training_args, **fields)
    return render_model_card(tiny_config(projection_dim=13, text_pooling="mean"), record, template_path)


def _metrics_table(text: str) -> dict[str, float]:
    """Rows of the Evaluation section's `| metric | value |` table, parsed back."""
    section = text.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\S+) \| ([0-9.]+) \|$", section, flags=re.MULTILINE)
    return {name: float(value) for name, value in rows}


def test_header_round_trips_through_huggingface_hub(training_args, tmp_path):
    card = _render(training_args)
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    assert loaded.data.pipeline_tag == "zero-shot-image-classification"
    assert loaded.data.library_name == "transformers"
    assert loaded.data.license == "apache-2.0"
    assert "mcd" in loaded.data.tags
    assert loaded.data.to_dict() == card.data.to_dict()
    # The header is plain YAML between the two `---` lines.
    header = path.read_text().split("---\n")[1]
    assert yaml.safe_load(header)["pipeline_tag"] == "zero-shot-image-classification"


def test_body_holds_the_run_and_the_metrics(training_args):
    text = _render(training_args).text
    assert _metrics_table(text) == {name: pytest.approx(value, abs=5e-5) for name, value in METRICS.items()}
    for name, value in CHANCE.items():
        assert f"{name} = {value:.4f}" in text
    # The usage snippet loads from the repo id, for the model, the processor and the pipeline.
    snippet = text.split("```python", 1)[1].split("```", 1)[0]
    assert snippet.count(f'"{REPO_ID}"') == 3
    assert text.count(f"# {REPO_ID.split('/')[-1]}\n") == 1  # the title
    assert "| projection dim | 13 |" in text and "| pooling (image / text) | pooler / mean |" in text
    assert "objective: `mcd` (MP-NCE + log-ratio distillation from an EMA teacher + MLM)" in text
    assert "steps: 7, global batch: 5, learning rate: 0.0003" in text  # 5 per device x 1 process
    assert "data: seven captioned shapes" in text


def test_without_metrics_or_training_args_the_card_says_so(training_args):
    text = _render(None, metrics=None, chance=None, steps=None).text
    assert "No evaluation was recorded for this export." in text and _metrics_table(text) == {}
    assert "steps: unknown, global batch: unknown, learning rate: unknown" in text
    assert "Chance levels" not in text


def test_missing_template_names_the_path(training_args, tmp_path):
    missing = tmp_path / "nowhere" / "card.md.jinja"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        _render(training_args, template_path=missing)
    assert DEFAULT_TEMPLATE.is_file()


def test_write_model_card_writes_readme(training_args, tmp_path):
    record = training_record(training_args, repo_id=REPO_ID, metrics=METRICS, steps=7)
    path = write_model_card(tmp_path, tiny_config(), record)
    assert path == str(tmp_path / "README.md")
    assert TrainingRecord.load(tmp_path) == record  # kept next to the card, for `mcd card` refreshes
    written = ModelCard.load(path)
    expected = render_model_card(tiny_config(), record)
    assert written.content.strip() == expected.content.strip()
    assert _metrics_table(written.text) == {name: pytest.approx(value, abs=5e-5) for name, value in METRICS.items()}


# ------------------------------------------------------------------------------------ card metadata
RUN_METRICS = {
    "synthetic_zero_shot_top1": 0.25,
    "synthetic_zero_shot_top5": 0.75,
    "synthetic_retrieval_image_to_text_R@1": 0.125,
    "cifar10_zero_shot_top1": 0.5,
}
RUN_SPLITS = {"synthetic_zero_shot": "test", "synthetic_retrieval": "test", "cifar10_zero_shot": None}


def _run_record(**kwargs) -> TrainingRecord:
    fields = dict(
        repo_id=REPO_ID,
        metrics=RUN_METRICS,
        chance={"synthetic_zero_shot_top1": 1 / 30},
        splits=RUN_SPLITS,
        datasets=["some-org/captions"],
        base_models=["google/vit-base-patch32-224-in21k", "google-bert/bert-base-uncased"],
    )
    return TrainingRecord(**{**fields, **kwargs})


def test_metadata_validates_with_huggingface_hub(tmp_path):
    """Offline validation: the header parses back into `ModelCardData`, and its model-index into the same
    `EvalResult`s (dataset, split, metric) through huggingface_hub's own parser."""
    card = render_model_card(tiny_config(), _run_record())
    header = yaml.safe_load(card.content.split("---\n")[1])
    assert header["pipeline_tag"] == "zero-shot-image-classification" and header["library_name"] == "transformers"
    assert header["license"] == "apache-2.0" and "mcd" in header["tags"]
    assert header["datasets"] == ["some-org/captions"]
    assert header["base_model"] == ["google/vit-base-patch32-224-in21k", "google-bert/bert-base-uncased"]
    name, results = model_index_to_eval_results(header["model-index"])
    assert name == REPO_ID.split("/")[-1]
    assert results == eval_results(_run_record()) and len(results) == len(RUN_METRICS)
    by_metric = {(r.dataset_name, r.task_type, r.metric_name): r for r in results}
    top1 = by_metric[("synthetic", "zero-shot-image-classification", "top-1 accuracy")]
    assert (top1.metric_type, top1.metric_value, top1.dataset_split) == ("accuracy", 0.25, "test")
    recall = by_metric[("synthetic", "image-text-retrieval", "image→text R@1")]
    assert (recall.metric_type, recall.metric_value) == ("recall", 0.125)
    assert by_metric[("cifar10", "zero-shot-image-classification", "top-1 accuracy")].dataset_split is None
    # ModelCardData accepts the header as the Hub reads it, and writes it back unchanged.
    assert ModelCardData(**header).to_dict() == header
    path = tmp_path / "README.md"
    card.save(path)
    assert ModelCard.load(path).data.to_dict() == card.data.to_dict()


def test_a_card_without_results_or_towers_has_no_model_index():
    header = render_model_card(tiny_config(), TrainingRecord()).data.to_dict()
    assert "model-index" not in header and "base_model" not in header and "datasets" not in header
    assert "model_name" not in header


USAGE_RUNNER = """
    import sys
    code = open(sys.argv[1]).read()
    exec(compile(code, "card-usage", "exec"))
    assert "modeling_mcd" not in sys.modules
    print("PROBS", probs.tolist())
"""


def _python_block(card_text: str) -> str:
    return card_text.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("stock", [False, True])
def test_the_cards_usage_code_runs_against_the_saved_folder(tiny_model_dir, tmp_path, stock):
    """The card's python block, exactly as rendered, with the repo id swapped for the saved folder, runs in a
    process that cannot import `modeling_mcd` (the stock export needs no custom code at all)."""
    folder = tiny_model_dir
    if stock:
        from modeling_mcd.export import export_to_vision_text_dual_encoder

        folder = export_to_vision_text_dual_encoder(tiny_model_dir, tmp_path / "stock")
    write_model_card(folder, AutoConfig.from_pretrained(folder), TrainingRecord(repo_id=REPO_ID))
    code = _python_block((tmp_path / folder / "README.md").read_text())
    assert ("trust_remote_code=True" in code) is not stock
    script = tmp_path / "usage.py"
    script.write_text(code.replace(f'"{REPO_ID}"', repr(str(folder))))
    result = run_without_package(USAGE_RUNNER, str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    probs = json.loads(result.stdout.split("PROBS", 1)[1])
    assert len(probs) == 3 and sum(probs) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------------- records
def test_recipe_record_redacts_every_token(tmp_path):
    recipe = tmp_path / "run.yaml"
    recipe.write_text("max_steps: 5\nhub_token: hf_in_yaml\ntokenizer_name_or_path: bert\nhub_model_id: o/m\n")
    argv = [str(recipe), "--hub_token", "hf_secret", "--tokenizer_name_or_path", "tok", "--token=hf_other", "--x", "1"]
    record = recipe_record(argv, program="training/run_mcd.py", root=tmp_path, secrets=["hf_secret"])
    assert record["recipe_file"] == "run.yaml"
    assert record["recipe"] == {
        "max_steps": 5,
        "hub_token": "<redacted>",
        "tokenizer_name_or_path": "bert",
        "hub_model_id": "o/m",
    }
    assert record["command"] == (
        f"training/run_mcd.py {recipe} --hub_token '<redacted>' --tokenizer_name_or_path tok '--token=<redacted>' --x 1"
    )
    # an abbreviated flag (argparse accepts `--hub_tok`) is caught by the value
    abbreviated = recipe_record(["--hub_tok", "hf_secret"], recipe, secrets=["hf_secret"])
    assert "hf_secret" not in abbreviated["command"]


def test_record_names_the_pretrained_towers_and_hub_datasets(training_args, tmp_path):
    from modeling_mcd.trainer.arguments import DataArguments, ModelArguments

    local = tmp_path / "vit"
    local.mkdir()
    towers = ModelArguments(vision_model_name_or_path="google/vit-b", text_model_name_or_path="bert-base-uncased")
    record = training_record(training_args, towers, DataArguments(dataset="some-org/pairs"), steps=3)
    assert record.base_models == ["google/vit-b", "bert-base-uncased"] and record.datasets == ["some-org/pairs"]
    assert (record.global_batch, record.objective, record.steps) == (5, "mcd", 3)
    scratch = training_record(None, ModelArguments(vision_model_name_or_path=str(local)), DataArguments())
    assert scratch.base_models == [] and scratch.datasets == []  # local folders and the built-in data are no Hub ids
    assert scratch.from_scratch is False and record.from_scratch is False
    assert training_record(None, ModelArguments()).from_scratch is True
    assert "| initialisation | pretrained towers (local folders) |" in render_model_card(tiny_config(), scratch).text
    assert (
        "| initialisation | from scratch |"
        in render_model_card(tiny_config(), _run_record(base_models=[], from_scratch=True)).text
    )
    assert "| initialisation | not recorded |" in render_model_card(tiny_config(), TrainingRecord()).text
    files = training_record(None, data_args=DataArguments(dataset=str(tmp_path / "shards-{0..9}.tar")))
    assert files.datasets == []


def test_hub_target_needs_a_repo_id_and_hides_the_token(tmp_path):
    args = MCDTrainingArguments(output_dir=str(tmp_path), push_to_hub=True, hub_token="hf_secret", use_cpu=True)
    with pytest.raises(ValueError, match="--hub_model_id"):
        HubTarget.from_training_args(args)
    args.hub_model_id = "org/name"
    target = HubTarget.from_training_args(args)
    assert (target.repo_id, target.token) == ("org/name", "hf_secret") and "hf_secret" not in repr(target)
    args.hub_model_id = "not a repo"
    with pytest.raises(ValueError, match="--hub_model_id"):
        HubTarget.from_training_args(args)
    args.push_to_hub = False
    assert HubTarget.from_training_args(args) is None


# ----------------------------------------------------------------------------------------- mcd card
def test_mcd_card_adds_results_of_mcd_eval_and_of_a_run(tiny_model_dir, tmp_path, capsys):
    write_model_card(tiny_model_dir, tiny_config(), TrainingRecord(steps=9, metrics={"synthetic_zero_shot_top1": 0.2}))
    zero_shot = tmp_path / "cifar.json"  # what `mcd eval zero-shot --output-json` writes
    zero_shot.write_text(
        json.dumps(
            {
                "task": "zero-shot",
                "args": {"data": "/data/cifar10/test", "dataset": "cifar10", "split": None, "model": "m"},
                "metrics": {"top1": 0.5, "top5": 0.875, "num_samples": 16},
            }
        )
    )
    retrieval = tmp_path / "flickr.json"
    retrieval.write_text(
        json.dumps(
            {
                "task": "retrieval",
                "args": {"data": "/data/flickr8k/captions.jsonl", "split": "test"},
                "metrics": {"text_to_image_R@5": 0.25, "num_images": 4},
            }
        )
    )
    run = tmp_path / "eval_results.json"  # a run's: metrics, chance levels, and a Trainer entry to leave out
    run.write_text(json.dumps({"synthetic_zero_shot_top1": 0.3, "chance_synthetic_zero_shot_top1": 0.1, "epoch": 3}))
    argv = ["card", tiny_model_dir, "--results", str(zero_shot), "--results", str(retrieval), "--results", str(run)]
    assert mcd([*argv, "--repo-id", "org/refreshed"]) == 0
    assert "README.md" in capsys.readouterr().out
    card = ModelCard.load(os.path.join(tiny_model_dir, "README.md"))
    results = {(r.dataset_name, r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {
        ("synthetic", None, "top-1 accuracy"): 0.3,  # the run's value replaced the recorded one
        ("cifar10", "test", "top-1 accuracy"): 0.5,  # the split comes from the folder name
        ("cifar10", "test", "top-5 accuracy"): 0.875,
        ("flickr8k", "test", "text→image R@5"): 0.25,
    }
    assert '"org/refreshed"' in card.text and "steps: 9" in card.text
    assert "synthetic_zero_shot_top1 = 0.1000" in card.text  # chance level
    record = TrainingRecord.load(tiny_model_dir)
    assert record.repo_id == "org/refreshed" and "cifar10_zero_shot_num_samples" not in record.metrics


def test_mcd_card_errors_name_the_file(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"loss": 1.0}')
    assert mcd(["card", tiny_model_dir, "--results", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert mcd(["card", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown task"):
        bad.write_text('{"task": "captioning", "metrics": {}}')
        load_results(bad)


# ----------------------------------------------------------------------------------------- mcd push
TOKEN = "hf_TestTokenThatMustNeverBeWritten"


def test_mcd_push_uploads_the_inference_folder(tiny_model_dir, tmp_path, fake_hub, capsys):
    write_model_card(tiny_model_dir, tiny_config(), TrainingRecord(repo_id="org/old", steps=2))
    argv = ["push", tiny_model_dir, "org/tiny", "--private", "--token", TOKEN, "--commit-message", "First model"]
    assert mcd(argv) == 0
    out = capsys.readouterr()
    assert "https://huggingface.co/org/tiny" in out.out and TOKEN not in out.out + out.err
    (create,), (upload,) = fake_hub.named("create_repo"), fake_hub.named("upload_folder")
    assert create["repo_id"] == "org/tiny" and create["private"] is True and create["exist_ok"] is True
    assert create["token"] == upload["token"] == TOKEN  # handed to HfApi, and nowhere else
    assert upload["repo_id"] == "org/tiny" and upload["commit_message"] == "First model"
    assert upload["folder_path"] == tiny_model_dir
    assert upload["files"] == sorted(os.listdir(tiny_model_dir))  # every file of the folder, nothing else
    assert EXPORTED_FILES <= set(upload["files"])
    repo = fake_hub.repo_dir("org/tiny")
    assert training_only_keys(repo / "model.safetensors") == []
    assert json.loads((repo / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_mcd.MCDModel"
    card = (repo / "README.md").read_text()
    assert _python_block(card).count('"org/tiny"') == 3 and "org/old" not in card  # the card loads from the repo
    assert files_containing(fake_hub.root, TOKEN) == files_containing(tiny_model_dir, TOKEN) == []
    # the stand-in repository loads in a process that cannot import the package
    report = remote_code_report(repo, tmp_path)
    assert report["processor"] == "MCDProcessor" and report["package_imported"] is False


def test_mcd_push_stock_uploads_the_plain_export(tiny_model_dir, fake_hub):
    write_model_card(tiny_model_dir, tiny_config(), TrainingRecord(steps=2))
    assert mcd(["push", tiny_model_dir, "org/stock", "--stock"]) == 0
    (create,), (upload,) = fake_hub.named("create_repo"), fake_hub.named("upload_folder")
    assert create["private"] is None and create["token"] is None  # the usual token lookup, the account's default
    assert "VisionTextDualEncoderModel" in upload["commit_message"]
    assert not os.path.exists(upload["folder_path"])  # a temporary folder, gone after the upload
    files = set(upload["files"])
    assert {"model.safetensors", "config.json", "README.md", "processor_config.json"} <= files
    assert not [name for name in files if name.endswith(".py")]
    repo = fake_hub.repo_dir("org/stock")
    assert type(AutoModel.from_pretrained(repo)) is VisionTextDualEncoderModel
    card = (repo / "README.md").read_text()
    assert "trust_remote_code" not in _python_block(card) and "steps: 2" in card


def test_push_refuses_checkpoints_and_training_weights(tiny_model_dir, tmp_path, fake_hub, capsys):
    (tmp_path / "ckpt").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "ckpt" / name).write_bytes(open(os.path.join(tiny_model_dir, name), "rb").read())
    (tmp_path / "ckpt" / "optimizer.pt").write_bytes(b"state")
    assert mcd(["push", str(tmp_path / "ckpt"), "org/x"]) == 2
    assert "optimizer.pt" in capsys.readouterr().err
    os.remove(tmp_path / "ckpt" / "optimizer.pt")
    save_file({"teacher_vision_model.weight": torch.zeros(2)}, tmp_path / "ckpt" / "model.safetensors")
    with pytest.raises(ValueError, match="teacher_vision_model.weight"):
        check_inference_folder(tmp_path / "ckpt")
    assert mcd(["push", tiny_model_dir, "not a repo id"]) == 2
    assert fake_hub.calls == []  # nothing was created or uploaded


# ------------------------------------------------------------------------------- nothing lost locally
def _folder_bytes(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}


def test_mcd_card_without_a_record_never_shrinks_the_card(tiny_model_dir, tmp_path, capsys):
    """The record is what the card is rendered from: without it a re-render would drop the recipe, the compute and
    the results. The command refuses, naming the missing record, and leaves the card byte for byte."""
    write_model_card(tiny_model_dir, tiny_config(), _run_record(steps=400, command="python train.py", compute={
        "device": "cuda", "num_processes": 8, "precision": "bf16", "train_runtime_s": 3600.0}))  # fmt: skip
    card = os.path.join(tiny_model_dir, "README.md")
    before = _folder_bytes(tiny_model_dir)["README.md"]
    os.remove(os.path.join(tiny_model_dir, "training_record.json"))
    results = tmp_path / "eval.json"
    results.write_text(json.dumps({"task": "zero-shot", "args": {"data": "/d/cifar10/test"}, "metrics": {"top1": 0.5}}))
    for extra in ([], ["--results", str(results)], ["--repo-id", "org/other"]):
        assert mcd(["card", tiny_model_dir, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("mcd: error: ") and "training_record.json" in err and "README.md" in err
        assert _folder_bytes(tiny_model_dir)["README.md"] == before
    assert not os.path.exists(os.path.join(tiny_model_dir, "training_record.json"))
    # A folder with neither gets a first card (there is nothing to lose), and its record.
    os.remove(card)
    assert mcd(["card", tiny_model_dir]) == 0 and os.path.isfile(card)
    capsys.readouterr()


def _offline(*args, **kwargs):
    from huggingface_hub.errors import OfflineModeIsEnabled

    raise OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.")


@pytest.mark.parametrize("fails", ["create_repo", "upload_folder"])
def test_a_push_that_fails_leaves_the_local_folder_as_it_was(fails, tiny_model_dir, fake_hub, monkeypatch, capsys):
    """Offline, or cut during the upload: one `mcd: error:` line (exit 1: the Hub, not the command, failed) and the
    card and record of the folder exactly as before, although the push re-renders the card for the repository."""
    from huggingface_hub import HfApi

    write_model_card(tiny_model_dir, tiny_config(), TrainingRecord(repo_id="org/old", steps=2))
    before = _folder_bytes(tiny_model_dir)
    monkeypatch.setattr(HfApi, fails, _offline)
    assert mcd(["push", tiny_model_dir, "org/new"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mcd: error: ") and "Hugging Face Hub" in last and "nothing was pushed" in last
    assert _folder_bytes(tiny_model_dir) == before


def test_a_push_while_offline_in_a_real_process(tiny_model_dir, tmp_path):
    """`HF_HUB_OFFLINE=1`: huggingface_hub's own refusal, in a process of its own, with the folder untouched."""
    import subprocess
    import sys

    write_model_card(tiny_model_dir, tiny_config(), TrainingRecord(repo_id="org/old", steps=2))
    before = _folder_bytes(tiny_model_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "modeling_mcd.cli.main", "push", tiny_model_dir, "org/new", "--token", TOKEN],
        check=False,
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and TOKEN not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("mcd: error: ")
    assert _folder_bytes(tiny_model_dir) == before
