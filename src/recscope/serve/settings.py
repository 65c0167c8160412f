"""The service's settings: from arguments, or ``RECSCOPE_*`` environment variables.

Nothing is read or checked at import: ``Settings()`` with no run is valid to build, and the
app refuses it when it starts (``create_app``'s lifespan), naming the missing setting.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recscope.serve.limits import MAX_BODY

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSCOPE_", extra="forbid")

    run: Path | None = None  # (path) run directory written by `recscope train`
    version: str | None = None  # (str) the model version to serve; None: the run's current one
    db: str | None = None  # (SQLAlchemy URL) the event store; None: store.sqlite in the run
    host: str = "127.0.0.1"  # (str) address to bind; beyond loopback only with an api_key
    api_key: SecretStr | None = None  # (secret) X-API-Key that write and admin routes require; None: open
    read_key: SecretStr | None = None  # (secret) X-API-Key (or api_key) that reads of personal data need; None: open
    port: int = 8000  # (int) TCP port
    max_body: int = MAX_BODY  # (bytes) larger request bodies are refused with 413
    busy_after: float = 10.0  # (seconds) a request that waits this long for the model is refused: 503, reason busy
    follow_every: float = 0.2  # (seconds) how often a worker reads the store's changes (items, version switches)
    ready_lag: float = 5.0  # (seconds) /health/ready answers 503 while a change older than this is not applied
    workers: int = 1  # (int) worker processes (recscope serve --workers); each holds the model
    threads: int = 1  # (int) torch threads per worker (recscope serve --threads)
    ui_writes: bool = False  # (bool) web view buttons write real events/feedback as the shopper; False: read-only
    # (bool) the web view shows every user id as its keyed pseudonym (recscope.pseudonyms) and opens
    # shoppers by pseudonym only; not with ui_writes (a page acting as the shopper posts their id)
    pseudonymise: bool = False

    @model_validator(mode="after")
    def _pseudonyms_read_only(self) -> Settings:
        if self.pseudonymise and self.ui_writes:
            raise ValueError(
                "pseudonymise and ui_writes together: a page that acts as the shopper posts their real id; "
                "how to fix: leave out one of --pseudonymise and --ui-writes"
            )
        return self
