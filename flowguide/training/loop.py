r"""The fit loop: SVI for any Pyro model and guide, with progress, checkpoints and exact
resume, a NaN guard, device placement and data-parallel processes.

Each step evaluates a differentiable ELBO loss, back-propagates, averages gradients over
processes when distributed, and lets the NaN guard decide whether the update is applied.
The optimizer is a plain ``torch.optim`` optimizer over the parameters the loss touches
(found as Pyro's SVI finds them, from one parameter-only trace), so its state, the
parameters and the random-number generators make up a checkpoint from which a resumed
run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.util import get_rng_state, set_rng_state
from torch import Tensor

from flowguide.autoguide.recipe import Recipe, RecipeGuide, RecipeSchedule
from flowguide.infer.particles import VmapParticlesELBO
from flowguide.training import distributed
from flowguide.training.checkpoint import (
    check_writable,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from flowguide.training.device import resolve_device, to_device
from flowguide.training.guard import NaNGuard, NonFiniteError, all_finite, bad_gradients, diagnose

__all__ = ["History", "TrainingInterrupted", "Trainer", "fit", "fit_loader", "EarlyStopping"]

Callback = Callable[[int, float, "History"], Any]

#: The guard a :class:`Trainer` uses unless told otherwise.
DEFAULT_GUARD = NaNGuard()


@dataclass
class History:
    """What a fit did.

    Attributes:
        losses: Loss (negative ELBO) of every step, including steps before a resume.
        skipped: Steps whose update the NaN guard did not apply.
        step: Steps completed.
        epoch: Epochs completed (loader fits).
        stopped_early: A callback asked to stop.
        checkpoint: The last checkpoint written, if any.
    """

    losses: list[float] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    stopped_early: bool = False
    checkpoint: Path | None = None


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the step in progress finished and a checkpoint was written.

    Attributes:
        history: The history up to the interruption.
    """

    def __init__(self, history: History) -> None:
        super().__init__(f"training interrupted after step {history.step}; checkpoint: {history.checkpoint}")
        self.history = history


class EarlyStopping:
    """Callback that stops when the mean loss over ``window`` steps has not improved by
    ``min_delta`` for ``patience`` windows."""

    def __init__(self, patience: int = 5, window: int = 100, min_delta: float = 0.0) -> None:
        self.patience, self.window, self.min_delta = patience, window, min_delta
        self.best, self.waited = math.inf, 0

    def __call__(self, step: int, loss: float, history: History) -> bool:
        if step % self.window:
            return False
        recent = history.losses[-self.window :]
        mean = sum(recent) / len(recent)
        if mean < self.best - self.min_delta:
            self.best, self.waited = mean, 0
        else:
            self.waited += 1
        return self.waited >= self.patience


def _first_line(error: Exception) -> str:
    """The first line of an error's message, at most 200 characters."""
    return (str(error).strip().splitlines() or [""])[0][:200]


