"""Stable keyed pseudonyms for user ids on pages (``recscope report --pseudonymise``, ``recscope
serve --pseudonymise``): ``u-`` + the first 16 hex digits of HMAC-SHA256(key, user id).

The same key gives the same pseudonym in every report and on the web view, so a merchant can
follow one shopper across pages without seeing who it is; without the key a pseudonym cannot be
computed from an id, nor an id from a pseudonym. The key is ``$RECSCOPE_PSEUDONYM_KEY`` when set
(any text; share it to keep pseudonyms the same across runs), else ``RUN/pseudonym.key``: 32
random bytes written once, readable by its owner only. A page maps a pseudonym back on the server
(:meth:`Pseudonyms.find`) over the run's users; the raw id never reaches the page.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Collection
from hashlib import sha256
from pathlib import Path

from recscope.errors import RunError

KEY_ENV = "RECSCOPE_PSEUDONYM_KEY"
KEY_FILE = "pseudonym.key"
PREFIX = "u-"


class Pseudonyms:
    """``names(user_id)`` -> its pseudonym; ``names.find(pseudonym)`` -> the user id of ``user_ids``
    it stands for, or None (the reverse map is built on first use)."""

    def __init__(self, key: bytes, user_ids: list[str]):
        if not key:
            raise RunError("the pseudonym key is empty", fix=f"set {KEY_ENV} to a long random text, or unset it")
        self._key, self._user_ids = key, user_ids
        self._reverse: dict[str, str] | None = None

    @classmethod
    def for_run(cls, run: str | Path, user_ids: list[str]) -> Pseudonyms:
        """The key from ``$RECSCOPE_PSEUDONYM_KEY``, else the run's ``pseudonym.key`` (made on first use)."""
        given = os.environ.get(KEY_ENV)
        if given is not None:
            return cls(given.encode("utf-8"), user_ids)
        path = Path(run) / KEY_FILE
        if not path.exists():
            # Written whole under a private name, then linked into place: two processes starting
            # at once agree on one key, and neither reads a key half written.
            draft = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
            try:
                fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_bytes(32))
                    f.flush()
                    os.fsync(f.fileno())
                os.link(draft, path)
            except FileExistsError:
                pass  # another process linked its key first: use that one
            except OSError as e:
                raise RunError(
                    f"cannot write the pseudonym key {path} ({e.strerror})",
                    fix=f"make the run writable, or set {KEY_ENV}",
                ) from None
            finally:
                draft.unlink(missing_ok=True)
        key = path.read_bytes()
        if len(key) < 16:
            raise RunError(f"{path} holds {len(key)} bytes, too short for a key", fix="remove it: a new one is made")
        return cls(key, user_ids)

    def __call__(self, user_id: str) -> str:
        return PREFIX + hmac.new(self._key, user_id.encode("utf-8"), sha256).hexdigest()[:16]

    def find(self, pseudonym: str) -> str | None:
        if self._reverse is None:
            self._reverse = {self(u): u for u in self._user_ids}
        return self._reverse.get(pseudonym)

    def search(self, needle: str, limit: int, hidden: Collection[str] = ()) -> list[str]:
        """Pseudonyms that start with ``needle`` (casefolded), then those holding it; empty: the
        first few; none of the users ``hidden`` (ids)."""
        if self._reverse is None:
            self.find("")
        names = [name for name, user in (self._reverse or {}).items() if user not in hidden]
        if not needle:
            return names[:limit]
        starts = [n for n in names if n.startswith(needle)]
        inside = [n for n in names if needle in n and not n.startswith(needle)]
        return (starts + inside)[:limit]
