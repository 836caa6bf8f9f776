"""``moorage store``: move state between stores and migrate a store's schema out of band.

Passwords come from ``PGPASSWORD`` or a password file (``PGPASSFILE``), which libpq reads; a URL is only ever
printed with its password masked."""

from __future__ import annotations

import click

from moorage.sidecar.store.base import StoreUnavailable, redact_url


@click.group("store")
def store() -> None:
    """Copy a store between SQLite and PostgreSQL, or migrate its schema."""


@store.command("copy")
@click.argument("src")
@click.argument("dst")
@click.option("--force", is_flag=True, help="Replace what the target store holds (refused otherwise).")
def copy(src: str, dst: str, force: bool) -> None:
    """Copy every task hub, instance, history, entity, pending work item and timer from SRC to DST.

    Stop the sidecar first. Example: moorage store copy sqlite:///./moorage.db postgresql://moorage@db:5432/moorage
    """
    import psycopg

    from moorage.sidecar.store.postgres_copy import TargetNotEmpty, copy_store

    try:
        counts = copy_store(src, dst, replace=force)
    except TargetNotEmpty as exc:
        raise click.ClickException(str(exc)) from None
    except (ValueError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    except psycopg.Error as exc:
        raise click.ClickException(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from None
    click.echo(f"copied {redact_url(src)} -> {redact_url(dst)}")
    for table, n in counts.items():
        click.echo(f"  {table}: {n}")


@store.command("migrate")
@click.argument("url")
def migrate(url: str) -> None:
    """Bring the schema of the store at URL to this version of Moorage (the sidecar also does it on start)."""
    if url.startswith("sqlite:"):
        import asyncio

        from moorage.sidecar.store.base import sqlite_path
        from moorage.sidecar.store.sqlite import SqliteStore

        asyncio.run(SqliteStore(sqlite_path(url)).close())  # opening creates the schema
        click.echo(f"{url}: schema is current")
        return
    if not url.startswith(("postgresql://", "postgres://")):
        raise click.ClickException(f"unknown store URL {redact_url(url)!r}")
    import psycopg

    from moorage.sidecar.store.postgres_migrations import LATEST
    from moorage.sidecar.store.postgres_migrations import migrate as apply

    try:
        with psycopg.connect(
            "postgresql://" + url.split("://", 1)[1], autocommit=True, application_name="moorage-migrate"
        ) as conn:
            applied = apply(conn)
    except psycopg.Error as exc:
        raise click.ClickException(f"{redact_url(url)}: {str(exc).strip().splitlines()[0]}") from None
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
    click.echo(f"{redact_url(url)}: schema at version {LATEST} ({done})")
