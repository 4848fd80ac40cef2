"""The admin UI's server-rendered forms, driven through the test client: a page's text, its
CSRF token, and logging in through the login form."""

from __future__ import annotations

import html
import re
from typing import Any

from infra.auth_models import User
from tests.conftest import make_user

CSRF_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def page_text(response: Any) -> str:
    """The response's body as text, HTML entities decoded."""
    return html.unescape(response.get_data(as_text=True))


def csrf_token(client: Any, path: str = "/admin/login") -> str:
    """The CSRF token of the form on the page at ``path``."""
    match = CSRF_TOKEN.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def log_in_through_the_form(client: Any, db: Any, role: str, password: str, email: str | None = None) -> User:
    """A new user with ``role``, committed and logged in through the login form."""
    user = make_user(db, role, email=email)
    db.commit()
    response = client.post(
        "/admin/login", data={"email": user.email, "password": password, "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 302, page_text(response)
    return user
