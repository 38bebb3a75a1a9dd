"""LoRA fine-tuning (modeling_mcd.pretraining.adapters, modeling_mcd.conversion): what trains, the teacher's target, the
merged export, adapters on their own, CLIP and VisionTextDualEncoder starts, and real runs through
training/run_mcd.py."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import SHARED_DATA, TINY_IMAGE_SIZE, fixed_pretraining_batch
from peft import LoHaConfig, LoraConfig, PeftModel
from PIL import Image
from safetensors.torch import load_file
from test_run_mcd import ROOT, TINY_RUN, _load_script
from test_security import pickled_copy
from transformers import (
    AutoModel,
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    pipeline,
)

from modeling_mcd import MCDLoss, MCDModel
from modeling_mcd.cli.main import main as mcd_cli
from modeling_mcd.conversion import load_dual_encoder
from modeling_mcd.export import to_vision_text_dual_encoder
from modeling_mcd.pretraining.adapters import effective_weights, peft_student, save_adapters, student_peft_config
from modeling_mcd.pretraining.model import MCDForPreTraining
from modeling_mcd.pretraining.teacher import momentum_at
from modeling_mcd.trainer.arguments import ModelArguments
from modeling_mcd.trainer.builder import build_pretraining_model, load_tokenizer
from modeling_mcd.trainer.recipe import parse_run_args
from modeling_mcd.trainer.teacher_ema import TeacherEMACallback

CAPTIONS = ["a red circle", "two blue squares", "a photo of a cat"]


def build(model_dir, teacher_text="stopgrad", use_mlm=True, **flags) -> MCDForPreTraining:
    """The training model a run builds from `--init_model_name_or_path model_dir` and the adapter flags."""
    args = ModelArguments(init_model_name_or_path=str(model_dir), **flags)
    tokenizer = load_tokenizer(args, str(model_dir), list)
    model, _ = build_pretraining_model(args, tokenizer, teacher_text=teacher_text, use_mlm=use_mlm)
    return model


@torch.no_grad()
def perturb_adapters(model: MCDForPreTraining, seed: int = 0) -> None:
    """Random values in every trainable student weight (LoRA starts with B = 0, i.e. ΔW = 0)."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.mcd.parameters():
        if param.requires_grad:
            param.add_(0.2 * torch.randn(param.shape, generator=generator))


def naive_teacher_target(model: MCDForPreTraining, scale: float) -> dict[str, torch.Tensor]:
    """Each teacher weight's target written out by hand: W + scale·B@A for a LoRA layer, the trained copy for a
    `modules_to_save` projection, the student's weight otherwise."""
    student = {name: param.detach() for name, param in model.mcd.named_parameters()}
    pairs = {"teacher_vision_model.": "vision_model.", "teacher_visual_projection.": "visual_projection."}
    pairs |= {"teacher_text_model.": "text_model.", "teacher_text_projection.": "text_projection."}
    target = {}
    for name, _ in model.named_parameters():
        prefix = next((p for p in pairs if name.startswith(p)), None)
        if prefix is None:
            continue
        owner, leaf = (pairs[prefix] + name[len(prefix) :]).rsplit(".", 1)
        if f"{owner}.base_layer.{leaf}" in student:
            value = student[f"{owner}.base_layer.{leaf}"]
            if leaf == "weight":
                value = (
                    value
                    + scale * student[f"{owner}.lora_B.default.weight"] @ student[f"{owner}.lora_A.default.weight"]
                )
        else:
            value = student.get(f"{owner}.modules_to_save.default.{leaf}", student.get(f"{owner}.{leaf}"))
        target[name] = value.clone()
    return target


def encode(model: MCDModel, batch: dict) -> list[torch.Tensor]:
    """Image features, text features and logits of `model` (eval mode, no gradient)."""
    text = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    with torch.no_grad():
        return [
            model.get_image_features(batch["pixel_values"]).pooler_output,
            model.get_text_features(**text).pooler_output,
            model(pixel_values=batch["pixel_values"], **text).logits_per_image,
        ]


