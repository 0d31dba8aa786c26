"""Local adaptation strategies: each module registers itself on import (``@register``);
adding a strategy is one new module and one import line here."""

from strategies import (  # noqa: F401
    adapter,
    first_personalization,
    full,
    global_model,
    hard_prompt,
    keep_theta,
    lora,
    oppu,
    perplm_mlm,
    soft_prompt,
    top,
)
from strategies.fala import strategy as fala_strategy  # noqa: F401
