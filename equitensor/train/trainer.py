"""The training loop: epochs of optimiser steps on shuffled batches, validation with the EMA
weights, best/last checkpoints, early stopping, and the final evaluation.

One process or many (torchrun + DDP, see :mod:`equitensor.train.distributed`); only the main
rank logs and writes files. ``resume=True`` continues from ``checkpoints/last.pt`` exactly:
same weights, optimiser, scheduler, EMA, RNG states, and position inside the epoch.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from equitensor.datasets import MaxSizeBatchSampler, collate_graphs
from equitensor.datasets.store import file_sha256
from equitensor.serialization import model_record, remove_stale_temporaries, save_model
from equitensor.tp.backends.auto import resolve_backends
from equitensor.train import checkpoint as ckpt
from equitensor.train.config import (
    RESUME_FIXED_KEYS,
    RESUME_FIXED_KEYS_COSINE,
    ConfigError,
    TrainConfig,
    stage_two_start,
)
from equitensor.train.data import PreparedData, prepare_data
from equitensor.train.distributed import (
    DistributedContext,
    ShardedBatches,
    init_distributed,
    shard,
    shutdown_distributed,
)
from equitensor.train.ema import ExponentialMovingAverage, StochasticWeightAverage
from equitensor.train.evaluation import Collected, composition_baseline, evaluate
from equitensor.train.logs import RunLog, TensorBoardLog, write_config, write_history, write_json, write_text
from equitensor.train.losses import WeightedLoss, batch_counts
from equitensor.train.metrics import format_table
from equitensor.train.model_factory import DTYPES, initial_model
from equitensor.train.optim import build_optimizer, build_scheduler, current_lr, step_scheduler


@dataclass
class TrainResult:
    """Where the run wrote its files, its per-epoch history and the final metrics table rows.

    Returned by :func:`run_training` (see its example; a run takes too long for a doctest):

    >>> import dataclasses
    >>> [field.name for field in dataclasses.fields(TrainResult)]
    ['run_dir', 'model_path', 'history', 'final_metrics', 'best_epoch']
    """

    run_dir: Path
    model_path: Path
    history: list[dict]
    final_metrics: list[dict]
    best_epoch: int | None


class Trainer:
    """Holds the state of one training run; :meth:`run` trains and evaluates."""

    def __init__(self, config: TrainConfig, context: DistributedContext, resume: bool = False) -> None:
        self.config = config
        self.context = context
        self.run_dir = config.run_dir
        self.log = RunLog(self.run_dir, enabled=context.is_main)
        self.dtype = DTYPES[config.dtype]
        self._check_run_dir(resume)
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        _seed_everything(config.seed)
        # bit-reproducible runs: with several threads a scatter's summation order otherwise varies
        # (two identical runs differed by 1e-6 in forces, 8e-4 in an epoch's loss); ops without a
        # deterministic version warn instead of failing
        torch.use_deterministic_algorithms(config.deterministic, warn_only=True)

        self.log(
            f"equitensor train: run {config.run_name} in {self.run_dir} "
            f"({context.world_size} process(es), device {context.device}, {config.dtype})"
        )
        start = time.perf_counter()
        self.data: PreparedData = prepare_data(config, self.dtype)
        self.data_fingerprints = data_fingerprints(config)
        for note in self.data.notes:
            self.log(note)
        self.log(
            f"data: {len(self.data.train)} train, {len(self.data.valid)} validation, "
            f"{len(self.data.test)} test structures; elements {self.data.atomic_numbers} "
            f"(read and graphs built in {time.perf_counter() - start:.1f} s)"
        )
        self.model, notes = initial_model(
            config,
            self.data.atomic_numbers,
            self.data.e0s,
            self.data.avg_num_neighbors,
            self.data.scale,
            self.data.shift,
        )
        self.model = self.model.to(context.device)
        for name, choice in resolve_backends(self.model).items():  # rank 0 chooses for all
            notes.append(f"backend='auto' of {name or 'the model'}: {choice}")
        for note in notes:
            self.log(note)
        num_parameters = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"model: {type(self.model).__name__} with {num_parameters} parameters, config {self.model.config}"
        )
        report = getattr(self.model, "equivariance_report", dict)()
        if report:  # approximate pieces (CP below exact rank, grid functions): say how approximate
            worst = max(report, key=report.get)
            self.log(
                f"approximately equivariant: {len(report)} piece(s), largest measured relative "
                f"equivariance error {report[worst]:.2e} ({worst}); see model.equivariance_report()"
            )
        self.loss = WeightedLoss(
            config.energy_weight,
            config.forces_weight,
            config.stress_weight,
            config.loss,
            config.huber_delta,
            virials_weight=config.virials_weight,
        )
        self.compute_stress_in_eval = self.loss.needs_stress or self.data.has_stress
        self.optimizer = build_optimizer(config, self.model)
        self.scheduler = build_scheduler(config, self.optimizer)
        self.ema = ExponentialMovingAverage(self.model, config.ema_decay) if config.ema else None
        self.stage_two_start = stage_two_start(config) if config.swa else None
        self.average = StochasticWeightAverage(self.model) if config.swa and config.swa_average else None

        sampler = MaxSizeBatchSampler.for_dataset(
            self.data.train_graphs,
            max_structures=config.batch_size,
            max_atoms=config.max_atoms_per_batch,
            shuffle=True,
            seed=config.seed,
        )
        self.batches = ShardedBatches(sampler, context.rank, context.world_size)
        # the epoch's remaining steps, read and collated by torch's DataLoader (in worker processes
        # when num_workers > 0, prefetching while the model trains; pinned memory for a GPU)
        self.steps = EpochSteps()
        self.loader = DataLoader(
            self.data.train_graphs,
            batch_sampler=self.steps,
            collate_fn=collate_graphs,
            num_workers=config.num_workers,
            persistent_workers=config.persistent_workers and config.num_workers > 0,
            pin_memory=context.device.type == "cuda",
        )
        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0  # optimiser steps done in the current epoch
        self.global_step = 0
        self.epoch_loss_sum = 0.0
        self.best_loss = float("inf")
        self.best_epoch: int | None = None
        self.evals_since_best = 0
        self.history: list[dict] = []
        if resume:
            self._resume()
        self.train_model = (
            DistributedDataParallel(
                self.model, device_ids=[context.device] if context.device.type == "cuda" else None
            )
            if context.distributed
            else self.model
        )

    # ---------------------------------------------------------------- run folder and resume
    def _check_run_dir(self, resume: bool) -> None:
        last = ckpt.checkpoint_dir(self.run_dir) / ckpt.LAST
        if resume and not last.is_file():
            raise ConfigError(
                f"--resume: {last} does not exist, there is no run to continue in {self.run_dir}"
            )
        if not resume and last.is_file():
            raise ConfigError(
                f"{self.run_dir} already holds a run ({last}); pass --resume to continue it, "
                "or choose another output_dir / name"
            )

    def _resume(self) -> None:
        path = ckpt.checkpoint_dir(self.run_dir) / ckpt.LAST
        state = ckpt.load_checkpoint(path)
        saved = state["config"]
        current = self.config.to_dict()
        changed = [key for key in current if saved.get(key) != current.get(key)]
        fixed = set(RESUME_FIXED_KEYS)
        if self.config.scheduler == "cosine":
            fixed |= set(RESUME_FIXED_KEYS_COSINE)
        refused = [key for key in changed if key in fixed]
        if refused:
            details = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in refused)
            raise ConfigError(f"cannot resume {path} with a different {', '.join(refused)} ({details})")
        for name, digest in state.get("data_fingerprints", {}).items():
            if self.data_fingerprints.get(name) != digest:
                raise ConfigError(
                    f"cannot resume {path}: the content of {name} ({current.get(name)}) changed since "
                    "the run started (SHA-256 differs); start a new run for new data"
                )
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        progress = state["progress"]
        self.epoch = progress["epoch"]
        self.step_in_epoch = progress["step_in_epoch"]
        self.global_step = progress["global_step"]
        self.epoch_loss_sum = progress["epoch_loss_sum"]
        self.best_loss = progress["best_loss"]
        self.best_epoch = progress["best_epoch"]
        self.evals_since_best = progress["evals_since_best"]
        self.history = list(state["history"])
        ckpt.set_rng_state(state["rng"])
        if self.in_stage_two:  # its loss weights; lr and best model come with the checkpoint
            self.loss = self._stage_two_loss()
        self.log(
            f"resumed from {path}: epoch {self.epoch + 1}, step {self.step_in_epoch} of that epoch "
            f"({self.global_step} steps done)"
        )
        for key in changed:  # every other setting is read from the config as training goes on
            if key in ("lr", "weight_decay"):  # the saved optimiser state carried the old value
                for group in self.optimizer.param_groups:
                    group[key] = current[key]
            if key == "ema_decay" and self.ema is not None:
                self.ema.decay = float(current[key])
            self.log(f"resume: {key} {saved.get(key)!r} -> {current.get(key)!r} (applied)")

    # ---------------------------------------------------------------- checkpoints
    def _eval_model_context(self):
        """The weights validated and saved: stage two's average once it has one, else the EMA."""
        if self.average is not None and self.in_stage_two and self.average.num_updates:
            return self.average.applied(self.model)
        return self.ema.applied(self.model) if self.ema is not None else nullcontext(self.model)

    # ---------------------------------------------------------------- stage two (swa)
    @property
    def in_stage_two(self) -> bool:
        """Whether the epoch now trained (epochs done: ``self.epoch``) belongs to stage two."""
        return self.stage_two_start is not None and self.epoch >= self.stage_two_start

    def _stage_two_loss(self) -> WeightedLoss:
        config = self.config
        stress = config.stress_weight if config.swa_stress_weight is None else config.swa_stress_weight
        return replace(
            self.loss,
            energy_weight=config.swa_energy_weight,
            forces_weight=config.swa_forces_weight,
            stress_weight=stress,
        )

    def _enter_stage_two(self) -> None:
        """Loss weights and learning rate of stage two; its best model is selected afresh (its
        validation loss has other weights)."""
        self.loss = self._stage_two_loss()
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.swa_lr
        self.best_loss, self.best_epoch, self.evals_since_best = float("inf"), None, 0
        w = self.loss.weights
        self.log(
            f"stage two from epoch {self.epoch + 1}: loss weights energy {w['energy']:g}, forces "
            f"{w['forces']:g}, stress {w['stress']:g}; lr {self.config.swa_lr:g}, no scheduler"
            + ("; validating the average of the stage-two weights" if self.average is not None else "")
        )

    def _state(self) -> dict:
        with self._eval_model_context():
            record = model_record(self.model)
            record["state_dict"] = {k: v.detach().clone() for k, v in record["state_dict"].items()}
        return {
            "model_record": record,
            "dtype": self.config.dtype,
            "config": self.config.to_dict(),
            "model_state": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "average": None if self.average is None else self.average.state_dict(),
            "progress": {
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
                "epoch_loss_sum": self.epoch_loss_sum,
                "best_loss": self.best_loss,
                "best_epoch": self.best_epoch,
                "evals_since_best": self.evals_since_best,
            },
            "history": self.history,
            "rng": ckpt.rng_state(),
            "data_fingerprints": self.data_fingerprints,
        }

    def save(self, name: str) -> None:
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingDiverged(
                f"training diverged by epoch {self.epoch}: non-finite weights; not saving them as "
                f"{name} (earlier checkpoints in {ckpt.checkpoint_dir(self.run_dir)} are kept)"
            )
        if self.context.is_main:
            ckpt.save_checkpoint(ckpt.checkpoint_dir(self.run_dir) / name, self._state())

    # ---------------------------------------------------------------- one epoch
    def _step(self, global_indices: list[int], local_indices: list[int], batch) -> float:
        """One optimiser step on a global batch (``batch``: this rank's part, collated); returns
        the global batch loss."""
        counts = batch_counts(self.data.train_graphs.num_atoms[global_indices])
        # a rank without structures in this batch computes a zero-weighted copy of one (see
        # EpochSteps), so it still takes part in DDP's gradient all-reduce
        weight = 1.0 if local_indices else 0.0
        batch = batch.to(self.context.device)
        predictions = self.train_model(
            batch.graph, compute_forces=True, compute_stress=self.loss.needs_stress, training=True
        )
        terms = self.loss.sums(predictions, batch.labels, batch.graph)
        local_loss = weight * self.loss.combine(terms, counts)
        # DDP averages gradients over ranks; scaling by world_size makes the result the gradient
        # of the global-batch loss (the sum of the ranks' parts)
        self.optimizer.zero_grad(set_to_none=True)
        (local_loss * self.context.world_size).backward()
        clip = self.config.clip_grad if self.config.clip_grad is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        checked = torch.stack([local_loss.detach().reshape(()), grad_norm.detach().to(local_loss.dtype)])
        non_finite = self.context.all_reduce_sum(torch.isfinite(checked).logical_not().to(local_loss.dtype))
        if non_finite.any():  # before the optimiser step: the weights stay the last finite ones
            raise TrainingDiverged(self._divergence_message(predictions, terms, grad_norm, global_indices))
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return float(self.context.all_reduce_sum(local_loss.detach().reshape(1)).item())

    def _divergence_message(self, predictions, terms, grad_norm, global_indices: list[int]) -> str:
        """Where training went non-finite, what did, and which checkpoint is the last good one."""
        bad = [
            f"prediction '{k}'"
            for k in ("energy", "forces", "stress")
            if k in predictions and not torch.isfinite(predictions[k]).all()
        ]
        bad += [f"loss term '{k}'" for k, v in terms.items() if not torch.isfinite(v).all()]
        if not torch.isfinite(grad_norm):
            bad.append(f"gradient norm ({float(grad_norm)})")
        structures = self.data.describe_train(global_indices)
        last = ckpt.checkpoint_dir(self.run_dir) / ckpt.LAST
        kept = (
            f"the last good checkpoint is {last} (kept; nothing non-finite was saved)"
            if last.is_file()
            else "no checkpoint had been written yet; nothing non-finite was saved"
        )
        return (
            f"training diverged at epoch {self.epoch + 1}, step {self.step_in_epoch + 1} "
            f"(global step {self.global_step + 1}): non-finite {', '.join(bad) or 'loss'} on "
            f"{structures}; {kept}. Lower lr, set clip_grad, or check these structures."
        )

    def _train_epoch(self) -> float:
        """The rest of the current epoch; returns its mean training loss."""
        self.batches.set_epoch(self.epoch)
        batches = list(self.batches)
        self.steps.batches = [local or global_[:1] for global_, local in batches[self.step_in_epoch :]]
        collated = iter(self.loader)
        show = self.context.is_main and self.config.progress != "false"
        bar = _progress_bar(
            len(batches),
            self.step_in_epoch,
            f"epoch {self.epoch + 1}/{self.config.epochs}",
            show,
            auto=self.config.progress == "auto",
        )
        every = self.config.checkpoint_every_steps
        for step in range(self.step_in_epoch, len(batches)):
            loss = self._step(*batches[step], next(collated))
            self.epoch_loss_sum += loss
            self.step_in_epoch = step + 1
            self.global_step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{self.epoch_loss_sum / self.step_in_epoch:.4g}")
            if every and self.global_step % every == 0 and self.step_in_epoch < len(batches):
                self.save(ckpt.LAST)
        if bar is not None:
            bar.close()
        return self.epoch_loss_sum / max(1, len(batches))

    def _validate(self) -> dict[str, float]:
        """Validation errors with the EMA weights, reduced over ranks."""
        indices = shard(range(len(self.data.valid_graphs)), self.context)
        with self._eval_model_context():
            accumulator = evaluate(
                self.model,
                self.data.valid_graphs,
                indices,
                self.config.valid_batch_size,
                self.context.device,
                self.compute_stress_in_eval,
                loss=self.loss,
            )
        return accumulator.reduce(self.context).summary()

    # ---------------------------------------------------------------- the run
    def run(self) -> TrainResult:
        config = self.config
        if self.context.is_main:
            write_config(config, self.run_dir)
        tensorboard = TensorBoardLog(
            self.run_dir, config.tensorboard, self.epoch, enabled=self.context.is_main
        )
        if self.context.is_main:
            where = tensorboard.path if tensorboard.writer is not None else f"none ({tensorboard.reason})"
            self.log(f"logs: {self.run_dir / 'config.yaml'}, metrics.csv/json; tensorboard: {where}")
        if self.epoch >= config.epochs:
            self.log(
                f"the checkpoint has {self.epoch} epochs done, epochs = {config.epochs}: nothing to train"
            )
        stopped_early = False
        while self.epoch < config.epochs and not stopped_early:
            if (
                self.stage_two_start is not None
                and self.epoch == self.stage_two_start
                and self.step_in_epoch == 0
            ):
                self._enter_stage_two()
            start = time.perf_counter()
            lr = current_lr(self.optimizer)
            train_loss = self._train_epoch()
            if self.average is not None and self.in_stage_two:
                self.average.update(self.model)
            row = {"epoch": self.epoch + 1, "lr": lr, "train_loss": train_loss}
            if self.stage_two_start is not None:
                row["stage"] = 2 if self.in_stage_two else 1
            evaluate_now = (self.epoch + 1) % config.eval_interval == 0 or self.epoch + 1 == config.epochs
            valid_loss = None
            if evaluate_now:
                summary = self._validate()
                valid_loss = summary["loss"]
                row.update({f"valid_{key}": value for key, value in summary.items()})
            if not self.in_stage_two:
                step_scheduler(self.scheduler, valid_loss)
            self.epoch += 1
            self.step_in_epoch = 0
            self.epoch_loss_sum = 0.0
            row["time_s"] = time.perf_counter() - start
            improved = valid_loss is not None and valid_loss < self.best_loss
            if valid_loss is not None:
                if improved:
                    self.best_loss, self.best_epoch, self.evals_since_best = valid_loss, self.epoch, 0
                else:
                    self.evals_since_best += 1
            self.history.append(row)
            self.log(_epoch_line(row, config.epochs, improved))
            if improved:
                self.save(
                    ckpt.BEST_STAGE_TWO
                    if self.stage_two_start is not None and self.epoch > self.stage_two_start
                    else ckpt.BEST
                )
            self.save(ckpt.LAST)
            if self.context.is_main:
                write_history(self.history, self.run_dir)
                tensorboard.epoch(row)
            if config.patience is not None and self.evals_since_best >= config.patience:
                self.log(f"early stop: no validation improvement in {config.patience} evaluations")
                stopped_early = True
        tensorboard.close()
        self.context.barrier()
        return self._finish()

    def _finish(self) -> TrainResult:
        """Load the best weights, save the model file, and evaluate on every split."""
        best_path = ckpt.checkpoint_dir(self.run_dir) / ckpt.BEST
        stage_two = ckpt.checkpoint_dir(self.run_dir) / ckpt.BEST_STAGE_TWO
        if self.stage_two_start is not None and stage_two.is_file():
            best_path = stage_two  # stage two's own best model
        if best_path.is_file():
            record = ckpt.load_checkpoint(best_path)["model_record"]
            self.model.load_state_dict(record["state_dict"])
            self.log(f"best model: epoch {self.best_epoch}, validation loss {self.best_loss:.6g}")
        elif self.ema is not None:
            with torch.no_grad():
                for p, shadow in zip(ExponentialMovingAverage._parameters(self.model), self.ema.shadow):
                    p.copy_(shadow)
        model_path = self.run_dir / f"{self.config.run_name}.model"
        if self.context.is_main:
            save_model(self.model, model_path)
        self.log(f"model saved to {model_path} (load with equitensor.load_model)")

        splits = [("train", self.data.train_graphs), ("valid", self.data.valid_graphs)]
        if self.data.test_graphs is not None:
            splits.append(("test", self.data.test_graphs))
        rows, parity = [], {}
        for name, dataset in splits:
            collected = Collected()
            accumulator = evaluate(
                self.model,
                dataset,
                shard(range(len(dataset)), self.context),
                self.config.valid_batch_size,
                self.context.device,
                self.compute_stress_in_eval,
                collect=collected,
            )
            rows.append(
                {"name": name, "structures": len(dataset), **accumulator.reduce(self.context).summary()}
            )
            parity[name] = collected.arrays()
        for name, dataset in splits[1:]:
            baseline = composition_baseline(self.data.train, dataset, self.compute_stress_in_eval)
            rows.append({"name": f"{name} baseline", "structures": len(dataset), **baseline.summary()})
        table = format_table(
            rows,
            title="final errors (best model; baseline: energy linear in composition "
            "fitted on train, zero forces and stress)",
        )
        self.log(table)
        if self.context.is_main:
            write_text(self.run_dir / "final_metrics.txt", table + "\n")
            write_json(self.run_dir / "final_metrics.json", rows)
            if self.config.plots:
                self._plots(parity)
        self.context.barrier()
        return TrainResult(self.run_dir, model_path, self.history, rows, self.best_epoch)

    def _plots(self, parity: dict) -> None:
        from equitensor.train.plots import learning_curves, parity_plot

        learning_curves(self.history, self.run_dir / "learning_curves.png")
        for name, arrays in parity.items():
            if name != "train":  # this rank's share only when distributed
                parity_plot(arrays, self.run_dir / f"parity_{name}.png", f"{self.config.run_name}: {name}")
        self.log(f"plots: {self.run_dir}/learning_curves.png, parity_*.png")