# ------------------------------------------------------------------------------------------------- flags
def test_the_adapter_flags_are_checked_by_name(tmp_path):
    model_args = parse_run_args(["--lora_r", "4", "--lora_towers", "vision,text", "--output_dir", str(tmp_path)])[0]
    assert model_args.lora_towers == ["vision", "text"] and model_args.uses_peft
    assert ModelArguments(lora_target_modules=["q_proj", "query,value"]).lora_target_modules == [
        "q_proj",
        "query",
        "value",
    ]
    for flags, message in [
        ({"lora_r": 2, "lora_towers": ["audio"]}, "--lora_towers"),
        ({"lora_r": -1}, "--lora_r"),
        ({"lora_alpha": 0}, "--lora_alpha"),
        ({"lora_dropout": 1.0}, "--lora_dropout"),
        ({"lora_target_modules": ["all-linear", "query"]}, "--lora_target_modules"),
        ({"peft_config": str(tmp_path / "missing.json")}, "--peft_config"),
        ({"peft_config": str(tmp_path), "lora_r": 4}, "--peft_config or --lora_r"),
        ({"lora_train_projections": True}, "--lora_r"),
        ({"init_model_name_or_path": "a", "vision_model_name_or_path": "b"}, "--init_model_name_or_path"),
    ]:
        with pytest.raises(ValueError, match=message):
            ModelArguments(**flags)


def test_target_modules_that_miss_a_tower_are_named(tiny_model_dir):
    with pytest.raises(ValueError, match=r"--lora_target_modules query names no linear layer of the vision tower"):
        build(tiny_model_dir, lora_r=2, lora_target_modules=["query"])  # BERT's name; this ViT's is q_proj
    model = build(tiny_model_dir, lora_r=2, lora_target_modules=["query"], lora_towers=["text"])
    assert not any("lora_" in name for name, _ in model.mcd.vision_model.named_parameters())