class Trainer:
    """Trains a guide (and the model's parameters) by minimizing an ELBO loss.

    Arguments:
        model: A Pyro model.
        guide: A Pyro guide for it.
        optimizer: ``params -> torch.optim.Optimizer``; default Adam with lr 1e-2.
            ``params`` is a list of tensors, or, where the guide has parameters that keep
            the full rate (a flow autoguide's per-datum factors), two parameter groups;
            torch optimizers take either.
        loss: A Pyro ELBO (anything with ``differentiable_loss``). Default: the recipe's
            ELBO (:meth:`~flowguide.autoguide.Recipe.elbo`; flow autoguides: 8 vectorized
            particles; a model that does not broadcast over them gets the same particles
            through ``torch.func.vmap``, :class:`~flowguide.infer.VmapParticlesELBO`),
            else ``Trace_ELBO()``.
        recipe: The training recipe (:class:`~flowguide.autoguide.Recipe`). ``"auto"``
            (default) takes the guide's where it carries one
            (:class:`~flowguide.autoguide.RecipeGuide`, every flow autoguide), else none;
            ``None`` trains without one.
        scheduler: ``"auto"`` (default): the recipe's rate decay over the steps of the
            run (:attr:`planned_steps`, set by :meth:`fit` and :meth:`fit_loader`), with
            the guide's full-rate parameters left at the full rate; ``None``: a constant
            rate; or ``optimizer -> lr scheduler``, stepped after every applied update.
        grad_clamp: Clamp every gradient entry to ``[-c, c]`` before the update.
            ``"auto"`` (default) takes the recipe's; ``None`` leaves gradients alone.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        guard: NaN guard settings; ``None`` turns the guard off.
        checkpoint: Path of the checkpoint file (written atomically by rank 0; its folder
            is checked for writing at once, and a failed write raises
            :class:`~flowguide.training.checkpoint.CheckpointError` with the previous
            checkpoint untouched).
        checkpoint_every: Write a checkpoint every this many steps (0: only at the end and
            on interruption).
        checkpoint_mode: The checkpoint file's permission bits; default ``0o666`` less the
            umask, as ``torch.save`` gives (``0o600`` keeps it private).
        callbacks: Called as ``callback(step, loss, history)`` after each step; a truthy
            return value stops training.
        progress: Progress bar with the running ELBO; ``None`` shows it on a terminal only.
        compile: Compile the loss with ``torch.compile``; falls back to eager (with a
            warning) where compilation fails, which is the case for most Pyro programs.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        *,
        optimizer: Callable[[Iterable[Tensor]], torch.optim.Optimizer] | None = None,
        loss: Any = None,
        recipe: Recipe | str | None = "auto",
        scheduler: Callable[[torch.optim.Optimizer], Any] | str | None = "auto",
        grad_clamp: float | str | None = "auto",
        device: str | torch.device = "auto",
        guard: NaNGuard | None = DEFAULT_GUARD,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 0,
        checkpoint_mode: int | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool | None = None,
        compile: bool = False,
    ) -> None:
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
        self.model, self.guide = model, guide
        self.device = resolve_device(device)
        self.make_optimizer = optimizer or (lambda params: torch.optim.Adam(params, lr=1e-2, foreach=True))
        #: The training recipe in use (``None`` without one).
        self.recipe = _resolve_recipe(guide, recipe)
        self._scheduled = _scheduled_recipe(self.recipe, scheduler, grad_clamp)
        #: The gradient clamp in use (``None``: none).
        self.grad_clamp = None if self._scheduled is None else self._scheduled.grad_clamp
        self.make_scheduler = scheduler if callable(scheduler) else None
        self._planned_steps: int | None = None
        self.recipe_schedule: RecipeSchedule | None = None
        self._recipe_loss = loss is None and self.recipe is not None
        if self._recipe_loss:
            self.elbo = self.recipe.elbo()
        else:
            self.elbo = loss if loss is not None else Trace_ELBO()
        self._compile = compile
        if not callable(getattr(self.elbo, "differentiable_loss", None)):
            raise TypeError(
                f"loss must have a differentiable_loss method (the trainer differentiates it); "
                f"{type(self.elbo).__name__} has none. For the importance-weighted bound use "
                "flowguide.infer.DReG_ELBO"
            )
        self.guard, self.callbacks, self.progress = guard, list(callbacks), progress
        self.checkpoint = None if checkpoint is None else check_writable(checkpoint)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_mode = checkpoint_mode
        self.loss_fn = _maybe_compiled(self.elbo.differentiable_loss, compile)
        self.params: dict[str, Tensor] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.history = History()
        self._signal: int | None = None
        self._bad = 0  # consecutive bad steps
        distributed.init_from_env()
        if self.checkpoint is not None and distributed.is_main():
            remove_stale_temporaries(self.checkpoint)  # left by a writer killed mid-write
        if isinstance(guide, torch.nn.Module):
            guide.to(self.device)
        if isinstance(model, torch.nn.Module):
            model.to(self.device)

    # ----------------------------------------------------------------- set-up and state
    def setup(self, *args, **kwargs) -> Trainer:
        """Create the parameters (one parameter-only trace of the loss) and the optimizer."""
        if self.optimizer is not None:
            return self
        args, kwargs = to_device(args, self.device), to_device(kwargs, self.device)
        try:
            trace = self._param_trace(args, kwargs)
        except (RuntimeError, ValueError, IndexError) as error:
            if not self._recipe_loss:
                raise
            trace = self._sequential_particles(error, args, kwargs)
        self.params = {name: site["value"].unconstrained() for name, site in trace.nodes.items()}
        if not self.params:
            raise ValueError("the model and guide have no parameters to train")
        distributed.broadcast_from_main(list(self.params.values()))  # one model on every process
        groups = self._param_groups()
        self.optimizer = self.make_optimizer(groups)
        if self._scheduled is not None:
            full_rate = [1] if isinstance(groups[0], dict) else []
            self.recipe_schedule = RecipeSchedule(
                self.optimizer, self._scheduled, self.planned_steps, full_rate
            )
        self.scheduler = self.make_scheduler(self.optimizer) if self.make_scheduler else None
        return self

    @property
    def planned_steps(self) -> int | None:
        """Steps the run is planned to take: the horizon of the recipe's rate decay."""
        return self._planned_steps

    @planned_steps.setter
    def planned_steps(self, steps: int | None) -> None:
        self._planned_steps = steps
        if self.recipe_schedule is not None:
            self.recipe_schedule.horizon = steps

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: parameters, the buffers of the model and guide
        (a flow guide's location unit, set by its Laplace start, shapes the computation),
        optimizer and scheduler state, RNG states and the history."""
        return {
            "params": {name: p.detach().clone() for name, p in self.params.items()},
            "buffers": {role: _buffers(module) for role, module in self._modules().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "rng": get_rng_state(),
            "history": self.history,
            "objective_step": getattr(self.elbo, "step", None) if self._advances else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a trainer that has been :meth:`setup`."""
        missing = sorted(set(self.params) - set(state["params"]))
        if missing:
            raise ValueError(f"checkpoint lacks the parameters {missing}")
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(state["params"][name])
        for role, module in self._modules().items():
            _load_buffers(module, state.get("buffers", {}).get(role, {}), role)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.history = state["history"]
        if self._advances and state.get("objective_step") is not None:
            self.elbo.step = state["objective_step"]
        set_rng_state(state["rng"])

    def _modules(self) -> dict[str, torch.nn.Module]:
        """The model and guide where they are ``nn.Module``\\ s, by role."""
        return {
            role: module
            for role, module in (("model", self.model), ("guide", self.guide))
            if isinstance(module, torch.nn.Module)
        }

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write a checkpoint (rank 0 only); refuses to write non-finite parameters."""
        path = Path(path) if path is not None else self.checkpoint
        if path is None or not distributed.is_main():
            return None
        bad = [n for n, p in self.params.items() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteError(f"refusing to checkpoint non-finite parameters {bad}")
        self.history.checkpoint = path
        return save_checkpoint(self.state_dict(), path, mode=self.checkpoint_mode)

    def resume(self, path: str | Path, *args, **kwargs) -> Trainer:
        """Set up with the model's arguments, then load the checkpoint at ``path``."""
        self.setup(*args, **kwargs)
        self.load_state_dict(load_checkpoint(path, map_location=self.device))
        return self

    # ----------------------------------------------------------------------- one step
    def step(self, *args, **kwargs) -> tuple[float, bool]:
        """One update; returns the loss and whether the update was applied."""
        self.setup(*args, **kwargs)
        args, kwargs = to_device(args, self.device), to_device(kwargs, self.device)
        self.optimizer.zero_grad(set_to_none=False)
        with self._default_device():
            loss = self.loss_fn(self.model, self.guide, *args, **kwargs)
        if torch.isfinite(loss) and loss.requires_grad:
            loss.backward()
        loss = loss.detach().reshape(1).clone()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._unique_params()]
        distributed.all_reduce_mean([loss, *grads])
        ok = all_finite([loss, *grads])
        if ok and self.recipe_schedule is not None:
            self.recipe_schedule.clamp()
        if ok:
            ok = self._apply()
        return float(loss), ok

    def _apply(self) -> bool:
        check = self.guard is not None and self.guard.check_params
        before = [p.detach().clone() for p in self.params.values()] if check else None
        self.optimizer.step()
        if check and not all_finite(list(self.params.values())):
            with torch.no_grad():
                for p, old in zip(self.params.values(), before, strict=True):
                    p.copy_(old)
            return False
        if self.scheduler:
            self.scheduler.step()
        if self.recipe_schedule is not None:
            self.recipe_schedule.advance()
        if self._advances:  # a scheduled objective (AnnealedELBO) moves on with the updates
            self.elbo.advance()
        return True

    @property
    def _advances(self) -> bool:
        return callable(getattr(self.elbo, "advance", None))

    def _default_device(self):
        """Tensors the model creates land on the trainer's device. Where they land there
        anyway (torch's default device, the CPU unless set), no device mode is entered: it
        intercepts every torch call, which slows a small model's step several-fold."""
        if torch.get_default_device() == self.device:
            return contextlib.nullcontext()
        return torch.device(self.device)

    def _param_trace(self, args: tuple, kwargs: dict) -> poutine.Trace:
        with self._default_device(), poutine.trace(param_only=True) as capture:
            self.loss_fn(self.model, self.guide, *args, **kwargs)
        return capture.trace

    def _sequential_particles(self, error: Exception, args: tuple, kwargs: dict) -> poutine.Trace:
        """The guide's recommended ELBO failed on its vectorized particles: models written
        for one draw (a matrix product over a latent, say) do not broadcast over a particle
        dimension. First the same particles with the model mapped over them by
        ``torch.func.vmap`` (:class:`~flowguide.infer.VmapParticlesELBO`, one batched
        pass); where the model does not allow that either (data-dependent control flow on
        a latent), the particles drawn one after another, with a warning."""
        self.elbo = VmapParticlesELBO(num_particles=self.elbo.num_particles)
        self.loss_fn = _maybe_compiled(self.elbo.differentiable_loss, self._compile)
        try:
            return self._param_trace(args, kwargs)
        except (RuntimeError, ValueError, IndexError) as mapped:
            mapped_error = mapped
        self.elbo = self.recipe.elbo(vectorize_particles=False)
        self.loss_fn = _maybe_compiled(self.elbo.differentiable_loss, self._compile)
        warnings.warn(
            f"the model does not vectorize over particles ({type(error).__name__}: {_first_line(error)}), "
            f"nor run under torch.func.vmap ({_first_line(mapped_error)}); training with "
            f"{self.elbo.num_particles} sequential particles, {self.elbo.num_particles}x the cost per "
            "step. Pass loss= to choose the ELBO.",
            stacklevel=3,
        )
        return self._param_trace(args, kwargs)

    def _unique_params(self) -> list[Tensor]:
        """The parameters, each once: a guide may register one tensor under two names
        (Pyro's ``AutoIAFNormal`` does), which an optimizer would otherwise step twice."""
        return list({id(p): p for p in self.params.values()}.values())

    def _param_groups(self) -> list[Tensor] | list[dict[str, Any]]:
        """The parameters for the optimizer: a flat list, or, where the guide has
        parameters that keep the full rate (:class:`~flowguide.autoguide.RecipeGuide`),
        two groups with those second: a flow autoguide's per-datum factors are updated
        only when their datum is in the minibatch, so the recipe's decay leaves them alone."""
        params = self._unique_params()
        full = self.guide.full_rate_parameters() if isinstance(self.guide, RecipeGuide) else []
        full_ids = {id(p) for p in full}
        if not any(id(p) in full_ids for p in params):
            return params
        return [
            {"params": [p for p in params if id(p) not in full_ids]},
            {"params": [p for p in params if id(p) in full_ids]},
        ]

    # ------------------------------------------------------------------------ loops
    def fit(self, *args, steps: int, **kwargs) -> History:
        """Run until ``steps`` steps are done in all (a resumed history counts)."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.planned_steps = steps
        self.setup(*args, **kwargs)
        with self._signals(), self._bar(steps) as bar:
            while self.history.step < steps:
                if self._one(bar, args, kwargs):
                    break
        self._finish()
        return self.history

    def fit_loader(self, loader: Iterable, epochs: int, **kwargs) -> History:
        """Run ``epochs`` passes over ``loader``; each batch (a tuple) is the model's
        arguments. A resume continues mid-epoch exactly when the loader's order depends
        only on the epoch: samplers with ``set_epoch`` and their own generator
        (``shard_loader``, ``DistributedSampler``), not a ``RandomSampler`` on the global RNG."""
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        total = epochs * len(loader)
        self.planned_steps = total
        with self._signals(), self._bar(total) as bar:
            while self.history.epoch < epochs:
                if self._epoch(loader, bar, kwargs):
                    break
        self._finish()
        return self.history

    def _epoch(self, loader, bar, kwargs) -> bool:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.history.epoch)
        done = self.history.step - self.history.epoch * len(loader)  # batches of this epoch already run
        with torch.random.fork_rng(devices=[]):  # a DataLoader draws a seed from the global RNG here;
            batches = iter(loader)  # keep the model's random stream independent of the epoch boundary
        for index, batch in enumerate(batches):
            if index < done:
                continue
            args = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
            self.setup(*args, **kwargs)
            if self._one(bar, to_device(args, self.device, non_blocking=True), kwargs):
                return True
        self.history.epoch += 1
        return False

    def _one(self, bar, args: tuple, kwargs: dict) -> bool:
        """One guarded step plus bookkeeping; returns True when training must stop."""
        loss, ok = self.step(*args, **kwargs)
        history = self.history
        history.step += 1
        history.losses.append(loss)
        if not ok:
            self._bad_step(args, kwargs)
        else:
            self._bad = 0
        bar.update(1)
        if history.step % 50 == 0:
            recent = history.losses[-50:]
            bar.set_postfix(elbo=f"{-sum(recent) / len(recent):.4g}")
        if self.checkpoint_every and history.step % self.checkpoint_every == 0:
            self.save()
        if self._signal is not None:
            self.save()
            raise TrainingInterrupted(history)
        history.stopped_early = any([bool(cb(history.step, loss, history)) for cb in self.callbacks])
        return history.stopped_early

    def _bad_step(self, args: tuple, kwargs: dict) -> None:
        self.history.skipped.append(self.history.step)
        if self.guard is None:
            raise NonFiniteError(f"non-finite loss or gradient at step {self.history.step} (NaN guard off)")
        for group in self.optimizer.param_groups:
            group["lr"] *= self.guard.lr_backoff
        self._bad += 1
        if self._bad >= self.guard.max_bad_steps:
            names = bad_gradients(self.params.items())
            where = diagnose(self.model, self.guide, self.params, *args, **kwargs)
            raise NonFiniteError(
                f"{self._bad} consecutive non-finite steps (last: step {self.history.step}); parameters "
                f"with non-finite gradients: {names or 'none'}; {where}. Parameters hold their last "
                f"finite values."
            )

    def _finish(self) -> None:
        if self.checkpoint is not None:
            self.save()

    def _bar(self, total: int):
        from tqdm.auto import tqdm

        disable = (not distributed.is_main()) or (None if self.progress is None else not self.progress)
        return tqdm(
            total=total, initial=min(self.history.step, total), desc="fit", leave=False, disable=disable
        )

    def _signals(self):
        return _SignalCatcher(self)


class _SignalCatcher:
    """Within the block, SIGINT and SIGTERM only set a flag that the loop checks after the
    step in progress (main thread only; elsewhere signals are left alone)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.previous = trainer, {}

    def __enter__(self) -> None:
        self.trainer._signal = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.trainer._signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _buffers(module: torch.nn.Module) -> dict[str, Tensor]:
    """The persistent buffers of ``module`` (what its ``state_dict`` holds beyond parameters)."""
    params = {name for name, _ in module.named_parameters()}
    return {name: t.detach().clone() for name, t in module.state_dict().items() if name not in params}


