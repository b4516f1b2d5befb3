"""``--storage-option KEY=VALUE``: fsspec options for the file systems of store URLs, one
option and one rule for every command that opens stores (extract, train, eval, check,
reproduce, live)."""

from __future__ import annotations

from collections.abc import Iterable

import click

from actrec.cli.common import parse_assignments

storage_option = click.option(
    "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
    help="An fsspec option for the file system of the store URLs (repeatable), e.g. "
    "endpoint_url=http://host:9000 for S3; credentials also come from the usual AWS_* "
    "variables or fsspec config.")


def apply_storage_options(pairs: Iterable[str], stores: Iterable[object], where: str) -> None:
    """Use the ``--storage-option`` values ``pairs`` (``KEY=VALUE``, values read as JSON where
    they parse) for the file system of every store URL among ``stores`` (paths, URLs, dataset
    references; ``None`` ignored), in this process and the ones it starts. Nothing when no
    option is given; ``click.UsageError`` naming ``where`` (the options that take a URL) when
    none of ``stores`` is a URL, and ``ConfigError`` naming the option for a pair without
    ``=``."""
    pairs = list(pairs)
    if not pairs:
        return
    from actrec.io.remote import (
        StoreURL,
        is_url,
        parse_storage_options,
        set_storage_options,
        store_location,
    )

    options = parse_storage_options(parse_assignments(pairs, "--storage-option"))
    protocols = sorted({where_.protocol for where_ in (
        store_location(s) for s in stores if s is not None and is_url(s))
        if isinstance(where_, StoreURL)})
    if not protocols:
        raise click.UsageError(f"--storage-option applies to a store URL ({where} s3://..., "
                               f"gs://...)")
    for protocol in protocols:
        set_storage_options(protocol, options)


def run_stores(run_dir) -> list[str]:
    """The feature stores (paths or URLs) a run folder's config.json records it was trained
    on; none when it cannot be read (the command then reports the run's own error)."""
    from actrec.errors import ActrecError
    from actrec.runs import CONFIG, read_json

    try:
        config = read_json(run_dir / CONFIG)
    except (ActrecError, OSError, ValueError):
        return []
    stores = config.get("stores") if isinstance(config, dict) else None
    return [str(s.get("path")) for s in stores or [] if isinstance(s, dict)]
