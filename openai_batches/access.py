"""Which users may use which account: the one rule, read from ``OPENAI_BATCHES["ACCOUNT_ACCESS"]``.

An account is money (its key is billed), so choosing one is a permission of its own, apart
from the job permissions of :mod:`openai_batches.api.permissions`. The rule:

* **Active superusers** may use every configured account, as Django's permissions let them
  do everything. Anonymous and inactive users may use none.
* ``ACCOUNT_ACCESS = None`` (the default): the ``"default"`` account is open to every user
  who may create jobs; every other account to superusers only. A deployment that names a
  second account has to say who may spend on it: a new account is closed, never open.
* ``ACCOUNT_ACCESS = {name: rule}``: a listed account is open to a user who matches its
  rule, ``{"GROUPS": [group names], "PERMISSIONS": ["app_label.codename"], "EVERYONE":
  bool}`` (any one suffices). An account not listed keeps the default rule above, so
  ``{"default": {"GROUPS": ["batch-users"]}}`` narrows the default account too.
* ``ACCOUNT_ACCESS = "dotted.path"`` (or the callable itself): ``callable(user,
  account_name) -> bool`` decides for every active user who is not a superuser.

Where it applies: owning a job under an account is using the account (the owner may add to
it and submit it through the API). :func:`openai_batches.services.create_job` refuses a job
whose ``owner`` may not use its account (:func:`account_problem`); the admin's create form
lists only the accounts the user may use; the API's ``POST jobs/`` answers 400 naming the
field ``account``. Afterwards, adding items, submitting and retrying refuse a job whose owner
has lost access (:func:`owner_refusal`, beside the budget check in ``can_submit``). Code that
creates jobs for its own purposes passes ``owner=None``. Which jobs a user sees is not
changed by it: see ``docs/how-to/accounts.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from .conf import DEFAULT_ACCOUNT, SETTING_NAME, app_settings
from .exceptions import ConfigurationError, Problem

if TYPE_CHECKING:
    from .models import BatchJob

#: The keys one account's rule takes.
RULE_KEYS = ("EVERYONE", "GROUPS", "PERMISSIONS")
WHERE = f"{SETTING_NAME}['ACCOUNT_ACCESS']"

AccessCallable = Callable[[Any, str], bool]


def _is_active_user(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", True))


class _Checker:
    """One user's access, with their group names read once however many accounts are asked."""

    def __init__(self, user: Any) -> None:
        self.user = user
        self._groups: set[str] | None = None
        self._setting = app_settings.ACCOUNT_ACCESS
        self._callable = access_callable(self._setting)

    def group_names(self) -> set[str]:
        if self._groups is None:
            groups = getattr(self.user, "groups", None)
            self._groups = set(groups.values_list("name", flat=True)) if groups else set()
        return self._groups

    def may_use(self, account: str) -> bool:
        if not _is_active_user(self.user):
            return False
        if getattr(self.user, "is_superuser", False):
            return True
        if self._callable is not None:
            return bool(self._callable(self.user, account))
        rule = self._setting.get(account) if isinstance(self._setting, Mapping) else None
        if rule is None:
            return account == DEFAULT_ACCOUNT
        return self._matches(account, rule)

    def _matches(self, account: str, rule: Any) -> bool:
        problems = rule_problems(rule)
        if problems:
            raise ConfigurationError(f"{WHERE}[{account!r}] {problems[0]}.")
        if rule.get("EVERYONE"):
            return True
        groups = set(rule.get("GROUPS") or ())
        if groups and groups & self.group_names():
            return True
        return any(self.user.has_perm(perm) for perm in rule.get("PERMISSIONS") or ())


def access_callable(setting: Any) -> AccessCallable | None:
    """The callable ``ACCOUNT_ACCESS`` names, ``None`` when it is a dict or ``None``."""
    if setting is None or isinstance(setting, Mapping):
        return None
    if isinstance(setting, str):
        return _import(setting)
    if callable(setting):
        return setting
    raise ConfigurationError(
        f"{WHERE} must be None, a dict of account name -> rule, or a dotted path to a "
        f"callable (user, account_name) -> bool, not {type(setting).__name__}."
    )