def _load_buffers(module: torch.nn.Module, buffers: dict[str, Tensor], role: str) -> None:
    """Load saved buffers into ``module`` through ``load_state_dict`` (so modules that keep
    a copy of a buffer, as :class:`~flowguide.nn.UnitScaled` does, refresh it)."""
    ours = set(_buffers(module))
    if ours - set(buffers):
        raise ValueError(f"checkpoint lacks the {role}'s buffers {sorted(ours - set(buffers))}")
    module.load_state_dict({**module.state_dict(), **{k: v for k, v in buffers.items() if k in ours}})


def _resolve_recipe(guide: Callable, recipe: Recipe | str | None) -> Recipe | None:
    """The recipe a trainer uses: the guide's for ``"auto"``, the one given, or none."""
    if recipe == "auto":
        return guide.recipe if isinstance(guide, RecipeGuide) else None
    if recipe is None or isinstance(recipe, Recipe):
        return recipe
    raise TypeError(f"recipe must be a flowguide Recipe, 'auto' or None, got {recipe!r}")


def _scheduled_recipe(recipe: Recipe | None, scheduler: Any, grad_clamp: Any) -> Recipe | None:
    """The decay and clamp the trainer applies (``None`` where it applies neither): the
    recipe's where ``scheduler`` and ``grad_clamp`` say ``"auto"``, the user's otherwise."""
    if isinstance(scheduler, str) and scheduler != "auto":
        raise ValueError(f"scheduler must be a callable, 'auto' or None, got {scheduler!r}")
    if grad_clamp == "auto":
        grad_clamp = None if recipe is None else recipe.grad_clamp
    if grad_clamp is not None and not (isinstance(grad_clamp, (int, float)) and grad_clamp > 0):
        raise ValueError(f"grad_clamp must be a positive number, 'auto' or None, got {grad_clamp!r}")
    decay = recipe.lr_decay if scheduler == "auto" and recipe is not None else None
    if decay is None and grad_clamp is None:
        return None
    return dataclasses.replace(recipe or Recipe(), lr_decay=decay, grad_clamp=grad_clamp)


