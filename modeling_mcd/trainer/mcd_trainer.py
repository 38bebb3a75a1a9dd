# Copyright 2026 The mcd authors. Licensed under the Apache License, Version 2.0.
"""MCDTrainer: transformers' `Trainer` computing the MCD objective.

The Trainer subclass decides WHAT is computed (`compute_loss`: views on the device, the student and
teacher forward, the named loss terms); callbacks decide WHEN (`TeacherEMACallback` after every
optimizer step). α and m are functions of `state.global_step` only, and the views' randomness is
seeded from (seed, global_step) for the whole global batch, so a resumed run continues exactly and a sample
gets the same views however many processes share the batch.

Gradient accumulation (`--gradient_accumulation_steps k`) is contrastive-correct: `get_batch_samples` runs the
step's k micro-batches once without gradient and caches their embeddings, and each micro-batch's replay computes
the whole objective over the cache (`modeling_mcd.trainer.accumulation`), so k micro-batches of B give the loss and the
gradients of one batch of kB.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import Trainer
from transformers.trainer_utils import has_length
from transformers.utils import is_sagemaker_mp_enabled, logging

from ..data import BAD_SAMPLE_REASONS, BadSampleCounter, KeyedSamples, KeyedStream, SeededCollator
from ..data.augmentation import MCDViews
from ..data.seeding import derive_seed
from ..data.streaming import keep_process_share
from ..evaluation.tasks import RetrievalTask, ZeroShotTask, run_tasks
from ..objective.losses import progressive_alpha
from ..pretraining.adapters import student_peft_config
from ..pretraining.model import MCDForPreTraining, MCDPreTrainingOutput
from .accumulation import FeatureCache, fill_feature_cache, set_rng_state
from .checkpoints import save_checkpoint_atomically
from .nonfinite import NonFiniteStepGuard
from .single_image_steps import SingleImageSteps
from .teacher_ema import TeacherEMACallback, unwrap_pretraining_model
from .training_arguments import MCDTrainingArguments

logger = logging.get_logger(__name__)


#: Parameters that are embeddings without being `nn.Embedding` weights (ViT's [CLS] and position vectors), and
#: the temperature.
_NO_DECAY_SUFFIXES = ("logit_scale", "cls_token", "position_embeddings", "mask_token")


class MCDTrainer(Trainer):
    r"""
    `Trainer` for [`MCDForPreTraining`].

    Batches hold `pixel_values` as uint8 `(B, 3, H, W)` images at a base size (the collator's output),
    `input_ids`, `attention_mask` (and `token_type_ids`), and for MLM `mlm_input_ids`/`mlm_labels`; an
    optional `bad_samples` dict of skipped-sample counts is accumulated and logged. Both views are made
    on the training device by `views` (default: [`MCDViews`] built from the arguments and the model's
    image size).

    Args:
        model (`MCDForPreTraining`)
        args (`MCDTrainingArguments`)
        views (`MCDViews`, *optional*)
        image_mean, image_std (`Sequence[float]`, *optional*): normalisation of the views (the image
            processor's; default 0.5).
        kwargs: everything else `Trainer` takes (datasets, collator, callbacks, ...).
    """

    def __init__(
        self,
        model: MCDForPreTraining,
        args: MCDTrainingArguments,
        views: MCDViews | None = None,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        eval_tasks: Sequence[ZeroShotTask | RetrievalTask] = (),
        eval_preprocess: Callable | None = None,
        **kwargs,
    ):
        if not isinstance(args, MCDTrainingArguments):
            raise TypeError("MCDTrainer needs MCDTrainingArguments (the MCD objective's options live there)")
        model.loss_fn = args.build_loss()
        if model.teacher_text != args.teacher_text:
            raise ValueError(
                f"--teacher_text={args.teacher_text!r} but the model was built with teacher_text={model.teacher_text!r}"
            )
        self.views = views or MCDViews(
            image_size=model.config.vision_config.image_size,
            image_mean=image_mean,
            image_std=image_std,
            orig_scale=tuple(args.orig_crop_scale),
            aug_scale=tuple(args.aug_crop_scale),
        )
        if eval_tasks and eval_preprocess is None:
            raise ValueError("eval_tasks need eval_preprocess (a list of images -> pixel_values)")
        self.eval_tasks, self.eval_preprocess = list(eval_tasks), eval_preprocess
        self.ema_callback = TeacherEMACallback(
            args.base_momentum, step_was_skipped=lambda: self.accelerator.optimizer_step_was_skipped
        )
        self.nonfinite_guard = NonFiniteStepGuard(args.max_nonfinite_steps)
        self.single_image_steps = SingleImageSteps(gather=lambda tensor: self.accelerator.gather(tensor))
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks += [self.nonfinite_guard, self.ema_callback, self.single_image_steps]
        super().__init__(model=model, args=args, callbacks=callbacks, **kwargs)
        # Our compute_loss already returns the exact global-batch loss: the Trainer must not rescale it
        # by a token count or the number of processes.
        self.model_accepts_loss_kwargs = False
        # ... nor divide it by the number of micro-batches: with gradient accumulation every replay's loss already
        # has the step's gradient through its own micro-batch (`modeling_mcd.trainer.accumulation`).
        self.loss_is_scaled_for_ga = True
        self._feature_cache: FeatureCache | None = None
        self._micro_batch = 0
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_steps = 0
        self._bad_samples = BadSampleCounter()
        self._samples_since_log = 0
        self._last_log_time = time.perf_counter()

    # ------------------------------------------------------------------------------------- optimizer
    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """The parameters that get weight decay: as in open_clip and SLIP, none on the temperature, biases,
        LayerNorm weights, or embeddings (token, position and [CLS] vectors); the recipes' decay of 0.1-0.5 would
        otherwise pull `logit_scale` towards 0, i.e. the temperature towards 1."""
        embedding_params = {
            id(param)
            for module in model.modules()
            if isinstance(module, torch.nn.Embedding)
            for param in module.parameters()
        }
        names = super().get_decay_parameter_names(model)  # already without biases and LayerNorm weights
        parameters = dict(model.named_parameters(remove_duplicate=False))  # tied weights under each name
        return [
            name
            for name in names
            if parameters[name].ndim >= 2
            and id(parameters[name]) not in embedding_params
            and not name.endswith(_NO_DECAY_SUFFIXES)
        ]

    # ------------------------------------------------------------------------------ data and resume
    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The Trainer's dataloader, with each caption's MLM mask seeded by its sample's (epoch, index or stream
        position) (`KeyedSamples` / `KeyedStream` + `SeededCollator`), so a resumed run masks exactly as the
        uninterrupted one, on any number of processes."""
        dataset, collator = self.train_dataset, self.data_collator
        if dataset is None:
            return super().get_train_dataloader()
        streaming = isinstance(dataset, torch.utils.data.IterableDataset) or not has_length(dataset)
        keyed = KeyedStream(dataset) if streaming else KeyedSamples(dataset)
        self.train_dataset, self.data_collator = keyed, SeededCollator(collator, self.args.seed)
        try:
            # A stream already split across processes (`data.streaming`) is not split by accelerate again.
            return keep_process_share(super().get_train_dataloader())
        finally:
            self.train_dataset, self.data_collator = dataset, collator

    def _save_checkpoint(self, model, trial) -> None:
        # Written aside and renamed when complete: a kill in the middle never leaves a resumable-looking checkpoint.
        save_checkpoint_atomically(
            self, lambda: super(MCDTrainer, self)._save_checkpoint(model, trial), self._get_output_dir(trial)
        )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        # transformers' Trainer restores weights with a raw `load_state_dict`, but `save_pretrained` writes the
        # towers' keys in their original hub format (ViT: `encoder.layer.0.attention.attention.query` for the
        # module's `layers.0.attention.q_proj`), so the raw load silently leaves those weights, student AND
        # teacher, at their initial values (huggingface/transformers#43701). `from_pretrained` converts the
        # keys; its weights are copied in place because the optimizer holds these very parameters.
        if self.is_fsdp_enabled or is_sagemaker_mp_enabled():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = unwrap_pretraining_model(model if model is not None else self.model)
        # A LoRA run's checkpoint holds adapted layers: the loaded model is built with the same adapters.
        loaded = type(target).from_pretrained(
            resume_from_checkpoint, teacher_text=target.teacher_text, peft_config=student_peft_config(target)
        )
        target.load_state_dict(loaded.state_dict(), strict=True)

    # ----------------------------------------------------------------------------------------- loss
    def current_alpha(self) -> float:
        """α of the current step (docs/method.md §2); `constant` keeps the augmented InfoNCE at full weight."""
        return progressive_alpha(self.state.global_step, max(self.state.max_steps, 1), self.args.aug_nce_schedule)

    def _view_seed(self, training: bool) -> int:
        # One reproducible stream per (run seed, step), shared by every process: each draws the parameters of the
        # whole global batch and takes its own rows (`MCDViews`). Evaluation uses a fixed one (step key 0).
        step_key = self.state.global_step + 1 if training else 0
        return derive_seed(self.args.seed, step_key)

    def _forward(
        self, model, inputs: dict[str, Any], training: bool, micro_batch: int = 0, micro_batches: int = 1, **kwargs
    ) -> MCDPreTrainingOutput:
        """Views on the device, then the model. `inputs` are micro-batch `micro_batch` of `micro_batches` on this
        process; the views' parameters are drawn for the whole global batch, micro-batch-major then process-major
        (the order in which accelerate deals batches), so a sample's views do not depend on the split."""
        images = inputs["pixel_values"]  # (B, 3, H, W) uint8 at the base size
        rows, world = images.shape[0], self.args.world_size  # rows: equal on every process
        unwrapped = unwrap_pretraining_model(model)
        views = self.views(
            images,
            seed=self._view_seed(training),
            row_offset=(micro_batch * world + self.args.process_index) * rows,
            total_rows=micro_batches * world * rows,
            augmented=unwrapped.loss_fn.objective != "clip",  # `clip` never looks at the augmented view
        )
        # Under DeepSpeed bf16/fp16 the towers' weights are in that dtype, and nothing autocasts their inputs.
        dtype = next(unwrapped.mcd.parameters()).dtype
        return model(
            pixel_values=views.pixel_values.to(dtype),
            aug_pixel_values=views.aug_pixel_values.to(dtype) if views.aug_pixel_values is not None else None,
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            token_type_ids=inputs.get("token_type_ids"),
            mlm_input_ids=inputs.get("mlm_input_ids"),
            mlm_labels=inputs.get("mlm_labels"),
            alpha=self.current_alpha(),
            pair_ids=inputs.get("pair_ids"),
            **kwargs,
        )

    # --------------------------------------------------------------------------- gradient accumulation
    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The Trainer's micro-batches of one optimizer step; with gradient accumulation, their first pass too,
        which fills the feature cache that every micro-batch's replay computes the whole objective over."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._feature_cache, self._micro_batch = None, 0
        if self.args.gradient_accumulation_steps > 1 and batch_samples:
            model = self.model
            model.train()  # the replay runs in training mode: the first pass must draw the same dropout
            count = len(batch_samples)
            self._feature_cache = fill_feature_cache(
                batch_samples,
                lambda index, batch: (
                    self._forward(
                        model, self._prepare_inputs(batch), True, index, count, embed_only=True
                    ).objective_inputs
                ),
                self.args.device,
            )
        return batch_samples, num_items_in_batch

    def _replay(self, model, inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Micro-batch `self._micro_batch` again, with gradients, against the cache: (loss, terms, logit scale)."""
        cache, index = self._feature_cache, self._micro_batch
        self._micro_batch += 1
        count = cache.num_micro_batches
        set_rng_state(cache.rng_states[index], self.args.device)  # the first pass's dropout
        fresh = self._forward(model, inputs, True, index, count, embed_only=True, with_teacher=False).objective_inputs
        # The temperature's gradient is the same in every replay: take it once, in the last (synchronised) one.
        scale = fresh.logit_scale if index == count - 1 else fresh.logit_scale.detach()
        loss_fn = unwrap_pretraining_model(model).loss_fn
        terms = loss_fn.terms(
            cache.global_inputs(index, fresh).replace(logit_scale=scale),
            self.current_alpha(),
            mlm_count=cache.mlm_count,
            # Local loss: this process's rows of every micro-batch are its anchors
            # (`modeling_mcd.trainer.accumulation`).
            anchor_rows=cache.local_rows(self.args.device) if loss_fn.local_loss else None,
        )
        # Every replay's loss has the whole objective's gradient through its block; its reported value is a k-th of
        # the shared terms plus its own MLM share, so the step's summed loss is the objective's value.
        mlm = loss_fn.beta_mlm * terms["mlm_loss"] if "mlm_loss" in terms else 0.0
        reported = (terms["loss"] - mlm).detach() / count + (mlm.detach() if torch.is_tensor(mlm) else 0.0)
        loss = terms["loss"] - terms["loss"].detach() + reported
        return loss, terms, fresh.logit_scale.detach()

    # ----------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        inputs = dict(inputs)
        bad = inputs.pop("bad_samples", None)
        training = model.training
        if bad and training:
            self._bad_samples.update(bad)
        outputs = None
        if training and self._feature_cache is not None:
            loss, terms, scale = self._replay(model, inputs)
            share = 1.0 / self._feature_cache.num_micro_batches
        else:
            outputs = self._forward(model, inputs, training)
            loss, terms, scale, share = outputs.loss, outputs.losses, outputs.objective_inputs.logit_scale, 1.0
        if training:
            # Kept on the device (no host sync per step); read when logging. Per optimizer step, every term counts
            # once: a k-th per replay, except the MLM shares, which add up to the step's MLM loss.
            for name, value in terms.items():
                if name != "loss":
                    self._term_sums[name] += value.detach().float() * (1.0 if name == "mlm_loss" else share)
            self._term_sums["alpha"] += self.current_alpha() * share
            self._term_sums["logit_scale"] += scale.float() * share
            self._term_steps += share
            self._samples_since_log += inputs["pixel_values"].shape[0] * self.args.world_size
            self.single_image_steps.observe(inputs.get("pair_ids"))
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The validation loss of the objective; there are no logits/labels to return.
        with torch.no_grad():
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """The objective's loss on the evaluation split (when there is one), plus every evaluation task
        (zero-shot, retrieval) run on the student, all logged together.

        Every process runs the tasks on the same data (under ZeRO-3 the forward passes are collective); they
        all get the same metrics.
        """
        metrics: dict[str, float] = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        if self.eval_tasks:
            student = unwrap_pretraining_model(self.model).export_student()
            tokenizer = self.processing_class
            task_metrics = run_tasks(self.eval_tasks, student, tokenizer, self.eval_preprocess)
            prefixed = {f"{metric_key_prefix}_{name}": value for name, value in task_metrics.items()}
            self.log(prefixed)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, prefixed)
            metrics.update(prefixed)
        return metrics

    def _get_grad_norm(self, model, grad_norm=None):
        # The Trainer's total gradient norm of the step (computed for clipping and logging anyway) also tells the
        # non-finite guard whether to skip the step, which then needs no norms of its own.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self.nonfinite_guard.use_grad_norm(grad_norm)
        return grad_norm

    # -------------------------------------------------------------------------------------- logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_steps:
            # Every term is already a global-batch value on each rank (mlm: its exact share), so the mean
            # over processes is the global value.
            names = sorted(self._term_sums)
            device = self.args.device
            sums = [torch.as_tensor(self._term_sums[n], dtype=torch.float32, device=device) for n in names]
            local = torch.stack(sums) / self._term_steps  # the one host sync of the logging interval
            averaged = self.accelerator.reduce(local, reduction="mean") if self.args.world_size > 1 else local
            loss_fn = unwrap_pretraining_model(self.model).loss_fn
            shown = {name: round(value, 6) for name, value in zip(names, averaged.tolist())}
            if loss_fn.objective == "clip":
                shown.pop("alpha", None)  # α weights the augmented view, which `clip` does not use
            logs.update(shown)
            if self.ema_callback.last_momentum is not None and loss_fn.uses_teacher:
                logs["momentum"] = self.ema_callback.last_momentum
            elapsed = time.perf_counter() - self._last_log_time
            if elapsed > 0:
                logs["samples_per_second"] = round(self._samples_since_log / elapsed, 3)
            if self.nonfinite_guard.skipped_steps:
                logs["nonfinite_steps"] = len(self.nonfinite_guard.skipped_steps)
            if self.single_image_steps.flush():  # a collective, as the reductions above
                logs["single_image_steps"] = self.single_image_steps.count
            skipped = self.total_bad_sample_counts()
            logs.update({f"skipped_{reason}": count for reason, count in skipped.items() if count})
            self._term_sums.clear()
            self._term_steps = 0
            self._samples_since_log = 0
            self._last_log_time = time.perf_counter()
        super().log(logs, start_time)

    def total_bad_sample_counts(self) -> dict[str, int]:
        """Skipped samples so far, by reason, summed over all processes (a collective: call on every rank)."""
        local = torch.tensor([self._bad_samples.counts[r] for r in BAD_SAMPLE_REASONS], device=self.args.device)
        total = self.accelerator.reduce(local, reduction="sum") if self.args.world_size > 1 else local
        return dict(zip(BAD_SAMPLE_REASONS, (int(v) for v in total.tolist())))

    def skipped_sample_rows(self) -> list[dict[str, Any]]:
        """The rows skipped while training (`data.SkippedRow` records), from every process (a collective)."""
        rows = list(self._bad_samples.rows.values())
        return gather_object(rows) if self.args.world_size > 1 else rows


__all__ = ["MCDTrainer"]