# ----------------------------------------------------------------------------------- training and teacher
@pytest.mark.parametrize("train_projections, teacher_text", [(False, "stopgrad"), (True, "ema")])
def test_only_adapters_train_and_the_teacher_follows_the_merged_weights(
    tiny_model_dir, train_projections, teacher_text
):
    torch.manual_seed(0)
    model = build(tiny_model_dir, teacher_text, lora_r=4, lora_alpha=6, lora_train_projections=train_projections)
    start = {name: param.detach().clone() for name, param in model.mcd.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    batch = fixed_pretraining_batch(CAPTIONS, masked=[(0, 2), (2, 1)])
    callback, steps = TeacherEMACallback(base_momentum=0.8), 3
    for step in range(1, steps + 1):
        model.train()
        model(**batch, alpha=0.5).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        before = {name: p.detach().clone() for name, p in model.named_parameters() if name.startswith("teacher_")}
        target = naive_teacher_target(model, scale=6 / 4)
        callback.on_step_end(None, SimpleNamespace(global_step=step, max_steps=steps), None, model=model)
        m = momentum_at(step - 1, steps, 0.8)  # the schedule's value for this update (docs/method.md §5)
        teacher = dict(model.named_parameters())
        for name, value in before.items():
            torch.testing.assert_close(teacher[name], m * value + (1 - m) * target[name])
    assert {name.split(".")[0] for name in target} == (
        {"teacher_vision_model", "teacher_visual_projection"}
        | ({"teacher_text_model", "teacher_text_projection"} if teacher_text == "ema" else set())
    )

    changed = {name for name, param in model.mcd.named_parameters() if not torch.equal(param, start[name])}
    trained = {name for name in changed if "lora_" in name or "modules_to_save" in name}
    assert changed == trained, "a base weight of the student moved"
    assert any(n.startswith("vision_model") for n in trained) and any(n.startswith("text_model") for n in trained)
    assert any("projection" in n for n in trained) == train_projections
    # What is not the student: the frozen temperature and word embeddings (tied to the MLM decoder) stay put too.
    assert "logit_scale" not in changed and model.mlm_head.predictions.decoder.weight.requires_grad is False


def test_the_merged_export_equals_the_adapted_model(tiny_model_dir, tmp_path):
    model = build(tiny_model_dir, lora_r=3, lora_target_modules=["all-linear"], lora_train_projections=True)
    perturb_adapters(model)
    model.eval()
    merged = model.export_student().eval()
    assert type(merged) is MCDModel and not any("lora_" in k or "base_layer" in k for k in merged.state_dict())
    assert peft_student(model) is not None and any("lora_" in k for k in model.mcd.state_dict())  # left adapted
    batch = fixed_pretraining_batch(CAPTIONS, masked=[])
    for adapted, plain in zip(encode(model.mcd, batch), encode(merged, batch)):  # x·(W + ΔW) vs x·W + (x·Aᵀ)·Bᵀ
        torch.testing.assert_close(plain, adapted, rtol=1e-4, atol=1e-4)  # fp32 rounding, times the logit scale (14)
    # the export's weights ARE the teacher's target
    for tower, module in (("vision_model", model.mcd.vision_model), ("visual_projection", model.mcd.visual_projection)):
        exported = dict(getattr(merged, tower).named_parameters())
        for name, weight in effective_weights(module).items():
            torch.testing.assert_close(exported[name], weight, rtol=0, atol=0)
    merged.save_pretrained(tmp_path / "export")
    reloaded = AutoModel.from_pretrained(tmp_path / "export").eval()
    torch.testing.assert_close(encode(reloaded, batch)[2], encode(merged, batch)[2])


def test_adapters_save_and_load_on_their_own(tiny_model_dir, tmp_path):
    model = build(tiny_model_dir, lora_r=4, lora_train_projections=True).eval()
    perturb_adapters(model)
    folder = Path(save_adapters(model, tmp_path / "adapters"))
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in folder.iterdir()}
    saved = load_file(folder / "adapter_model.safetensors")
    assert saved and all("lora_" in key or "projection" in key for key in saved)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)

    reloaded = PeftModel.from_pretrained(MCDModel.from_pretrained(tiny_model_dir), folder).eval()
    batch = fixed_pretraining_batch(CAPTIONS, masked=[])
    for adapted, again in zip(encode(model.mcd, batch), encode(reloaded, batch)):
        torch.testing.assert_close(again, adapted, rtol=0, atol=0)
    merged_here, merged_there = model.export_student().state_dict(), reloaded.merge_and_unload().state_dict()
    for key, value in merged_here.items():
        torch.testing.assert_close(merged_there[key], value, rtol=0, atol=0)


def test_a_checkpoint_of_a_lora_run_loads_back(tiny_model_dir, tmp_path):
    model = build(tiny_model_dir, teacher_text="ema", lora_r=2, lora_train_projections=True)
    perturb_adapters(model)
    model.update_teacher(0.5)
    model.save_pretrained(tmp_path / "checkpoint")  # what the Trainer writes
    loaded = MCDForPreTraining.from_pretrained(
        tmp_path / "checkpoint", teacher_text="ema", peft_config=student_peft_config(model)
    )
    state = loaded.state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable == {name for name, param in loaded.named_parameters() if param.requires_grad}


@pytest.mark.parametrize(
    "config",
    [
        LoraConfig(r=3, lora_alpha=5, use_rslora=True, target_modules=r"vision_model\..*\.(q_proj|fc1)"),
        LoHaConfig(r=2, alpha=3, target_modules=r"vision_model\..*\.(k_proj|v_proj)"),
    ],
    ids=["lora-rslora", "loha"],
)
def test_a_peft_config_file_gives_an_exact_teacher_target(config, tiny_model_dir, tmp_path):
    config.save_pretrained(tmp_path / "config")
    model = build(tiny_model_dir, peft_config=str(tmp_path / "config" / "adapter_config.json"))
    perturb_adapters(model)
    merged = dict(model.export_student().vision_model.named_parameters())
    effective = effective_weights(model.mcd.vision_model)
    assert effective.keys() == merged.keys()
    for name, weight in effective.items():
        torch.testing.assert_close(weight, merged[name], rtol=1e-6, atol=1e-6)