def _maybe_compiled(loss_fn: Callable, compile: bool) -> Callable:
    if not compile:
        return loss_fn
    compiled = torch.compile(loss_fn)
    state = {"fn": compiled}

    def call(*args, **kwargs):
        try:
            return state["fn"](*args, **kwargs)
        except Exception as error:  # torch.compile cannot trace most Pyro programs
            if state["fn"] is loss_fn:
                raise
            warnings.warn(
                f"torch.compile of the loss failed ({type(error).__name__}); running eagerly", stacklevel=2
            )
            state["fn"] = loss_fn
            return loss_fn(*args, **kwargs)

    return call


def fit(
    model: Callable, guide: Callable, *args, steps: int, resume: str | Path | None = None, **options
) -> History:
    """Train ``guide`` (and the model's parameters) for ``steps`` SVI steps.

    Arguments:
        model: A Pyro model.
        guide: A Pyro guide.
        *args: The model's arguments (moved to the device).
        steps: Total steps (a resumed run continues to this count).
        resume: A checkpoint to continue from.
        **options: Keyword arguments of :class:`Trainer` (``optimizer``, ``loss``,
            ``scheduler``, ``device``, ``guard``, ``checkpoint``, ``checkpoint_every``, ``checkpoint_mode``,
            ``callbacks``, ``progress``, ``compile``) and the model's keyword arguments
            under ``model_kwargs``.

    Returns:
        The :class:`History`.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("x", dist.Normal(3.0, 0.5))
        >>> guide = AutoNormal(model)  # starts at x = 0
        >>> adam = lambda params: torch.optim.Adam(params, lr=0.05)
        >>> history = fit(model, guide, steps=500, optimizer=adam, device="cpu", progress=False)
        >>> len(history.losses), abs(float(guide.median()["x"]) - 3.0) < 0.2
        (500, True)
    """
    model_kwargs = options.pop("model_kwargs", {})
    trainer = Trainer(model, guide, **options)
    if resume is not None:
        trainer.resume(resume, *args, **model_kwargs)
    return trainer.fit(*args, steps=steps, **model_kwargs)


def fit_loader(
    model: Callable,
    guide: Callable,
    loader: Iterable,
    *,
    epochs: int,
    resume: str | Path | None = None,
    **options,
) -> History:
    """Train on minibatches: each batch of ``loader`` is passed as the model's arguments.

    Options and return value as :func:`fit`; ``resume`` needs one batch to set up, which
    is taken from ``loader``.
    """
    model_kwargs = options.pop("model_kwargs", {})
    trainer = Trainer(model, guide, **options)
    if resume is not None:
        first = next(iter(loader))
        trainer.resume(
            resume, *(tuple(first) if isinstance(first, (tuple, list)) else (first,)), **model_kwargs
        )
    return trainer.fit_loader(loader, epochs, **model_kwargs)
