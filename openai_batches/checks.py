"""System checks for everything about the configuration that can be known offline.

Ids are stable (``openai_batches.E00n`` errors, ``openai_batches.W00n`` warnings) and every
message carries a hint saying exactly what to change. Nothing here needs a secret to pass:
a missing API key is the warning W004, and the error E004 only under ``check --deploy``.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import (
    ACCOUNT_KEYS,
    DEFAULTS,
    MAX_EXPIRES_AFTER,
    MIN_EXPIRES_AFTER,
    PROVIDER_MAX_EMBEDDING_INPUTS,
    PROVIDER_MAX_FILE_BYTES,
    PROVIDER_MAX_REQUESTS,
    SETTING_NAME,
    Account,
    app_settings,
)
from .exceptions import ConfigurationError

_ACCOUNT_KEYS = ACCOUNT_KEYS


def _number_problem(key: str, value: Any, low: float, high: float | None) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, not {type(value).__name__}"
    if value < low or (high is not None and value > high):
        upper = f" and at most {high:,}" if high is not None else ""
        return f"is {value!r}; it must be at least {low}{upper}"
    return None


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    try:
        user = app_settings.user_settings
    except ConfigurationError as err:
        return [
            Error(
                str(err),
                hint=f"Set {SETTING_NAME} = {{...}} in settings.",
                id="openai_batches.E001",
            )
        ]

    for key in app_settings.unknown_keys():
        messages.append(
            Warning(
                f"{SETTING_NAME}[{key!r}] is not a setting this app knows; it is ignored.",
                hint=f"Check the spelling. Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="openai_batches.W001",
            )
        )

    ranges: dict[str, tuple[float, float | None]] = {
        "TIMEOUT": (0.1, None),
        "MAX_RETRIES": (0, 20),
        "POLL_INTERVAL": (1, None),
        "POLL_MAX_INTERVAL": (1, None),
        "POLL_BACKOFF": (1, 10),
        "MAX_REQUESTS_PER_BATCH": (1, PROVIDER_MAX_REQUESTS),
        "MAX_FILE_BYTES": (1, PROVIDER_MAX_FILE_BYTES),
        "MAX_EMBEDDING_INPUTS_PER_BATCH": (1, PROVIDER_MAX_EMBEDDING_INPUTS),
        "MAX_REQUESTS_PER_JOB": (1, None),
        "INGEST_CHUNK_SIZE": (1, 100_000),
        "SUBMIT_LEASE": (30, None),
        "REQUEST_DEADLINE": (1, None),
        "TRANSFER_DEADLINE": (1, None),
        "MAX_RESPONSE_BYTES": (65536, None),
        "MAX_DOWNLOAD_BYTES": (1, None),
        "WEBHOOK_TOLERANCE": (30, 3600),
        # None (the default) means the provider's own retention.
        "FILE_EXPIRES_AFTER": (MIN_EXPIRES_AFTER, MAX_EXPIRES_AFTER),
        "OUTPUT_EXPIRES_AFTER": (MIN_EXPIRES_AFTER, MAX_EXPIRES_AFTER),
    }
    for key, (low, high) in ranges.items():
        if key in user and not (user[key] is None and DEFAULTS[key] is None):
            problem = _number_problem(key, user[key], low, high)
            if problem:
                messages.append(
                    Error(
                        f"{SETTING_NAME}[{key!r}] {problem}.",
                        hint=f"Use a value in range, or remove the key to use the default ({DEFAULTS[key]!r}).",
                        id="openai_batches.E002",
                    )
                )
    poll_min = user.get("POLL_INTERVAL", DEFAULTS["POLL_INTERVAL"])
    poll_max = user.get("POLL_MAX_INTERVAL", DEFAULTS["POLL_MAX_INTERVAL"])
    # Compare only two valid numbers; a range error above already covers the others.
    if (
        _number_problem("POLL_INTERVAL", poll_min, 1, None) is None
        and _number_problem("POLL_MAX_INTERVAL", poll_max, 1, None) is None
        and poll_max < poll_min
    ):
        messages.append(
            Error(
                f"{SETTING_NAME}['POLL_MAX_INTERVAL'] is smaller than POLL_INTERVAL.",
                hint="POLL_MAX_INTERVAL is the ceiling of the polling backoff; make it >= POLL_INTERVAL.",
                id="openai_batches.E002",
            )
        )

    accounts = user.get("ACCOUNTS", {})
    if not isinstance(accounts, dict):
        messages.append(
            Error(
                f"{SETTING_NAME}['ACCOUNTS'] must be a dict of account name -> settings.",
                hint='For example {"azure": {"API_KEY": "...", "BASE_URL": "https://.../openai/v1"}}.',
                id="openai_batches.E003",
            )
        )
        accounts = {}
    for name, conf in accounts.items():
        bad = set(conf) - _ACCOUNT_KEYS if isinstance(conf, dict) else {"<not a dict>"}
        if bad:
            messages.append(
                Error(
                    f"{SETTING_NAME}['ACCOUNTS'][{name!r}] has unknown keys: {', '.join(sorted(bad))}.",
                    hint=f"An account takes {', '.join(sorted(_ACCOUNT_KEYS))}.",
                    id="openai_batches.E003",
                )
            )

    for name, account, where in _accounts_without_key():
        messages.append(
            Warning(
                f"No API key for the {name!r} account, whose base URL {account.base_url} is not local.",
                hint=f"Set {where} where the app runs (a local emulator URL needs no key). "
                "Only a warning here so migrate and collectstatic work without secrets; "
                "'manage.py check --deploy' reports it as the error openai_batches.E004.",
                id="openai_batches.W004",
            )
        )
    for name, account in _accounts():
        # An account with no URL at all is the provider checks' to report (E041).
        if account.base_url and not account.base_url.startswith(("http://", "https://")):
            messages.append(
                Error(
                    f"The {name!r} account's BASE_URL {account.base_url!r} is not an http(s) URL.",
                    hint="Use the SDK convention, including /v1, e.g. https://api.openai.com/v1.",
                    id="openai_batches.E005",
                )
            )
    messages += [
        Error(
            f"{SETTING_NAME}['PRICES']{where} {problem}.",
            hint='PRICES maps a model to USD per 1M tokens at batch rates, e.g. {"gpt-4o-mini": '
            '{"input": 0.075, "cached_input": 0.0375, "output": 0.3}}; "input" and "output" '
            'are required, "cached_input" defaults to "input".',
            id="openai_batches.E008",
        )
        for where, problem in price_problems(user.get("PRICES", {}))
    ]
    return messages


#: The keys of one model's price entry; the first two are required.
PRICE_KEYS = ("input", "output", "cached_input")


def price_problems(prices: Any) -> list[tuple[str, str]]:
    """Every problem with a ``PRICES`` value, as ``(where, what)``; empty when usable.

    Shared with :func:`openai_batches.services.job_cost`, which ignores an entry this
    rejects instead of crashing the pages that show costs.
    """
    if prices is None:
        return []
    if not isinstance(prices, dict):
        return [("", f"must be a dict of model -> prices, not {type(prices).__name__}")]
    problems: list[tuple[str, str]] = []
    for model, entry in prices.items():
        where = f"[{model!r}]"
        if not isinstance(entry, dict):
            problems.append(
                (where, f"must be a dict of input/output prices, not {type(entry).__name__}")
            )
            continue
        unknown = sorted(set(entry) - set(PRICE_KEYS), key=str)
        if unknown:
            problems.append((where, f"has unknown keys: {', '.join(map(repr, unknown))}"))
        for key in PRICE_KEYS[:2]:
            if key not in entry:
                problems.append((where, f"is missing {key!r}"))
        for key in PRICE_KEYS:
            value = entry.get(key)
            if key in entry and not _is_price(value):
                problems.append((f"{where}[{key!r}]", f"is {value!r}, not a non-negative number"))
    return problems


def _is_price(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return False
    return math.isfinite(value) and value >= 0


def _accounts() -> list[tuple[str, Account]]:
    """Every configured account that can be built (a broken one is reported as E003)."""
    try:
        names = app_settings.account_names()
    except ConfigurationError:
        return []
    from .providers import PROVIDERS
    from .providers.base import with_default_url

    found = []
    for name in names:
        try:
            account = app_settings.account(name)
        except ConfigurationError:
            continue
        cls = PROVIDERS.get(account.provider)
        # With its provider's default URL, as the client will use it (an unknown provider
        # is E040's to report).
        found.append((name, with_default_url(account, cls) if cls else account))
    return found


def _accounts_without_key() -> list[tuple[str, Account, str]]:
    """``(name, account, where to set its key)`` for each remote account that has no key."""
    return [
        (
            name,
            account,
            f"{SETTING_NAME}['API_KEY'] or the OPENAI_API_KEY environment variable"
            if name == "default"
            else f"{SETTING_NAME}['ACCOUNTS'][{name!r}]['API_KEY']",
        )
        for name, account in _accounts()
        # A token provider (Azure's Entra ID) stands for the key; an account with no URL
        # at all is the provider checks' to report (E041).
        if not account.api_key
        and not account.token_provider
        and account.base_url
        and not account.is_local
    ]


@register(Tags.security, deploy=True)
def check_api_keys_deploy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A remote account without a key is an error where it matters: a deployment's
    ``check --deploy``. Everywhere else it is the warning W004, because builds (CI, Docker)
    run ``migrate``, ``makemigrations`` and ``collectstatic`` without secrets."""
    return [
        Error(
            f"No API key for the {name!r} account, whose base URL {account.base_url} is not local.",
            hint=f"Set {where}. (A local emulator URL needs no key.)",
            id="openai_batches.E004",
        )
        for name, account, where in _accounts_without_key()
    ]


