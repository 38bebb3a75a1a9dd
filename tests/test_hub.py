"""Model cards of exported models (`modeling_mcd.hub`): rendered from the Jinja template, read back with huggingface_hub."""

import re

import pytest
import yaml
from huggingface_hub import ModelCard

from modeling_mcd.hub import DEFAULT_TEMPLATE, render_model_card, write_model_card
from modeling_mcd.arguments import MCDTrainingArguments

from conftest import tiny_config

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


def _render(training_args, **kwargs):
    defaults = dict(
        repo_id=REPO_ID,
        training_args=training_args,
        dataset_description="seven captioned shapes",
        metrics=METRICS,
        chance=CHANCE,
        steps=7,
    )
    return render_model_card(tiny_config(projection_dim=13, text_pooling="mean"), **{**defaults, **kwargs})


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
    path = write_model_card(
        tmp_path, tiny_config(), repo_id=REPO_ID, training_args=training_args, metrics=METRICS, steps=7
    )
    assert path == str(tmp_path / "README.md")
    written = ModelCard.load(path)
    expected = render_model_card(tiny_config(), repo_id=REPO_ID, training_args=training_args, metrics=METRICS, steps=7)
    assert written.content.strip() == expected.content.strip()
    assert _metrics_table(written.text) == {name: pytest.approx(value, abs=5e-5) for name, value in METRICS.items()}
