"""Option checks shared by the built-in model plugins (no heavy imports)."""

from __future__ import annotations

from actrec.errors import ConfigError


def check_positive(config: object, *names: str) -> None:
    """ConfigError unless every named integer option is >= 1."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ConfigError(f"model option '{name}' must be a positive integer, got {value}")


def check_fraction(config: object, *names: str, upper_inclusive: bool = False) -> None:
    """ConfigError unless every named option lies in [0, 1) (or [0, 1])."""
    for name in names:
        value = getattr(config, name)
        ok = 0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0
        if not ok:
            bound = "1]" if upper_inclusive else "1)"
            raise ConfigError(f"model option '{name}' must lie in [0, {bound}, got {value}")


def check_front(config: object) -> None:
    """ConfigError unless the input options (``input_dropout``, ``embed``, ``embed_dropout``)
    are valid: dropouts in [0, 1), ``embed`` 0 (no embedding) or a positive width."""
    check_fraction(config, "input_dropout", "embed_dropout")
    if config.embed < 0:
        raise ConfigError(f"model option 'embed' must be 0 (no embedding) or a positive width, "
                          f"got {config.embed}")


def check_eps(config: object) -> None:
    if not config.eps > 0:
        raise ConfigError(f"model option 'eps' must be > 0, got {config.eps}")
