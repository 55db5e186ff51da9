"""The Mixture-of-Roles adapter method as a PEFT tuner.

>>> from peft import get_peft_model
>>> from moragent.mor import MoRConfig, role_context
>>> model = get_peft_model(base_model, MoRConfig())
>>> out = model(input_ids=ids, role_ids=roles)          # roles: batch x sequence indices
>>> with role_context(model, role="executor"):
...     model.generate(input_ids=ids, max_new_tokens=16)

Importing this package registers the ``MOR`` PEFT type with peft, so that
``get_peft_model``, ``save_pretrained`` and ``PeftModel.from_pretrained`` work as for LoRA.
"""

from __future__ import annotations

from peft.utils import PeftType, register_peft_method

_TYPE_NAME = "MOR"


def _peft_type() -> PeftType:
    """peft's ``PeftType.MOR``, added to peft's enum when missing.

    ``register_peft_method`` only accepts names that ``PeftType`` already lists, and the
    enum has no public way to grow, so the member is added the way ``enum`` itself
    stores members. It behaves like any other member (``PeftType("MOR")``, JSON).
    """
    if _TYPE_NAME in PeftType.__members__:
        return PeftType[_TYPE_NAME]
    member = str.__new__(PeftType, _TYPE_NAME)
    member._name_ = _TYPE_NAME
    member._value_ = _TYPE_NAME
    PeftType._member_map_[_TYPE_NAME] = member
    PeftType._value2member_map_[_TYPE_NAME] = member
    PeftType._member_names_.append(_TYPE_NAME)
    type.__setattr__(PeftType, _TYPE_NAME, member)
    return member


PEFT_TYPE = _peft_type()

from moragent.mor.config import MoRConfig  # noqa: E402
from moragent.mor.hooks import RoleIdsError, make_role_batch, role_context  # noqa: E402
from moragent.mor.layer import MoRLayer, MoRLinear  # noqa: E402
from moragent.mor.losses import (  # noqa: E402
    auxiliary_loss,
    load_balancing_loss,
    mor_losses,
    orthogonality_loss,
)
from moragent.mor.model import MoRModel, count_adapter_parameters  # noqa: E402
from moragent.mor.reference import dense_reference  # noqa: E402


def _register() -> None:
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    if PEFT_TYPE_TO_TUNER_MAPPING.get(PEFT_TYPE) is None:
        register_peft_method(name="mor", config_cls=MoRConfig, model_cls=MoRModel)


_register()

__all__ = [
    "PEFT_TYPE",
    "MoRConfig",
    "MoRLayer",
    "MoRLinear",
    "MoRModel",
    "RoleIdsError",
    "auxiliary_loss",
    "count_adapter_parameters",
    "dense_reference",
    "load_balancing_loss",
    "make_role_batch",
    "mor_losses",
    "orthogonality_loss",
    "role_context",
]