def data_fingerprints(config: TrainConfig) -> dict[str, str]:
    """SHA-256 of the content of each data file the config names (train, valid, test), so a resume
    can tell that a file at the same path has changed."""
    files = {key: getattr(config, key) for key in ("train_file", "valid_file", "test_file")}
    return {
        key: file_sha256(path) for key, path in files.items() if path is not None and Path(path).is_file()
    }


class TrainingDiverged(RuntimeError):
    """A loss, prediction or gradient became NaN or infinite; the message says where and what."""


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EpochSteps:
    """The DataLoader's batch sampler: this rank's structure indices of each remaining step of the
    epoch (set by the trainer before each epoch; a rank with none gets the step's first structure,
    weighted 0). The object stays, so persistent workers serve every epoch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def _progress_bar(total: int, initial: int, description: str, show: bool, auto: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, leave=False, disable=None if auto else False)


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"lr {row['lr']:.3g}", f"train loss {row['train_loss']:.5g}"]
    if "valid_loss" in row:
        parts.append(f"valid loss {row['valid_loss']:.5g}")
        for quantity, unit in (("energy", "meV/atom"), ("forces", "meV/Å"), ("stress", "meV/Å^3")):
            if row.get(f"valid_{quantity}_count"):
                parts.append(
                    f"{quantity[0].upper()} MAE/RMSE {row[f'valid_{quantity}_mae']:.2f}/"
                    f"{row[f'valid_{quantity}_rmse']:.2f} {unit}"
                )
    parts.append(f"{row['time_s']:.1f} s")
    return "  ".join(parts) + ("  *best*" if improved else "")


def run_training(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train as ``config`` says (joining torchrun's process group when launched by it).

    Example: one epoch of the quickstart preset on the shipped data set, in a temporary folder.
    Training takes tens of seconds, so the lines that train are not run as a doctest.

    >>> import tempfile
    >>> from equitensor.train import load_config
    >>> folder = tempfile.TemporaryDirectory()
    >>> config = load_config(None, ["epochs=1", f"output_dir={folder.name}/run", "plots=false"])
    >>> result = run_training(config)  # doctest: +SKIP +ELLIPSIS
    equitensor train: run quickstart in ...
    >>> result.model_path.name, len(result.history), result.final_metrics[0]["name"]  # doctest: +SKIP
    ('quickstart.model', 1, 'train')
    >>> folder.cleanup()
    """
    context = init_distributed(config.device)
    threads = torch.get_num_threads()
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    lock = None
    try:
        # before anything is written into the folder: one run at a time (the main rank holds it)
        lock = ckpt.RunFolderLock(config.run_dir) if context.is_main else None
        if lock is not None:  # the folder is ours: temporaries of a killed run are stale
            remove_stale_temporaries(config.run_dir)
        return Trainer(config, context, resume=resume).run()
    finally:
        if lock is not None:
            lock.release()
        torch.set_num_threads(threads)  # the process's settings as they were
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        shutdown_distributed(context)
