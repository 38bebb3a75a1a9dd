# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""MCDForPreTraining: the student dual encoder + a BERT MLM head + the momentum (EMA) teacher.

One forward pass (after the collator and the view augmentation, before the optimizer step):

- the student image tower runs on the original and the augmented view in ONE batched call;
- the text tower runs on the clean ids and on the MLM-masked ids in ONE batched call (same shape);
- the teacher image tower (and, with `teacher_text="ema"`, a teacher text tower) runs on both views
  under `no_grad`;
- `MCDLoss` computes every term over the global batch.

The teacher lives inside this module with `requires_grad=False` (ALBEF's pattern): DDP keeps it in
sync, ZeRO-3 partitions it exactly like the student, and every checkpoint saves it, so a resumed run
continues with the same teacher. Inference needs only `model.mcd` (an `MCDModel`), which is what
`export_student` returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import initialization as init
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from ..configuration_mcd import MCDConfig
from ..conversion import load_state_exactly
from ..modeling_mcd import MCDModel, MCDPreTrainedModel, build_tower, encode_tower
from ..objective import MCDLoss, ObjectiveInputs
from .adapters import effective_weights, freeze_base_weights, merged_student, peft_student, wrap_student
from .locked_text import TextFeatureMemo
from .output import MCDPreTrainingOutput, unit
from .teacher import autocast_to_inputs, copy_params_, ema_update_, paired_parameters, upcast_
from .zero3 import gathered_for_writing, is_partitioned, whole_copy

if TYPE_CHECKING:
    from peft import PeftModel

TEACHER_TEXT_CHOICES = ("stopgrad", "ema")


class MCDForPreTraining(MCDPreTrainedModel):
    r"""
    MCD pretraining model: `mcd` (the student [`MCDModel`]), `mlm_head` (BERT's MLM head, decoder tied
    to the word embeddings) and the EMA teacher towers.

    Args:
        config (`MCDConfig`): the student's config.
        loss_fn (`MCDLoss`, *optional*): the objective; defaults to the full MCD objective of docs/method.md §6.
        teacher_text (`str`, *optional*, defaults to `"stopgrad"`): the teacher-side text embedding v̄:
            `"stopgrad"` uses the student's v without gradient (the default, docs/method.md §Notation), `"ema"` keeps an
            EMA copy of the text tower and its projection.
        peft_config (`peft.PeftConfig`, *optional*): adapters to put on the student
            (`modeling_mcd.pretraining.adapters`); how `from_pretrained` rebuilds a LoRA run's checkpoint.
    """

    _tied_weights_keys = {
        "mlm_head.predictions.decoder.weight": "mcd.text_model.embeddings.word_embeddings.weight",
        "mlm_head.predictions.decoder.bias": "mlm_head.predictions.bias",
    }

    def __init__(
        self, config: MCDConfig, loss_fn: MCDLoss | None = None, teacher_text: str = "stopgrad", peft_config=None
    ):
        super().__init__(config)
        if teacher_text not in TEACHER_TEXT_CHOICES:
            raise ValueError(f"teacher_text must be one of {TEACHER_TEXT_CHOICES}, got {teacher_text!r}")
        for field in ("hidden_act", "layer_norm_eps"):
            if not hasattr(config.text_config, field):
                raise ValueError(f"MCDConfig.text_config has no `{field}`: the MLM head needs a BERT-like text tower")
        self.teacher_text = teacher_text
        self.text_memo: TextFeatureMemo | None = None  # set by `lock_text_tower`
        # transformers ties `_tied_weights_keys` only when the config asks for it; follow the text tower's choice
        # (BERT ties its MLM decoder to the word embeddings).
        config.tie_word_embeddings = bool(getattr(config.text_config, "tie_word_embeddings", True))
        self.loss_fn = loss_fn if loss_fn is not None else MCDLoss()
        self.mcd = MCDModel(config)
        self.mlm_head = BertOnlyMLMHead(config.text_config)
        # The decoder ties to the text tower's own word embeddings, wherever it keeps them (CLIP: `token_embedding`).
        words = self.mcd.text_model.get_input_embeddings().weight
        words_name = next(name for name, param in self.mcd.text_model.named_parameters() if param is words)
        self._tied_weights_keys = {
            **self._tied_weights_keys,
            "mlm_head.predictions.decoder.weight": f"mcd.text_model.{words_name}",
        }

        # The teacher towers mirror the student's structure; weights are copied from the student below.
        self.teacher_vision_model = build_tower(config.vision_config, config.vision_pooling)
        self.teacher_visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        if teacher_text == "ema":
            self.teacher_text_model = build_tower(config.text_config, config.text_pooling)
            self.teacher_text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.post_init()
        self._freeze_teacher()
        self.reset_teacher()
        if peft_config is not None:
            self.add_adapters(peft_config)

    @classmethod
    def _from_config(cls, config: MCDConfig, **kwargs) -> MCDForPreTraining:
        """`PreTrainedModel._from_config` (the way to build a fresh model under DeepSpeed ZeRO-3: it partitions
        while constructing), with the teacher made a copy of the student again: under ZeRO-3 transformers
        re-initialises every weight after construction (`initialize_weights_zero3`), teacher included."""
        model = super()._from_config(config, **kwargs)
        model.reset_teacher()
        return model

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> MCDForPreTraining:
        """`PreTrainedModel.from_pretrained`, with the teacher frozen again: transformers' loading replaces every
        parameter by a new one with `requires_grad=True`, which would hand the teacher to the optimizer."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # a tuple with output_loading_info
        model._freeze_teacher()
        if peft_student(model) is not None:
            freeze_base_weights(model)
        return loaded

    # -------------------------------------------------------------------------------------- teacher
    def _freeze_teacher(self) -> None:
        for module in self.teacher_modules():
            module.requires_grad_(False)

    def teacher_modules(self) -> list[nn.Module]:
        modules = [self.teacher_vision_model, self.teacher_visual_projection]
        if self.teacher_text == "ema":
            modules += [self.teacher_text_model, self.teacher_text_projection]
        return modules

    def _student_modules(self) -> list[nn.Module]:
        modules = [self.mcd.vision_model, self.mcd.visual_projection]
        if self.teacher_text == "ema":
            modules += [self.mcd.text_model, self.mcd.text_projection]
        return modules

    def teacher_student_parameters(self) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
        """The teacher's parameters and the student's twins, paired by name (same order). With adapters, a twin is the
        student's effective weight, W + ΔW (`modeling_mcd.pretraining.adapters.effective_weights`),
        which the teacher follows."""
        teacher, student = [], []
        for t_module, s_module in zip(self.teacher_modules(), self._student_modules()):
            t_params, s_params = paired_parameters(t_module, effective_weights(s_module))
            teacher += t_params
            student += s_params
        return teacher, student

    @torch.no_grad()
    def reset_teacher(self) -> None:
        """Make the teacher an exact copy of the student (the start of training, docs/method.md §5)."""
        copy_params_(*self.teacher_student_parameters())

    def keep_teacher_fp32(self) -> None:
        """Put the teacher's weights back in float32 after a backend cast the whole model down (DeepSpeed's bf16 and
        fp16 modes cast every parameter, this frozen copy included): `modeling_mcd.pretraining.teacher.upcast_`."""
        upcast_(self.teacher_student_parameters()[0])

    def _teacher_autocast(self, inputs: torch.Tensor):
        """The teacher's forward in the precision of the towers' inputs
        (`modeling_mcd.pretraining.teacher.autocast_to_inputs`)."""
        return autocast_to_inputs(self.teacher_visual_projection.weight.dtype, inputs)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """θ̄ ← m·θ̄ + (1 − m)·θ after an optimizer step (docs/method.md §5, paper Eq. 12); ZeRO-3 safe."""
        ema_update_(*self.teacher_student_parameters(), momentum=momentum)

    def train(self, mode: bool = True) -> MCDForPreTraining:
        # The teacher, and a locked text tower, never use dropout, whatever mode the student is in.
        super().train(mode)
        for module in self.teacher_modules() + ([self.mcd.text_model] if self.text_memo is not None else []):
            module.eval()
        return self

    def lock_text_tower(self) -> None:
        """LiT (`modeling_mcd.pretraining.locked_text`): the student's text tower gets no gradient and no dropout, and
        its pooled features are computed once per caption; its projection keeps training. Needs
        `teacher_text="stopgrad"`; the objective must not use MLM."""
        if self.teacher_text == "ema":
            raise ValueError("--lock_text_tower needs --teacher_text stopgrad: an EMA copy of a locked tower is itself")
        self.mcd.text_model.requires_grad_(False)
        self.text_memo = TextFeatureMemo()
        self.train(self.training)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # BERT's MLM-head init, set on the module that OWNS each weight: transformers skips custom-code modules
        # that have no parameters of their own (`BertOnlyMLMHead`, the transform), and under ZeRO-3 it gathers
        # only a module's own and its direct children's weights before calling this (`initialize_weights_zero3`).
        head = self.mlm_head.predictions
        if module is head.transform.dense:
            init.normal_(module.weight, std=self.config.text_config.initializer_range)
            init.zeros_(module.bias)
        elif module is head.transform.LayerNorm:
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif module is head:
            init.zeros_(module.bias)  # the decoder's bias is tied to it, its weight to the word embeddings

    def add_adapter(self, *args, **kwargs):
        """transformers' `add_adapter` would adapt the whole wrapper, the teacher and the MLM head included, and the
        teacher would no longer follow the student's effective weights: refused, naming `add_adapters`."""
        raise TypeError(
            "MCDForPreTraining.add_adapter would put adapters on the teacher and the MLM head too; use "
            "add_adapters(peft_config), which adapts the student only and keeps the teacher following it"
        )

    def add_adapters(self, peft_config) -> PeftModel:
        r"""
        Put `peft_config`'s adapters (LoRA, LoHa, LoKr) on the student `self.mcd`, in place; in the student only they
        train, and the teacher restarts at the student's effective weights W + ΔW (`modeling_mcd.pretraining.adapters`).

        Args:
            peft_config (`peft.PeftConfig`): e.g. from `modeling_mcd.trainer.peft_configs.build_peft_config`.

        Returns:
            `peft.PeftModel` around `self.mcd`, also kept as `self.peft_student` (not a submodule: parameter names stay
            `mcd.…`, so the teacher, the Trainer and the checkpoints see one module tree).
        """
        student = wrap_student(self.mcd, peft_config)
        self.__dict__["peft_student"] = student
        freeze_base_weights(self)
        for tower in (self.mcd.vision_model, self.mcd.text_model):
            if tower.is_activation_checkpointing:
                # Frozen embeddings: a checkpointed block's input must require grad for gradients to reach adapters.
                tower.enable_input_require_grads()
        self.reset_teacher()
        return student

    # -------------------------------------------------------------------------------------- encoders
    def _teacher_image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ū (or ū̃): the teacher image tower through the student's own encoder path. (B, 3, S, S) -> (B, P)"""
        outputs = encode_tower(
            self.teacher_vision_model,
            self.teacher_visual_projection,
            self.config.vision_pooling,
            pixel_values=pixel_values,
        )
        return unit(outputs.pooler_output)

    def _teacher_text_embeds(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        """v̄ from the EMA text tower (`teacher_text="ema"`). (B, L) -> (B, P)"""
        outputs = encode_tower(
            self.teacher_text_model,
            self.teacher_text_projection,
            self.config.text_pooling,
            attention_mask,
            input_ids=input_ids,
            token_type_ids=token_type_ids,
        )
        return unit(outputs.pooler_output)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        aug_pixel_values: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        alpha: float = 0.0,
        embed_only: bool = False,
        with_teacher: bool = True,
        pair_ids: torch.Tensor | None = None,
    ) -> MCDPreTrainingOutput:
        r"""
        Args:
            pixel_values (`(B, 3, S, S)`): the original view x (normalised).
            input_ids, attention_mask, token_type_ids (`(B, L)`): the clean caption.
            aug_pixel_values (`(B, 3, S, S)`, *optional*): the augmented view x̃; needed by `mpnce`/`mcd`.
            mlm_input_ids, mlm_labels (`(B, L)`, *optional*): the masked caption and its targets (-100
                where not masked); needed when the objective uses MLM.
            alpha (`float`): progressive-distillation α of the current step (docs/method.md §2).
            embed_only (`bool`, *optional*, defaults to `False`): return the embeddings, the MLM logits and the
                logit scale (with their gradients) without computing the loss: gradient accumulation computes it
                over the cached embeddings of every micro-batch (`modeling_mcd.trainer.accumulation`).
            with_teacher (`bool`, *optional*, defaults to `True`): run the teacher when the objective needs it;
                `False` when its embeddings are already cached.
            pair_ids (`(B,)`, *optional*): the source of each row, handed to the loss (`MCDLoss.forward`).

        Returns:
            [`MCDPreTrainingOutput`]
        """
        loss_fn = self.loss_fn
        batch = pixel_values.shape[0]
        needs_aug = loss_fn.objective != "clip"
        needs_teacher = loss_fn.uses_teacher
        use_mlm = loss_fn.use_mlm
        if needs_aug and aug_pixel_values is None:
            raise ValueError(f"objective={loss_fn.objective!r} needs `aug_pixel_values` (the augmented view)")
        if use_mlm and self.text_memo is not None:
            raise ValueError("--lock_text_tower needs --use_mlm false: MLM trains the text tower, which is locked")
        if use_mlm and (mlm_input_ids is None or mlm_labels is None):
            raise ValueError("the objective uses MLM (use_mlm=True) but `mlm_input_ids`/`mlm_labels` are missing")

        # Student images: both views in one call. (2B, 3, S, S) -> (2B, P)
        views = torch.cat([pixel_values, aug_pixel_values]) if needs_aug else pixel_values
        image_all = unit(self.mcd.get_image_features(views, return_dict=True).pooler_output)
        image_embeds, aug_image_embeds = (image_all[:batch], image_all[batch:]) if needs_aug else (image_all, None)

        if self.text_memo is not None:  # a locked tower: its memoised features, then the trained projection
            pooled = self.text_memo.pooled(
                self.mcd.text_model, self.config.text_pooling, input_ids, attention_mask, token_type_ids
            )  # (B, D)
            projection = self.mcd.text_projection
            text_embeds = unit(projection(pooled.to(projection.weight.dtype)))  # (B, P)
        else:
            # Student text: clean and masked ids in one call (same padding, so they stack). The clean half gives v,
            # the masked half's hidden states feed the MLM head. (2B, L) -> (2B, P) and (2B, L, D)
            text_ids = torch.cat([input_ids, mlm_input_ids]) if use_mlm else input_ids
            repeat = 2 if use_mlm else 1
            text_outputs = self.mcd.get_text_features(
                text_ids,
                attention_mask=attention_mask.repeat(repeat, 1) if attention_mask is not None else None,
                token_type_ids=token_type_ids.repeat(repeat, 1) if token_type_ids is not None else None,
                return_dict=True,
            )
            text_embeds = unit(text_outputs.pooler_output[:batch])  # (B, P)

        mlm_logits = mlm_targets = None
        if use_mlm:
            # Only masked positions go through the (vocab-sized) head: (M, D) -> (M, V).
            masked = mlm_labels != -100  # (B, L)
            mlm_logits = self.mlm_head(text_outputs.last_hidden_state[batch:][masked])
            mlm_targets = mlm_labels[masked]  # (M,)

        teacher_image = teacher_aug = teacher_text = None
        if needs_teacher and with_teacher:
            with torch.no_grad(), self._teacher_autocast(pixel_values):
                teacher_inputs = torch.cat([pixel_values, aug_pixel_values])  # (2B, 3, S, S)
                teacher_all = self._teacher_image_embeds(teacher_inputs.to(self.teacher_visual_projection.weight.dtype))
                teacher_image, teacher_aug = teacher_all[:batch], teacher_all[batch:]
                if self.teacher_text == "ema":
                    teacher_text = self._teacher_text_embeds(input_ids, attention_mask, token_type_ids)

        inputs = ObjectiveInputs(
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            logit_scale=self.mcd.get_logit_scale(),
            aug_image_embeds=aug_image_embeds,
            teacher_image_embeds=teacher_image,
            teacher_aug_image_embeds=teacher_aug,
            teacher_text_embeds=teacher_text,
            mlm_logits=mlm_logits,
            mlm_labels=mlm_targets,
            pair_ids=pair_ids,
        )
        if embed_only:
            return MCDPreTrainingOutput(objective_inputs=inputs)
        losses = loss_fn(inputs, alpha)
        inputs.logit_scale = inputs.logit_scale.detach()
        return MCDPreTrainingOutput(loss=losses["loss"], losses=losses, objective_inputs=inputs)

    # ------------------------------------------------------------------------------------ conversion
    @classmethod
    def from_student(cls, student: MCDModel, **kwargs) -> MCDForPreTraining:
        """Wrap an existing `MCDModel` (e.g. built from pretrained towers): its weights become the student
        and the teacher starts as an exact copy of them; the MLM head is new."""
        model = cls(student.config, **kwargs)
        load_state_exactly(model.mcd, student.state_dict())
        model.tie_weights()
        model.reset_teacher()
        return model

    @torch.no_grad()
    def load_tower_weights(self, vision_model: nn.Module | None, text_model: nn.Module | None) -> None:
        """Copy pretrained towers' weights into the student's towers (`None`: that tower keeps its from-scratch
        initialisation), then make the teacher their copy again.

        Works on a model partitioned by DeepSpeed ZeRO-3 too (built with `_from_config`): each tower's parameters
        are gathered whole, written on rank 0 and partitioned again; every process must call it. The towers given
        are whole (not partitioned) and of the student's tower classes.
        """
        pairs = [
            (tower, source)
            for tower, source in ((self.mcd.vision_model, vision_model), (self.mcd.text_model, text_model))
            if source is not None
        ]
        params = [param for tower, _ in pairs for param in tower.parameters()]
        with gathered_for_writing(params):
            for tower, source in pairs:
                state = source.state_dict()
                if getattr(tower, "pooler", None) is None:  # built without its pooler: pooling is "cls" or "mean"
                    state = {key: value for key, value in state.items() if not key.startswith("pooler.")}
                load_state_exactly(tower, state)
        self.reset_teacher()

    def export_student(self) -> MCDModel:
        """The inference model (docs/method.md §7): the student only, no teacher, no MLM head. With adapters, a plain
        `MCDModel` with the adapters merged into a copy (`modeling_mcd.pretraining.adapters.merged_student`).

        Under DeepSpeed ZeRO-3 each process holds only a shard of every weight, so the student is gathered
        into a new, whole `MCDModel` on every process: a collective, call it on all of them.
        """
        if peft_student(self) is not None:
            return merged_student(self)
        return whole_copy(self.mcd) if is_partitioned(self.mcd.parameters()) else self.mcd


__all__ = ["TEACHER_TEXT_CHOICES", "MCDForPreTraining", "MCDPreTrainingOutput"]
