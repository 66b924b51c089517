"""Who may use which account (``ACCOUNT_ACCESS``, ``openai_batches/access.py``).

The matrix: every role against every account, through the API's ``POST jobs/``, the admin's
create form (its choices and a forged post) and ``services.create_job(owner=...)``. A refused
request must leave no job behind and name the field ``account``; an allowed one must create
the job under that account. Then the default rule (no setting), the callable form, the
system check E030, and what access does not change (reading jobs).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from openai_batches import access, services
from openai_batches.checks import check_account_access
from openai_batches.exceptions import InvalidStateError, ValidationError
from openai_batches.models import BatchJob

from .lifecycle_helpers import chat_items

pytestmark = pytest.mark.django_db

ACCOUNTS = ("default", "billing", "research", "sandbox")  # the order account_names() gives
ROLES = ("plain", "member", "holder", "superuser")

#: research: the "research" group; billing: a permission; sandbox: everyone; default: as
#: configured by nothing, so open.
RULES = {
    "research": {"GROUPS": ["research"]},
    "billing": {"PERMISSIONS": ["testapp.view_article"]},
    "sandbox": {"EVERYONE": True},
}

#: Whether each role may use each account, in ACCOUNTS order.
MATRIX: dict[str, tuple[bool, ...]] = {
    "plain": (True, False, False, True),
    "member": (True, False, True, True),
    "holder": (True, True, False, True),
    "superuser": (True, True, True, True),
}

CASES = [
    pytest.param(role, account, allowed, id=f"{role}-{account}")
    for role, row in MATRIX.items()
    for account, allowed in zip(ACCOUNTS, row, strict=True)
]


def _accounts(base_url: str = "http://127.0.0.1:9/v1") -> dict[str, Any]:
    return {name: {"API_KEY": f"sk-{name}", "BASE_URL": base_url} for name in ACCOUNTS[1:]}


@pytest.fixture(autouse=True)
def configured(settings: Any) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNTS": _accounts(),
        "ACCOUNT_ACCESS": RULES,
    }


def make_user(role: str, *, staff: bool = False) -> User:
    if role == "superuser":
        return User.objects.create_superuser("root", password="pw")
    user = User.objects.create_user(role, password="pw", is_staff=staff)
    codenames = ["add_batchjob", "view_batchjob"] if staff else []
    if role == "member":
        user.groups.add(Group.objects.create(name="research"))
    if role == "holder":
        codenames.append("view_article")
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # no stale permission cache


# -- the rule itself ------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "account", "allowed"), CASES)
def test_the_rule(role: str, account: str, allowed: bool) -> None:
    user = make_user(role)
    assert access.may_use_account(user, account) is allowed
    assert (account in access.usable_accounts(user)) is allowed


# -- the API --------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "account", "allowed"), CASES)
def test_api_create(role: str, account: str, allowed: bool) -> None:
    client = APIClient()
    client.force_authenticate(make_user(role))
    response = client.post(
        reverse("openai_batches_api:job-list"),
        {"account": account, "items": chat_items(1)},
        format="json",
    )
    if allowed:
        assert response.status_code == 201, response.json()
        assert BatchJob.objects.get().account == account
        return
    assert response.status_code == 400
    [problem] = response.json()["error"]["problems"]
    assert problem["field"] == "account"
    # The same sentence as for an account that does not exist: probing reveals nothing.
    assert problem["message"] == f"{account!r} is not a configured account you may use."
    for other in ACCOUNTS:
        if other != account:
            assert other not in response.content.decode()
    assert not BatchJob.objects.exists()


def test_the_api_refuses_an_unknown_and_a_forbidden_account_alike() -> None:
    client = APIClient()
    client.force_authenticate(make_user("plain"))
    url = reverse("openai_batches_api:job-list")
    forbidden = client.post(url, {"account": "research"}, format="json").json()
    unknown = client.post(url, {"account": "nobody"}, format="json").json()
    assert forbidden["error"]["problems"][0]["message"].replace("research", "X") == unknown[
        "error"
    ]["problems"][0]["message"].replace("nobody", "X")


def test_every_problem_is_listed_with_the_account_one() -> None:
    client = APIClient()
    client.force_authenticate(make_user("plain"))
    response = client.post(
        reverse("openai_batches_api:job-list"),
        {"account": "research", "metadata": {"k": "v" * 600}, "items": chat_items(1)},
        format="json",
    )
    assert response.status_code == 400
    assert {p["field"] for p in response.json()["error"]["problems"]} == {"account", "metadata.k"}


# -- the admin ------------------------------------------------------------------------------


def _admin_create(client: Client, account: str) -> Any:
    line = {"custom_id": "a", "body": {"model": "gpt-4o-mini", "messages": []}}
    return client.post(
        reverse("admin:openai_batches_batchjob_add"),
        {"endpoint": "/v1/chat/completions", "account": account, "jsonl_text": json.dumps(line)},
    )


@pytest.mark.parametrize("role", ROLES)
def test_admin_form_lists_only_usable_accounts(role: str) -> None:
    client = Client()
    client.force_login(make_user(role, staff=True))
    response = client.get(reverse("admin:openai_batches_batchjob_add"))
    assert response.status_code == 200
    choices = [value for value, _label in response.context["form"].fields["account"].choices]
    assert choices == [a for a, ok in zip(ACCOUNTS, MATRIX[role], strict=True) if ok]
    page = response.content.decode()
    for account, allowed in zip(ACCOUNTS, MATRIX[role], strict=True):
        assert (f'<option value="{account}"' in page) is allowed


@pytest.mark.parametrize(("role", "account", "allowed"), CASES)
def test_admin_create(role: str, account: str, allowed: bool) -> None:
    client = Client()
    client.force_login(make_user(role, staff=True))
    response = _admin_create(client, account)
    if allowed:
        assert response.status_code == 302, response.content.decode()[:2000]
        assert BatchJob.objects.get().account == account
        return
    # A forged post: the form refuses a value it did not offer, naming the field.
    assert response.status_code == 200
    assert "account" in response.context["form"].errors
    assert not BatchJob.objects.exists()


def test_a_user_with_no_usable_account_is_told_so(settings: Any) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNT_ACCESS": {"default": {"GROUPS": ["batch-users"]}},
    }
    client = Client()
    client.force_login(make_user("plain", staff=True))
    response = client.get(reverse("admin:openai_batches_batchjob_add"))
    assert "You may not use any account" in response.content.decode()
    assert _admin_create(client, "default").status_code == 200
    assert not BatchJob.objects.exists()


# -- the services ---------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "account", "allowed"), CASES)
def test_services_check_the_owner(role: str, account: str, allowed: bool) -> None:
    owner = make_user(role)
    if allowed:
        assert services.create_job(owner=owner, account=account).account == account
        return
    with pytest.raises(ValidationError) as caught:
        services.create_job(owner=owner, account=account, items=chat_items(2))
    [problem] = caught.value.problems
    assert problem.field == "account"
    assert f"{account!r} is not an account {role!r} may use" in problem.message
    assert "sk-" not in str(caught.value)
    assert not BatchJob.objects.exists()


def test_code_without_an_owner_may_use_any_account() -> None:
    for account in ACCOUNTS:
        assert services.create_job(account=account).owner_id is None
    assert BatchJob.objects.count() == len(ACCOUNTS)


# -- the default rule, and the callable -----------------------------------------------------


def test_without_the_setting_only_default_is_open(settings: Any) -> None:
    settings.OPENAI_BATCHES = {
        k: v for k, v in settings.OPENAI_BATCHES.items() if k != "ACCOUNT_ACCESS"
    }
    plain, root = make_user("member"), make_user("superuser")
    assert access.usable_accounts(plain) == ["default"]
    assert access.usable_accounts(root) == list(ACCOUNTS)
    inactive = User.objects.create_user("gone", is_active=False)
    assert access.usable_accounts(inactive) == []


def may_use(user: Any, account: str) -> bool:
    """The callable of the test below: accounts named after the user, and default."""
    return account in ("default", f"team-{user.get_username()}")


def test_a_callable_decides_for_everyone_but_superusers(settings: Any) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNTS": {**_accounts(), "team-plain": {"API_KEY": "sk-t", "BASE_URL": "http://x/v1"}},
        "ACCOUNT_ACCESS": f"{__name__}.may_use",
    }
    plain = make_user("plain")
    assert access.usable_accounts(plain) == ["default", "team-plain"]
    assert "research" in access.usable_accounts(make_user("superuser"))
    client = APIClient()
    client.force_authenticate(plain)
    url = reverse("openai_batches_api:job-list")
    assert client.post(url, {"account": "team-plain"}, format="json").status_code == 201
    assert client.post(url, {"account": "research"}, format="json").status_code == 400


def test_access_does_not_hide_jobs_a_user_may_read() -> None:
    """Reading stays with ownership and the job permissions: a job created for a user
    under an account they may not use (by code, or before their access was revoked) is
    still theirs to read."""
    plain = make_user("plain")
    job = services.create_job(account="research", items=chat_items(1))
    BatchJob.objects.filter(pk=job.pk).update(owner=plain)
    client = APIClient()
    client.force_authenticate(plain)
    response = client.get(reverse("openai_batches_api:job-detail", args=[str(job.uuid)]))
    assert response.status_code == 200
    assert response.json()["account"] == "research"


# -- the system check -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        (RULES, []),
        (f"{__name__}.may_use", []),
        ("no.such.module.fn", ["cannot be imported"]),
        (f"{__name__}.ACCOUNTS", ["is not callable"]),
        (42, ["not int"]),
        ({"nope": {"EVERYONE": True}}, ["'nope'] names an account that is not configured"]),
        ({"research": ["research"]}, ["must be a dict"]),
        ({"research": {"GROUP": ["x"]}}, ["unknown keys: 'GROUP'"]),
        ({"research": {"GROUPS": "research"}}, ["must be a list of names"]),
        ({"research": {"PERMISSIONS": ["view_article"]}}, ["'app_label.codename'"]),
        ({"research": {"EVERYONE": "yes"}}, ["must be True or False"]),
    ],
)
def test_check_e030(settings: Any, value: Any, expected: list[str]) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "ACCOUNT_ACCESS": value}
    messages = check_account_access()
    assert [m.id for m in messages] == ["openai_batches.E030"] * len(expected)
    for message, fragment in zip(messages, expected, strict=True):
        assert fragment in message.msg, message.msg
        assert message.hint


def test_manage_py_check_fails_on_a_bad_setting(settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "ACCOUNT_ACCESS": {"typo": {}}}
    with pytest.raises(SystemCheckError, match="E030"):
        call_command("check")


def test_a_broken_rule_at_run_time_is_a_configuration_error(settings: Any) -> None:
    from openai_batches.exceptions import ConfigurationError

    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNT_ACCESS": {"research": {"GROUPS": "research"}},
    }
    with pytest.raises(ConfigurationError, match="ACCOUNT_ACCESS"):
        access.may_use_account(make_user("plain"), "research")


# -- access withdrawn after the job was created ---------------------------------------------


def test_a_job_whose_owner_lost_access_stops_spending_but_stays_readable() -> None:
    """Removed from the group: the member's research draft takes no more items and is not
    submitted (by them or an operator); they still read it, and cancelling stays possible."""
    member = make_user("member")
    job = services.create_job(owner=member, account="research", items=chat_items(2))
    client = APIClient()
    client.force_authenticate(member)
    detail = reverse("openai_batches_api:job-detail", args=[str(job.uuid)])
    assert client.get(detail).json()["actions"]["submit"]["allowed"] is True

    member.groups.clear()
    before = BatchJob.objects.filter(pk=job.pk).values().get()
    actions = client.get(detail).json()["actions"]
    reason = "its owner 'member' may not use the account 'research'"
    assert actions["submit"] == {"allowed": False, "reason": actions["submit"]["reason"]}
    assert reason in actions["submit"]["reason"]
    submit = client.post(reverse("openai_batches_api:job-submit", args=[str(job.uuid)]))
    assert submit.status_code == 409 and reason in submit.json()["error"]["message"]
    more = client.post(
        reverse("openai_batches_api:job-item-list", args=[str(job.uuid)]),
        {"items": chat_items(1, prefix="more-")},
        format="json",
    )
    assert more.status_code == 409 and reason in more.json()["error"]["message"]
    with pytest.raises(InvalidStateError, match=reason):
        services.request_submit(job)  # an operator's submit goes through the same check
    assert BatchJob.objects.filter(pk=job.pk).values().get() == before

    # The admin offers no Submit button, and its estimate says why.
    admin = Client()
    admin.force_login(make_user("superuser"))
    page = admin.get(reverse("admin:openai_batches_batchjob_change", args=[job.pk]))
    assert 'data-action="submit_jobs"' not in page.content.decode()
    assert f"Submit refused: {reason}" in page.content.decode().replace("&#x27;", "'")

    cancel = client.post(reverse("openai_batches_api:job-cancel", args=[str(job.uuid)]))
    assert cancel.status_code == 200 and cancel.json()["state"] == "cancelled"


def test_a_retry_is_refused_when_the_owner_lost_access() -> None:
    holder = make_user("holder")
    job = services.create_job(owner=holder, account="billing", items=chat_items(1))
    BatchJob.objects.filter(pk=job.pk).update(state="finished")
    job.refresh_from_db()
    holder.user_permissions.clear()
    allowed, reason = services.can_retry(job, "failed")
    assert not allowed and "its owner 'holder' may not use the account 'billing'" in reason


def test_jobs_without_an_owner_and_the_open_default_are_never_refused() -> None:
    plain = make_user("plain")
    mine = services.create_job(owner=plain, items=chat_items(1))
    codes = services.create_job(account="research", items=chat_items(1))
    assert access.owner_refusal(mine) == "" and access.owner_refusal(codes) == ""
    assert services.can_submit(mine) == (True, "") and services.can_submit(codes) == (True, "")
