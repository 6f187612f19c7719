r"""A flow autoguide's state outside its calls: Pyro's parameter store, and modules' state
before set-up.

A flow guide creates its parameters at set-up (the first call or :meth:`setup`), when
the model's latent dimension is known. Two things can come before that:

- **values in Pyro's parameter store** under the guide's names, as
  ``pyro.get_param_store().load(path)`` leaves them. At set-up the guide takes them
  (the flow's parameters are plain ``nn.Module`` parameters, which Pyro would otherwise
  leave at their fresh values while the store holds other tensors, and training would
  step tensors the guide does not use); a stored value of another shape is refused.
- **module operations**: ``.to()``, ``.double()``, ``.float()`` are recorded and applied at
  set-up, as torch's lazy modules do; ``load_state_dict`` sets the guide up at once when
  the model takes no arguments, and otherwise says to call ``setup(*args)`` first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro.params.param_store import param_with_module_name
from torch import Tensor

__all__ = ["DeferredModuleState", "adopt_stored_parameters"]


def adopt_stored_parameters(guide: Any, module_name: str) -> list[str]:
    """Copy the values Pyro's parameter store holds under the names of ``guide.<module_name>``'s
    parameters into them, and make the store hold the parameters themselves; returns the
    names adopted. Refuses a stored value of another shape, naming it.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from flowguide import AutoIAF
        >>> def model():
        ...     pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> guide = AutoIAF(model, num_flows=1, hidden_dims=(4,)).setup()
        >>> name, parameter = next(iter(guide.flow.named_parameters()))
        >>> key = param_with_module_name("AutoIAF.flow", name)  # Pyro's name for it
        >>> pyro.get_param_store()[key] = torch.full_like(parameter, 0.5)  # as a load() leaves it
        >>> key in adopt_stored_parameters(guide, "flow"), bool((parameter == 0.5).all())
        (True, True)
    """
    module = getattr(guide, module_name)
    store = pyro.get_param_store()
    prefix = f"{guide._pyro_name}.{module_name}" if guide._pyro_name else module_name  # Pyro's naming
    adopted = []
    for name, parameter in module.named_parameters():
        key = param_with_module_name(prefix, name)
        if key not in store:
            continue
        stored = store[key]
        if stored is parameter or not isinstance(parameter, torch.nn.Parameter):
            continue  # already the same; or read detached (an objective replaying the guide)
        if stored.shape != parameter.shape:
            raise ValueError(
                f"Pyro's parameter store holds '{key}' of shape {tuple(stored.shape)}, but this "
                f"{type(guide).__name__} has shape {tuple(parameter.shape)}: the store was saved from "
                "another guide or model. Clear it (pyro.clear_param_store()) or build the guide it "
                "was saved from"
            )
        with torch.no_grad():
            parameter.copy_(stored)
        del store[key]
        store.setdefault(key, parameter)  # the store holds the parameter the guide computes with
        adopted.append(key)
    return adopted


def _conversion(fn: Callable[[Tensor], Tensor]) -> dict[str, Any]:
    """What a module conversion does to floating tensors: ``{"device": ..., "dtype": ...}``,
    the dtype only where it changes one (``.double()``), not where it keeps each (``.to(device)``)."""
    single, double = fn(torch.zeros((), dtype=torch.float32)), fn(torch.zeros((), dtype=torch.float64))
    change = {"device": single.device}
    if single.dtype == double.dtype:
        change["dtype"] = single.dtype
    return change


class DeferredModuleState:
    """Mixin: ``.to()``/``.double()`` and ``load_state_dict`` before set-up.

    The guide supplies ``prototype_trace`` (``None`` before set-up), ``setup(*args)`` and
    ``_bare_model``, and calls :meth:`_apply_deferred` at the end of its set-up.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> from flowguide import AutoIAF
        >>> def model():
        ...     pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> guide = AutoIAF(model, num_flows=1, hidden_dims=(4,)).double()  # before set-up
        >>> {p.dtype for p in guide.setup().parameters()}
        {torch.float64}
    """

    _deferred: dict[str, Any] | None = None

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Any:
        if self.prototype_trace is None:  # no parameters yet: apply the conversion at set-up
            self._deferred = {**(self._deferred or {}), **_conversion(fn)}
        return super()._apply(fn, recurse)

    def _apply_deferred(self) -> None:
        """Apply the conversions recorded before set-up."""
        if self._deferred:
            deferred, self._deferred = self._deferred, None
            self.to(**deferred)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """``nn.Module.load_state_dict``; before set-up it sets the guide up first, which needs
        a model without arguments (else: call ``setup(*args)``)."""
        if self.prototype_trace is None:
            if _needs_arguments(self._bare_model[0] or self.model):
                raise RuntimeError(
                    f"{type(self).__name__}.load_state_dict before set-up: the guide creates its "
                    "parameters from the model's shapes, and the model takes arguments. Call "
                    "guide.setup(*args) first, then load_state_dict"
                )
            self.setup()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _needs_arguments(model: Callable) -> bool:
    """Whether ``model`` cannot be called without arguments."""
    try:
        inspect.signature(model).bind()
    except TypeError:
        return True
    except ValueError:  # no signature to read: try the call
        return False
    return False