@lru_cache(maxsize=8)
def _import(path: str) -> AccessCallable:
    try:
        found = import_string(path)
    except ImportError as err:
        raise ConfigurationError(
            f"{WHERE} names {path!r}, which cannot be imported: {err}"
        ) from err
    if not callable(found):
        raise ConfigurationError(f"{WHERE} names {path!r}, which is not callable.")
    checker: AccessCallable = found
    return checker


def rule_problems(rule: Any) -> list[str]:
    """What is wrong with one account's rule (as "is ..." sentences); empty when usable."""
    if not isinstance(rule, Mapping):
        return [f"must be a dict with {', '.join(RULE_KEYS)}, not {type(rule).__name__}"]
    problems = []
    unknown = sorted(set(rule) - set(RULE_KEYS), key=str)
    if unknown:
        problems.append(f"has unknown keys: {', '.join(map(repr, unknown))}")
    if not isinstance(rule.get("EVERYONE", False), bool):
        problems.append("['EVERYONE'] must be True or False")
    for key in ("GROUPS", "PERMISSIONS"):
        value = rule.get(key, [])
        if isinstance(value, str) or not isinstance(value, list | tuple):
            problems.append(f"[{key!r}] must be a list of names, not {type(value).__name__}")
        elif not all(isinstance(v, str) and v for v in value):
            problems.append(f"[{key!r}] must hold non-empty strings only")
        elif key == "PERMISSIONS" and not all(v.count(".") == 1 for v in value):
            problems.append(
                "['PERMISSIONS'] must hold 'app_label.codename' strings, "
                "as user.has_perm() takes them"
            )
    return problems


def may_use_account(user: Any, account: str) -> bool:
    """Whether ``user`` may create jobs under the configured account ``account``."""
    if account not in app_settings.account_names():
        return False
    return _Checker(user).may_use(account)


def usable_accounts(user: Any) -> list[str]:
    """The configured accounts ``user`` may use, ``"default"`` first (for choices)."""
    checker = _Checker(user)
    return [name for name in app_settings.account_names() if checker.may_use(name)]


def account_problem(owner: Any, account: str) -> Problem | None:
    """The problem of giving ``owner`` a job under ``account``, else ``None``.

    ``None`` when there is no owner (code creating jobs for itself) or the account is not
    configured (the caller reports that as it always has).
    """
    if getattr(owner, "pk", None) is None or account not in app_settings.account_names():
        return None
    if _Checker(owner).may_use(account):
        return None
    name = owner.get_username() if hasattr(owner, "get_username") else str(owner)
    return Problem(
        None,
        "account",
        f"{account!r} is not an account {name!r} may use (see {WHERE})",
    )


def owner_refusal(job: BatchJob) -> str:
    """Why ``job`` may not spend under its account now, or ``""`` when it may.

    Owning a job is using its account (see :func:`account_problem`), and that stays true
    after the job is created: a job whose owner has lost access to its account (removed
    from the group, the rule narrowed, the user deactivated) takes no more items and is not
    submitted or retried, whoever asks. Cancelling, reading and deleting it are not spending
    and stay possible. Jobs without an owner are code's own and never refused; an account no
    longer configured is reported by the provider call that needs it.
    """
    if job.owner_id is None or job.account not in app_settings.account_names():
        return ""
    owner = job.owner
    if owner is None or _Checker(owner).may_use(job.account):
        return ""
    return f"its owner {owner.get_username()!r} may not use the account {job.account!r} ({WHERE})"


def setting_problems(setting: Any, accounts: Iterable[str]) -> list[str]:
    """Every problem with an ``ACCOUNT_ACCESS`` value, as sentences; empty when usable.

    ``accounts`` are the configured names: a rule for any other name protects nothing and
    is most likely a typo.
    """
    if setting is None:
        return []
    if not isinstance(setting, Mapping):
        try:
            access_callable(setting)
        except ConfigurationError as err:
            return [str(err).rstrip(".")]
        return []
    known = set(accounts)
    problems = []
    for name, rule in setting.items():
        if name not in known:
            problems.append(f"{WHERE}[{name!r}] names an account that is not configured")
        problems += [f"{WHERE}[{name!r}] {p}" for p in rule_problems(rule)]
    return problems


__all__ = [
    "RULE_KEYS",
    "access_callable",
    "account_problem",
    "may_use_account",
    "owner_refusal",
    "rule_problems",
    "setting_problems",
    "usable_accounts",
]