@register(Tags.compatibility)
def check_rq(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from . import jobs

    try:
        if jobs.runner() != "rq":
            return []  # Django Tasks, or cron-only: no RQ queue is needed
    except ConfigurationError:
        return []  # an unknown RUNNER is reported by its own check
    if not apps.is_installed("django_rq"):
        return [
            Error(
                "django_rq is not in INSTALLED_APPS; the app's background jobs run on RQ.",
                hint="Add 'django_rq' to INSTALLED_APPS and configure RQ_QUEUES, or set "
                f'{SETTING_NAME}[\'RUNNER\'] to "tasks" (Django\'s Tasks framework) or "none" '
                "(everything from cron's sync_batches).",
                id="openai_batches.E006",
            )
        ]
    try:
        queue = app_settings.QUEUE
    except ConfigurationError:
        return []
    queues = getattr(settings, "RQ_QUEUES", {}) or {}
    if queue not in queues:
        return [
            Error(
                f"{SETTING_NAME}['QUEUE'] is {queue!r}, which is not a key of RQ_QUEUES.",
                hint=f"Add RQ_QUEUES[{queue!r}] = {{'URL': 'redis://localhost:6379/0'}}, or set QUEUE to one of: "
                f"{', '.join(queues) or '(none defined)'}.",
                id="openai_batches.E007",
            )
        ]
    return []


@register(Tags.compatibility)
def check_runner(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``RUNNER``: a known value and, for ``"tasks"``, a usable Tasks backend.

    The deprecated ``USE_RQ`` is not reported here but by a ``DeprecationWarning`` at run
    time, so ``manage.py check`` stays clean for projects that have not moved yet.
    """
    import warnings

    from . import jobs

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            runner = jobs.runner()
    except ConfigurationError as err:
        return [
            Error(
                str(err),
                hint='"rq" (django-rq workers), "tasks" (Django\'s Tasks framework) or "none" '
                "(cron's sync_batches only).",
                id="openai_batches.E020",
            )
        ]
    messages: list[CheckMessage] = []
    if runner != "tasks":
        return messages
    try:
        framework = jobs.tasks_framework()
    except ConfigurationError as err:
        return [
            *messages,
            Error(
                str(err),
                hint="pip install 'django-openai-batches[tasks]' (the backport and a database backend).",
                id="openai_batches.E021",
            ),
        ]
    try:
        backend = framework.task_backends["default"]
    except Exception as err:
        return [
            *messages,
            Error(
                f"RUNNER is 'tasks' but the default Tasks backend cannot be loaded: {err}",
                hint="Configure settings.TASKS['default'] with a backend that has workers, "
                "e.g. django_tasks_db.DatabaseBackend.",
                id="openai_batches.E021",
            ),
        ]
    if not backend.supports_defer:
        messages.append(
            Error(
                f"The default Tasks backend ({type(backend).__name__}) cannot run a task later; "
                "the app schedules its polls with run_after.",
                hint="Use a backend with workers that supports run_after, e.g. "
                "django_tasks_db.DatabaseBackend with manage.py db_worker.",
                id="openai_batches.E022",
            )
        )
    queue = app_settings.QUEUE
    if backend.queues and queue not in backend.queues:
        messages.append(
            Error(
                f"{SETTING_NAME}['QUEUE'] is {queue!r}, which is not a queue of the default Tasks backend.",
                hint=f"Add {queue!r} to settings.TASKS['default']['QUEUES'] "
                f"(now {sorted(backend.queues)}), or set QUEUE to one of them.",
                id="openai_batches.E023",
            )
        )
    return messages


@register(Tags.compatibility)
def check_retry(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``RETRY``: a dict of known keys, a whole number of attempts, a deadline in seconds
    and lists of status codes and error codes (a bad value would otherwise surface as a
    crash in the middle of an ingest)."""
    user = app_settings.user_settings.get("RETRY")
    if user is None:
        return []
    hint = (
        "RETRY takes MAX_ATTEMPTS (1 turns retries off), DEADLINE (seconds), STATUS_CODES, "
        "ERROR_CODES and BATCH_ERROR_CODES; see the settings documentation."
    )
    if not isinstance(user, dict):
        return [
            Error(
                f"{SETTING_NAME}['RETRY'] must be a dict, not {type(user).__name__}.",
                hint=hint,
                id="openai_batches.E024",
            )
        ]
    problems: list[str] = []
    unknown = sorted(set(user) - set(DEFAULTS["RETRY"]))
    if unknown:
        problems.append(f"has unknown key(s) {', '.join(map(repr, unknown))}")
    for key, low in (("MAX_ATTEMPTS", 1), ("DEADLINE", 0)):
        if key in user:
            problem = _number_problem(key, user[key], low, None)
            if problem is None and key == "MAX_ATTEMPTS" and not float(user[key]).is_integer():
                problem = f"must be a whole number, not {user[key]!r}"
            if problem:
                problems.append(f"[{key!r}] {problem}")
    if "STATUS_CODES" in user and not (
        isinstance(user["STATUS_CODES"], list | tuple)
        and all(
            isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599
            for c in user["STATUS_CODES"]
        )
    ):
        problems.append("['STATUS_CODES'] must be a list of HTTP status codes (100-599)")
    for key in ("ERROR_CODES", "BATCH_ERROR_CODES"):
        if key in user and not (
            isinstance(user[key], list | tuple) and all(isinstance(c, str) for c in user[key])
        ):
            problems.append(f"[{key!r}] must be a list of error code strings")
    return [
        Error(
            f"{SETTING_NAME}['RETRY']{p}."
            if p.startswith("[")
            else f"{SETTING_NAME}['RETRY'] {p}.",
            hint=hint,
            id="openai_batches.E024",
        )
        for p in problems
    ]


@register(Tags.compatibility)
def check_budgets(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``BUDGETS`` (E009: its shape and values; W009: limits without prices) and
    ``TOKEN_ESTIMATOR`` (E010: a dotted path to a callable)."""
    from .budgets import LIMITS
    from .estimate import import_estimator

    try:
        user = app_settings.user_settings
    except ConfigurationError:
        return []  # E001 says so
    budgets = user.get("BUDGETS", {})
    messages: list[CheckMessage] = [
        Error(
            f"{SETTING_NAME}['BUDGETS']{where} {problem}.",
            hint='BUDGETS maps limits to USD, e.g. {"PER_JOB": 20, "PER_OWNER_PER_DAY": 50, '
            '"PER_OWNER_PER_MONTH": 500}; each is optional (None or absent: no limit). '
            '"DEFAULT_OUTPUT_TOKENS" (a whole number, default 1024) is the output assumed for '
            "a request that sets no limit.",
            id="openai_batches.E009",
        )
        for where, problem in budget_problems(budgets)
    ]
    if (
        isinstance(budgets, dict)
        and any(budgets.get(key) is not None for key in LIMITS)
        and not user.get("PRICES")
    ):
        messages.append(
            Warning(
                f"{SETTING_NAME}['BUDGETS'] sets limits but PRICES is empty: no job can be "
                "priced, so every submission is refused.",
                hint='Add the batch prices of the models you use to PRICES, e.g. {"gpt-4o-mini": '
                '{"input": 0.075, "output": 0.3}}, or remove the limits.',
                id="openai_batches.W009",
            )
        )
    path = user.get("TOKEN_ESTIMATOR")
    if path is not None:
        try:
            import_estimator(path)
        except ConfigurationError as err:
            messages.append(
                Error(
                    str(err),
                    hint="A dotted path to a callable (endpoint, body) -> int, e.g. "
                    "'openai_batches.estimate.tiktoken_input_tokens'; None for the built-in "
                    "heuristic.",
                    id="openai_batches.E010",
                )
            )
    return messages


def budget_problems(budgets: Any) -> list[tuple[str, str]]:
    """Every problem with a ``BUDGETS`` value, as ``(where, what)``; empty when usable."""
    from .budgets import BUDGET_KEYS, LIMITS

    if budgets is None:
        return []
    if not isinstance(budgets, dict):
        return [("", f"must be a dict of limits, not {type(budgets).__name__}")]
    problems: list[tuple[str, str]] = []
    unknown = sorted(set(budgets) - set(BUDGET_KEYS), key=str)
    if unknown:
        problems.append(("", f"has unknown keys: {', '.join(map(repr, unknown))}"))
    for key in LIMITS:
        value = budgets.get(key)
        if value is not None and not _is_price(value):
            problems.append((f"[{key!r}]", f"is {value!r}, not a non-negative number of USD"))
    output = budgets.get("DEFAULT_OUTPUT_TOKENS")
    if output is not None and (
        isinstance(output, bool) or not isinstance(output, int) or output < 0
    ):
        problems.append(
            ("['DEFAULT_OUTPUT_TOKENS']", f"is {output!r}, not a whole number of tokens")
        )
    return problems


# -- providers (openai_batches.providers) --------------------------------------------------


def _provider_where(name: str, key: str) -> str:
    if name == "default":
        return f"{SETTING_NAME}['ACCOUNTS']['default'][{key!r}]"
    return f"{SETTING_NAME}['ACCOUNTS'][{name!r}][{key!r}]"


@register(Tags.compatibility)
def check_providers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Each account's PROVIDER exists and has the settings it needs (offline).

    E040 unknown provider; E041 a setting the provider requires (Azure: endpoint, an
    api-version it knows, a key or a token provider; Anthropic: an anthropic-version it
    can send; OpenAI-compatible: BASE_URL); E042 a TOKEN_PROVIDER that is not a callable;
    E043 a DEADLINE that is not a positive number; W041 an expiry Azure does not take
    (raised to 14 days); W042 a TOKEN_PROVIDER on a provider that does not use one.
    """
    from .providers import PROVIDERS
    from .providers.azure import MIN_EXPIRES_AFTER as AZURE_MIN_EXPIRY
    from .providers.azure import resolve_token_provider

    messages: list[CheckMessage] = []
    for name, raw_account in _accounts():  # base URLs defaulted per provider
        cls = PROVIDERS.get(raw_account.provider)
        if cls is None:
            messages.append(
                Error(
                    f"The {name!r} account's PROVIDER {raw_account.provider!r} is not one "
                    "this app has.",
                    hint=f"Set {_provider_where(name, 'PROVIDER')} to one of "
                    f"{', '.join(sorted(PROVIDERS))}.",
                    id="openai_batches.E040",
                )
            )
            continue
        account = raw_account
        for message, hint in cls.settings_problems(account):
            messages.append(Error(message, hint=hint, id="openai_batches.E041"))
        if account.token_provider:
            if account.provider != "azure":
                messages.append(
                    Warning(
                        f"The {name!r} account ({account.provider}) sets a TOKEN_PROVIDER, "
                        "which only Azure accounts use; it is ignored.",
                        hint=f"Remove {_provider_where(name, 'TOKEN_PROVIDER')}, or set "
                        "PROVIDER to 'azure'.",
                        id="openai_batches.W042",
                    )
                )
            else:
                try:
                    resolve_token_provider(account)
                except ConfigurationError as err:
                    messages.append(
                        Error(
                            str(err),
                            hint="TOKEN_PROVIDER is the dotted path of a callable returning "
                            "a token (or an object with .token and .expires_on), e.g. one "
                            "made by azure.identity.get_bearer_token_provider.",
                            id="openai_batches.E042",
                        )
                    )
        raw = _raw_account(name)
        deadline = raw.get("DEADLINE")
        if deadline is not None and (
            isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0
        ):
            messages.append(
                Error(
                    f"The {name!r} account's DEADLINE is {deadline!r}, not a positive number "
                    "of seconds.",
                    hint=f"Set {_provider_where(name, 'DEADLINE')} to seconds (86400 is a "
                    "day), or leave it out for the batch's completion window.",
                    id="openai_batches.E043",
                )
            )
        if account.provider == "azure":
            for key in ("FILE_EXPIRES_AFTER", "OUTPUT_EXPIRES_AFTER"):
                value = getattr(app_settings, key)
                if isinstance(value, int | float) and value < AZURE_MIN_EXPIRY:
                    messages.append(
                        Warning(
                            f"{SETTING_NAME}[{key!r}] is {value!r}; Azure takes 14 to 30 "
                            f"days, so the {name!r} account sends 14 days.",
                            hint=f"Set {key} to at least {AZURE_MIN_EXPIRY} for Azure "
                            "accounts to mean what it says.",
                            id="openai_batches.W041",
                        )
                    )
    return messages


def _raw_account(name: str) -> dict[str, Any]:
    try:
        accounts = app_settings.accounts()
    except ConfigurationError:
        return {}
    conf = accounts.get(name, {})
    return conf if isinstance(conf, dict) else {}


@register(Tags.compatibility)
def check_account_access(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``ACCOUNT_ACCESS`` (E030): its shape, its callable, and rules naming real accounts."""
    from .access import setting_problems

    try:
        user = app_settings.user_settings
        accounts = app_settings.account_names()
    except ConfigurationError:
        return []  # E001 / E003 say so
    return [
        Error(
            f"{problem}.",
            hint=f"{SETTING_NAME}['ACCOUNT_ACCESS'] is None (\"default\" open to everyone, other "
            'accounts to superusers), a dict of configured account name -> {"GROUPS": [group '
            'names], "PERMISSIONS": ["app_label.codename"], "EVERYONE": bool}, or a dotted '
            "path to a callable (user, account_name) -> bool.",
            id="openai_batches.E030",
        )
        for problem in setting_problems(user.get("ACCOUNT_ACCESS"), accounts)
    ]


@register(Tags.compatibility)
def check_quota(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``ENQUEUED_TOKEN_LIMITS`` (E050: its shape and values; W050: limits for an account
    that is not configured)."""
    try:
        user = app_settings.user_settings
        accounts = set(app_settings.account_names())
    except ConfigurationError:
        return []  # E001 / E00x say so
    limits = user.get("ENQUEUED_TOKEN_LIMITS", {})
    messages: list[CheckMessage] = [
        Error(
            f"{SETTING_NAME}['ENQUEUED_TOKEN_LIMITS']{where} {problem}.",
            hint='Map a model (or a model-family prefix, or "*" for any other model) to the '
            'input tokens it may have enqueued, e.g. {"gpt-4o-mini": 2_000_000, "*": None}; '
            "None is unlimited. An account's own limits go in a dict under its name: "
            '{"azure": {"gpt-4o": 90_000}}. The setting None turns every limit off.',
            id="openai_batches.E050",
        )
        for where, problem in quota_limit_problems(limits)
    ]
    if isinstance(limits, dict):
        for name, value in limits.items():
            if isinstance(value, dict) and name not in accounts:
                messages.append(
                    Warning(
                        f"{SETTING_NAME}['ENQUEUED_TOKEN_LIMITS'][{name!r}] holds limits for "
                        "an account that is not configured; they apply to nothing.",
                        hint="Use the name of an account in ACCOUNTS (or 'default'), or a "
                        "number if you meant a model's limit.",
                        id="openai_batches.W050",
                    )
                )
    return messages


def quota_limit_problems(limits: Any) -> list[tuple[str, str]]:
    """Every problem with an ``ENQUEUED_TOKEN_LIMITS`` value, as ``(where, what)``."""
    if limits is None:
        return []
    if not isinstance(limits, dict):
        return [("", f"must be a dict (or None), not {type(limits).__name__}")]
    problems: list[tuple[str, str]] = []

    def check(where: str, key: Any, value: Any) -> None:
        if not isinstance(key, str) or not key:
            problems.append((where, f"has the key {key!r}; keys are model names"))
        elif value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            problems.append(
                (f"{where}[{key!r}]", f"is {value!r}, not a positive whole number of tokens")
            )

    for key, value in limits.items():
        if isinstance(value, dict):
            for model, limit in value.items():
                check(f"[{key!r}]", model, limit)
        else:
            check("", key, value)
    return problems