def test_adapters_without_an_additive_merge_are_refused(tiny_model_dir, tmp_path):
    LoraConfig(r=2, use_dora=True, target_modules=["q_proj"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="use_dora"):
        build(tiny_model_dir, peft_config=str(tmp_path))


def test_add_adapters_from_python_adapts_the_student_only_and_the_teacher_follows_it():
    from conftest import tiny_config

    torch.manual_seed(0)
    model = MCDForPreTraining(tiny_config())
    with pytest.raises(TypeError, match=r"add_adapters\(peft_config\)"):
        model.add_adapter(LoraConfig(r=2, target_modules=["query"]))  # transformers' own: would adapt the teacher
    student = model.add_adapters(LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "query", "value"]))
    assert peft_student(model) is student
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and all("lora_" in name or name.startswith("mlm_head.") for name in trainable)
    assert not any(name.startswith("teacher_") and "lora_" in name for name, _ in model.named_parameters())
    with torch.no_grad():  # B starts at 0: give the adapters a ΔW, then the teacher starts again at W + ΔW
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    model.reset_teacher()
    teacher, targets = model.teacher_student_parameters()
    assert all(torch.equal(t, s) for t, s in zip(teacher, targets))
    # ...which is not the base weight: the image tower's adapted layers moved the teacher with them.
    bases = {name: param for name, param in model.mcd.vision_model.named_parameters() if "base_layer.weight" in name}
    assert bases and any(name.endswith("q_proj.base_layer.weight") for name in bases)
    merged = effective_weights(model.mcd.vision_model)
    moved = [name for name, base in bases.items() if not torch.equal(merged[name.replace("base_layer.", "")], base)]
    assert len(moved) == len(bases)


# ------------------------------------------------------------------------------- other starting points
def tiny_clip_dir(root: Path) -> Path:
    """A tiny `CLIPModel` folder with a CLIP tokenizer (BPE over letters) and image processor, made locally."""
    letters = list("abcdefghijklmnopqrstuvwxyz.,")
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": 1}
    text = dict(hidden_size=20, num_hidden_layers=2, num_attention_heads=2, intermediate_size=33, **ids)
    vision = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, patch_size=6)
    config = CLIPConfig(
        text_config=dict(text, vocab_size=len(vocab), max_position_embeddings=40),
        vision_config=dict(vision, image_size=TINY_IMAGE_SIZE),
        projection_dim=11,
    )
    torch.manual_seed(0)
    folder = root / "clip-tiny"
    CLIPModel(config).save_pretrained(folder)
    size = {"shortest_edge": TINY_IMAGE_SIZE}
    image_processor = CLIPImageProcessorPil(size=size, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_a_clip_folder_converts_exactly_and_trains_with_lora(tmp_path):
    folder = tiny_clip_dir(tmp_path)
    clip = CLIPModel.from_pretrained(folder).eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    batch = {
        "pixel_values": torch.randn(3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE),
        **tokenizer(CAPTIONS, padding=True, return_tensors="pt"),
    }
    ours, theirs = encode(load_dual_encoder(folder).eval(), batch), encode(clip, batch)
    for mine, reference in zip(ours[:2], theirs[:2]):  # the embeddings: bit for bit
        torch.testing.assert_close(mine, reference, rtol=0, atol=0)
    torch.testing.assert_close(ours[2], theirs[2])  # the logits: scale and product taken in another order

    with pytest.raises(ValueError, match="--use_mlm false"):  # CLIP's tokenizer has no mask token
        build(folder, lora_r=2)
    model = build(folder, use_mlm=False, lora_r=2, lora_alpha=4, lora_train_projections=True)
    model.loss_fn = MCDLoss(use_mlm=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.05)
    views = {"pixel_values": batch["pixel_values"], "aug_pixel_values": batch["pixel_values"].flip(-1)}
    start = [p.detach().clone() for p in trainable]
    for _ in range(2):
        model.train()
        loss = model(**views, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], alpha=0.5).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.update_teacher(0.9)
    assert any(not torch.equal(p, s) for p, s in zip(trainable, start))

    # The adapters name CLIPModel's own modules: they apply to the original folder as they are.
    save_adapters(model, tmp_path / "adapters")
    on_clip = PeftModel.from_pretrained(CLIPModel.from_pretrained(folder), tmp_path / "adapters").eval()
    model.eval()
    for ours, theirs in zip(encode(model.export_student().eval(), batch)[:2], encode(on_clip, batch)[:2]):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_a_vision_text_dual_encoder_folder_converts_exactly(tiny_model, tmp_path):
    to_vision_text_dual_encoder(tiny_model).save_pretrained(tmp_path / "vtde")
    batch = fixed_pretraining_batch(CAPTIONS, masked=[])
    for ours, reference in zip(encode(load_dual_encoder(tmp_path / "vtde").eval(), batch), encode(tiny_model, batch)):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    with pytest.raises(OSError, match="safetensors"):  # never a pickled pytorch_model.bin
        load_dual_encoder(pickled_copy(tmp_path / "vtde", tmp_path))
    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="--init_model_name_or_path .* not a dual encoder"):
        load_dual_encoder(tmp_path / "bert")


