"""MCDModel under the checks of transformers' common model tests (`ModelTesterMixin`, `ConfigTester`) as
`CLIPModelTest` configures them: save/load, tuple outputs, hidden states and attentions per tower, and the
`initializer_factor` of the projections.

Each check runs on MCD with a ViT image tower, MCD with a CLIP image tower, and, where CLIP behaves the same,
on transformers' `CLIPModel` itself, so that a difference between MCD and CLIP shows up as a failure.
"""

import json

import pytest
import torch
from conftest import comparable_config
from transformers import BertConfig, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, ViTConfig
from transformers.models.clip.modeling_clip import CLIPOutput
from transformers.utils import ModelOutput

from modeling_mcd import MCDConfig, MCDModel

# Odd sizes, and a different depth per tower, so that a tower's outputs cannot pass for the other's.
IMAGE_SIZE, PATCH_SIZE = 30, 6  # 5 x 5 patches + [CLS] -> 26 image tokens
VISION = {"hidden_size": 18, "num_hidden_layers": 3, "num_attention_heads": 3, "intermediate_size": 29}
TEXT = {"hidden_size": 20, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 33}
VOCAB, MAX_POSITIONS = 45, 40
NUM_IMAGES, NUM_TEXTS, SEQ_LEN = 2, 3, 7  # unequal batches catch a transposed similarity matrix
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1

KINDS = ["mcd-vit", "mcd-clip-vision", "clip"]


def make_config(kind: str, projection_dim: int = 13, **kwargs):
    """A tiny config of `kind` at odd sizes: MCD with a ViT or a CLIP image tower and a BERT text tower, or CLIP."""
    vision = {**VISION, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE}
    if kind == "clip":
        # eos_token_id=2 selects CLIP's legacy pooling (at the highest token id): random ids need no end token
        special = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
        text = CLIPTextConfig(**TEXT, vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS, **special)
        vision_config = CLIPVisionConfig(**vision)
        return CLIPConfig(
            text_config=text.to_dict(), vision_config=vision_config.to_dict(), projection_dim=projection_dim, **kwargs
        )
    vision_config = ViTConfig(**vision) if kind == "mcd-vit" else CLIPVisionConfig(**vision)
    text = BertConfig(**TEXT, vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS)
    return MCDConfig.from_vision_text_configs(vision_config, text, projection_dim=projection_dim, **kwargs)


def make_model(kind: str, seed: int = 0, attn_implementation: str | None = None, **config_kwargs):
    """A freshly initialised model of `kind` in eval mode (dropout off, so repeated calls agree exactly)."""
    torch.manual_seed(seed)
    model_class = CLIPModel if kind == "clip" else MCDModel
    config = make_config(kind, **config_kwargs)
    if attn_implementation is None:
        return model_class(config).eval()
    return model_class._from_config(config, attn_implementation=attn_implementation).eval()


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """Images (I, 3, S, S), token ids (T, L) and a right-padded attention mask (T, L)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (NUM_TEXTS, SEQ_LEN), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    attention_mask[2, 3:] = 0
    pixel_values = torch.randn(NUM_IMAGES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def call(model, method: str, inputs: dict, **kwargs):
    """`forward`, `get_image_features` or `get_text_features` on the inputs that method takes."""
    if method == "forward":
        return model(**inputs, **kwargs)
    if method == "get_image_features":
        return model.get_image_features(pixel_values=inputs["pixel_values"], **kwargs)
    return model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **kwargs)


def assert_tuple_matches(tuple_output, dict_output) -> None:
    """As `ModelTesterMixin.test_model_outputs_equivalence`: the tuple is `dict_output.to_tuple()` (nested outputs
    included, `None` fields dropped), element by element and exactly."""
    assert isinstance(tuple_output, tuple), f"expected a tuple, got {type(tuple_output).__name__}"
    expected = dict_output.to_tuple() if not isinstance(dict_output, tuple) else dict_output
    assert len(tuple_output) == len(expected)
    for got, want in zip(tuple_output, expected):
        if isinstance(want, (tuple, list)):
            assert_tuple_matches(tuple(got), tuple(want))
        else:
            assert torch.equal(got, want)


# ------------------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    """Every output (hidden states included) is bit-identical after `save_pretrained` / `from_pretrained`, and the
    config comes back equal, `initializer_factor` included."""
    model = make_model(kind, initializer_factor=2.5)
    inputs = make_inputs()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["initializer_factor"] == 2.5
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert loaded.config.initializer_factor == 2.5
    assert comparable_config(loaded.config) == comparable_config(model.config)
    with torch.no_grad():
        before = model(**inputs, output_hidden_states=True, return_dict=False)
        after = loaded(**inputs, output_hidden_states=True, return_dict=False)
    assert_tuple_matches(after, before)
    # (logits_per_image, logits_per_text, text_embeds, image_embeds, text_model_output, vision_model_output)
    assert len(before) == 6 and len(before[4]) == 3 and len(before[5]) == 3, "hidden states were not returned"


def test_config_without_initializer_factor_loads_with_the_default(tmp_path):
    """A config saved before `initializer_factor` existed loads, with CLIP's default of 1.0."""
    make_config("mcd-vit").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("initializer_factor", None)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = MCDConfig.from_pretrained(tmp_path)
    assert config.initializer_factor == 1.0
    assert MCDConfig().initializer_factor == 1.0
    assert MCDConfig.from_dict(make_config("mcd-vit", initializer_factor=0.5).to_dict()).initializer_factor == 0.5


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0, "1"])
def test_bad_initializer_factor_names_the_field(value):
    with pytest.raises(ValueError, match="initializer_factor"):
        make_config("mcd-vit", initializer_factor=value)


