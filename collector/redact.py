"""Redaction: secrets in config, overrides and URLs never reach a file, a remote or a terminal.

A config may carry credentials (``+policy.api_key=sk-...``) and a URI may hold them
(``https://user:token@host``). Everything harvest writes or prints that can contain config or
URIs goes through here first (issue 16 item 10): provenance and the env spec in
``metadata.json`` (``collector.storage.new_metadata``), the Hub card, error lines that echo a
remote, log records (``install_log_redaction``) and Hydra's run files
(``redact_hydra_files``).

``redact(obj)`` returns a copy of nested dicts/lists with the value of every secret-looking key
(``SECRET_KEY_RE``, case-insensitive) replaced by ``"***"``, ``key=value`` override strings
judged by their key, and URL credentials removed from every string (``redact_url``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = [
    "MASK",
    "SECRET_KEY_RE",
    "install_log_redaction",
    "is_secret_key",
    "redact",
    "redact_hydra_files",
    "redact_hydra_run",
    "redact_text",
    "redact_url",
]

MASK: Final = "***"
#: Names of keys whose values are secrets (matched anywhere in the key, case-insensitive);
#: ``auth`` only as a word of its own, so ``author`` and ``author_email`` stay.
SECRET_KEY_RE: Final = re.compile(
    r"api[-_]?key|apikey|secret|passw|passphrase|pwd|credential|private[-_]?key|"
    r"access[-_]?key|token(?!s\b|s?_?(?:count|limit|len)|izer)|cookie|session[-_]?key|"
    r"signature|authorization|oauth|(?:^|[-_.])auth(?:$|[-_.])",
    re.IGNORECASE,
)
#: ``scheme://userinfo@``: credentials in a URL (RFC 3986 userinfo).
_URL_USERINFO: Final = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@'\"<>]+@")
#: ``?token=...`` style query parameters.
_URL_QUERY: Final = re.compile(
    r"([?&](?:[\w.-]*(?:token|secret|passw|api[-_]?key|signature|sig|credential)[\w.-]*)=)"
    r"[^&#\s'\"]+",
    re.IGNORECASE,
)
#: ``KEY=`` at the start of a string or after a separator: a Hydra override (``[~+]KEY=VALUE``),
#: one of a ``k=v,k2=v2`` list (Hydra's ``override_dirname``), a query parameter or ``ENV=``.
_ASSIGN: Final = re.compile(r"(?:^|(?<=[\s,;&?]))([~+]{0,2}[\w./\-\[\]]+)=")


def is_secret_key(key: object) -> bool:
    """True when a config key (or the last part of a dotted override key) names a secret."""
    text = str(key)
    return bool(SECRET_KEY_RE.search(text.rsplit(".", 1)[-1] if "." in text else text))


def redact_text(text: str) -> str:
    """``text`` with secret ``KEY=VALUE`` values and URL credentials replaced by ``***``.

    A value runs to the next ``KEY=`` (or the end), so ``a=1,api_key=x,b=2`` keeps ``a`` and
    ``b``.

    >>> redact_text("+policy.api_key=sk-1 episodes=3 at gcp://u:p@bucket")
    '+policy.api_key=*** episodes=3 at gcp://***@bucket'
    """
    if "=" in text:
        found = list(_ASSIGN.finditer(text))
        parts, pos = [], 0
        for i, match in enumerate(found):
            if is_secret_key(match.group(1).lstrip("~+")):
                end = found[i + 1].start() - 1 if i + 1 < len(found) else len(text)
                parts += [text[pos : match.end()], MASK]
                pos = end
        text = "".join([*parts, text[pos:]])
    return redact_url(text)


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``.

    >>> redact_url("push to https://me:tok@host/x?token=abc&page=2")
    'push to https://***@host/x?token=***&page=2'
    """
    if "://" not in text and "=" not in text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _URL_QUERY.sub(lambda m: f"{m.group(1)}{MASK}", text)


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts/lists/tuples) with secret values replaced by ``***``.

    A mapping value under a secret-looking key is masked whole (a nested dict included); every
    string goes through ``redact_text`` (``KEY=VALUE`` overrides judged by their key, URL
    credentials removed). Other values are returned as they are.
    """
    if isinstance(obj, Mapping):
        return {k: MASK if is_secret_key(k) else redact(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def install_log_redaction() -> None:
    """Mask secrets (``redact_text``) in every log record this process creates (idempotent).

    A record factory rather than a handler filter: Hydra replaces the logging handlers when it
    configures logging, and its launcher logs a multirun's overrides before any task runs.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "harvest_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report, as it is
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    factory.harvest_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def redact_hydra_files(folder: Path) -> list[Path]:
    """Rewrite Hydra's run files in ``folder`` without secrets; returns the files rewritten.

    Hydra writes ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` (and a sweep's
    ``multirun.yaml``) before the task runs and offers no hook to filter them, so the task
    rewrites them first thing. Files without secrets are left as they are.
    """
    import yaml

    done = []
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml", "multirun.yaml"):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            continue
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        clean = redact(data)
        if clean == data:
            continue
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(yaml.safe_dump(clean, sort_keys=False, allow_unicode=True), "utf-8")
        tmp.replace(path)
        done.append(path)
    return done


def redact_hydra_run() -> None:
    """In a Hydra task: redact this run's files (and a sweep's ``multirun.yaml``).

    Call first thing in a ``@hydra.main`` function: Hydra has written the run files by then.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.output_subdir is not None:
        redact_hydra_files(Path(hc.runtime.output_dir) / hc.output_subdir)
    if hc.mode == RunMode.MULTIRUN:
        redact_hydra_files(Path(hc.sweep.dir))