# -------------------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_a_lora_run_resumes_and_exports_a_merged_model_and_its_adapters(tiny_model_dir, tmp_path):
    run_mcd = _load_script()
    out = tmp_path / "run"
    lora = ["--init_model_name_or_path", str(tiny_model_dir), "--lora_r", "4", "--lora_towers", "vision,text"]
    args = TINY_RUN + lora + ["--output_dir", str(out), "--eval_max_samples", "12"]
    args += ["--save_strategy", "steps", "--save_steps", "2"]
    run_mcd.main(args + ["--max_steps", "2"])
    metrics = run_mcd.main(args + ["--max_steps", "3"])  # resumes from checkpoint-2
    history = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3]
    assert {"synthetic_zero_shot_top1", "synthetic_retrieval_mean_recall"} <= set(metrics)  # the resumed run evaluated

    export = out / "mcd-model"
    model = AutoModel.from_pretrained(export)
    assert type(model) is MCDModel
    exported = load_file(export / "model.safetensors")
    assert not any(("lora" in k or "base_layer" in k or k.startswith(("teacher", "mlm_head"))) for k in exported)
    # Only the adapted layers' weights differ from the model the run started from.
    start = MCDModel.from_pretrained(tiny_model_dir).state_dict()
    state = model.state_dict()
    moved = {key for key, value in state.items() if not torch.equal(value, start[key])}
    assert moved and all(key.rsplit(".", 2)[-2] in ("q_proj", "v_proj", "query", "value") for key in moved)
    # The adapters alone, on the starting model, merge into the same weights.
    merged = PeftModel.from_pretrained(MCDModel.from_pretrained(tiny_model_dir), out / "adapters").merge_and_unload()
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=1e-6, atol=1e-6)

    image = Image.new("RGB", (40, 36), (220, 30, 30))
    result = pipeline("zero-shot-image-classification", model=str(export))(image, candidate_labels=["red", "blue"])
    assert {r["label"] for r in result} == {"red", "blue"}
    data = tmp_path / "colours"
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (data / name).mkdir(parents=True)
        Image.new("RGB", (33, 31), colour).save(data / name / "0.png")
    argv = ["eval", "zero-shot", "--model", str(export), "--data", str(data), "--device", "cpu"]
    assert mcd_cli([*argv, "--output-json", str(tmp_path / "zero_shot.json")]) == 0


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "flickr8k" / "captions.jsonl").is_file(), reason="needs ../shared/data")
def test_the_lora_recipe_runs_on_an_image_caption_file(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipe's data paths are relative to the repository
    recipe = ROOT / "training" / "configs" / "lora_finetune.yaml"
    overrides = ["--init_model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "run")]
    overrides += ["--max_steps", "2", "--per_device_train_batch_size", "4", "--base_image_size", "36"]
    overrides += ["--max_seq_length", "24", "--eval_max_samples", "8", "--save_strategy", "no", "--use_cpu", "true"]
    metrics = _load_script().main([str(recipe), *overrides])
    assert "flickr8k_retrieval_mean_recall" in metrics and "cifar10_zero_shot_top1" in metrics
    assert (tmp_path / "run" / "adapters" / "adapter_model.safetensors").is_file()