# ------------------------------------------------------------------------------------------ tuple outputs
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["get_image_features", "get_text_features"])
def test_feature_methods_accept_return_dict_true(kind, method):
    """`return_dict=True` is accepted (not passed twice to the tower) and gives the `ModelOutput`."""
    model, inputs = make_model(kind), make_inputs()
    with torch.no_grad():
        explicit = call(model, method, inputs, return_dict=True)
        default = call(model, method, inputs)
    assert isinstance(explicit, ModelOutput)  # BERT's is BaseModelOutputWithPoolingAndCrossAttentions
    assert explicit.pooler_output.shape == (NUM_IMAGES if method == "get_image_features" else NUM_TEXTS, 13)
    assert torch.equal(explicit.pooler_output, default.pooler_output)


# CLIPModel.forward reads `.pooler_output` from its own `get_*_features`, which honour `config.return_dict=False`
# by returning tuples, so CLIP itself raises there; MCD asks its feature methods for a ModelOutput and does not.
TUPLE_CASES = [
    (kind, method, via)
    for kind in KINDS
    for method in ("forward", "get_image_features", "get_text_features")
    for via in ("argument", "config")
    if not (kind == "clip" and method == "forward" and via == "config")
]


@pytest.mark.parametrize(("kind", "method", "via"), TUPLE_CASES)
@pytest.mark.parametrize("output_hidden_states", [False, True])
def test_tuple_outputs_match_model_outputs(kind, method, via, output_hidden_states):
    """`return_dict=False` (as an argument, or as `config.return_dict`) gives `ModelOutput.to_tuple()`."""
    model, inputs = make_model(kind), make_inputs()
    with torch.no_grad():
        as_dict = call(model, method, inputs, return_dict=True, output_hidden_states=output_hidden_states)
        if via == "argument":
            as_tuple = call(model, method, inputs, return_dict=False, output_hidden_states=output_hidden_states)
        else:
            model.config.return_dict = False
            as_tuple = call(model, method, inputs, output_hidden_states=output_hidden_states)
    assert isinstance(as_dict, CLIPOutput if method == "forward" else ModelOutput)
    if output_hidden_states:  # else both would agree on hidden states that were dropped
        towers = (as_dict.vision_model_output, as_dict.text_model_output) if method == "forward" else (as_dict,)
        assert all(tower.hidden_states is not None for tower in towers)
    assert_tuple_matches(as_tuple, as_dict)
    # the first element is what a caller indexing the tuple expects
    first = as_dict.logits_per_image if method == "forward" else as_dict.last_hidden_state
    assert torch.equal(as_tuple[0], first)


# ------------------------------------------------------------------------------ hidden states, attentions
def _tower_outputs(model, inputs, method, **kwargs):
    """[(tower output, modality)] from `forward` (both towers) or from one feature method."""
    with torch.no_grad():
        out = call(model, method, inputs, **kwargs)
    if method == "forward":
        return [(out.vision_model_output, "vision"), (out.text_model_output, "text")]
    return [(out, "vision" if method == "get_image_features" else "text")]


TOWER_SHAPES = {
    "vision": (NUM_IMAGES, IMAGE_TOKENS, VISION),
    "text": (NUM_TEXTS, SEQ_LEN, TEXT),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["forward", "get_image_features", "get_text_features"])
def test_hidden_states_per_tower(kind, method):
    """`output_hidden_states=True` gives each tower's embeddings + one state per layer, each (B, L, D)."""
    model, inputs = make_model(kind), make_inputs()
    for output, modality in _tower_outputs(model, inputs, method, output_hidden_states=True):
        batch, length, tower = TOWER_SHAPES[modality]
        assert output.hidden_states is not None, f"{modality} tower returned no hidden states"
        assert len(output.hidden_states) == tower["num_hidden_layers"] + 1
        for state in output.hidden_states:
            assert state.shape == (batch, length, tower["hidden_size"])
        assert output.attentions is None
    # off by default, as in CLIP
    for output, _ in _tower_outputs(model, inputs, method):
        assert output.hidden_states is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["forward", "get_image_features", "get_text_features"])
def test_attentions_per_tower(kind, method):
    """With eager attention (as the common tests force it: SDPA returns no weights), `output_attentions=True` gives
    one (B, heads, L, L) map per layer of each tower, rows summing to one."""
    model, inputs = make_model(kind, attn_implementation="eager"), make_inputs()
    for output, modality in _tower_outputs(model, inputs, method, output_attentions=True):
        batch, length, tower = TOWER_SHAPES[modality]
        assert output.attentions is not None, f"{modality} tower returned no attentions"
        assert len(output.attentions) == tower["num_hidden_layers"]
        for attention in output.attentions:
            assert attention.shape == (batch, tower["num_attention_heads"], length, length)
            torch.testing.assert_close(attention.sum(-1), torch.ones(batch, tower["num_attention_heads"], length))
        assert output.hidden_states is None


# ---------------------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("kind", KINDS)
def test_projection_init_scales_with_initializer_factor(kind):
    """CLIP's scheme: each projection weight has std `width**-0.5 * initializer_factor`. With a (512, D) projection
    the std estimate is within ~1% (relative error about (2 * 512 * D)**-0.5), so 5% tolerances are tight."""
    stds = {}
    for factor in (1.0, 3.0):
        model = make_model(kind, seed=1, projection_dim=512, initializer_factor=factor)
        for name, width in (("visual_projection", VISION["hidden_size"]), ("text_projection", TEXT["hidden_size"])):
            std = getattr(model, name).weight.detach().std().item()
            assert std == pytest.approx(width**-0.5 * factor, rel=0.05), f"{name} with initializer_factor={factor}"
            stds[name, factor] = std
    for name in ("visual_projection", "text_projection"):
        assert stds[name, 3.0] / stds[name, 1.0] == pytest.approx(3.0, rel=0.05)
