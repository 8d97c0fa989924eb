"""Signing in to the web interface: the token is asked for, checked, kept out of URLs."""

from __future__ import annotations

from support import OPERATOR_TOKEN


def test_unauthenticated_visit_asks_for_the_token(ui):
    ui.sign_out_storage()
    ui.driver.get(f"{ui.stack.url}/")  # the gateway's root leads to the interface
    ui.wait(lambda: ui.visible("#api-token"), "the sign-in form")
    assert ui.driver.current_url == f"{ui.stack.url}/ui/"
    assert ui.js("return document.activeElement.id") == "api-token"
    assert ui.js("return document.querySelector('label[for=api-token]').innerText") == "API token"
    assert not ui.visible("#content")
    assert not ui.visible("#tasks-table")
    assert "Sign in" in ui.text("h1")


def test_wrong_token_is_refused_next_to_the_field(ui):
    ui.sign_out_storage()
    ui.open("index.html")
    ui.sign_in("not-the-token")
    ui.wait(lambda: ui.field_error("api-token"), "the token's field error")
    assert "refused" in ui.field_error("api-token")
    assert ui.js("return document.getElementById('api-token').getAttribute('aria-invalid')") \
        == "true"
    assert not ui.visible("#content")
    ui.no_alert()


def test_sign_in_keeps_the_token_out_of_urls_and_sign_out_forgets_it(ui):
    ui.sign_out_storage()
    ui.open("create.html")
    ui.sign_in()
    ui.wait(lambda: ui.visible("#create-form"), "the create form after signing in")
    assert OPERATOR_TOKEN not in ui.driver.current_url
    assert ui.js("return window.sessionStorage.getItem('agata.apiToken')") == OPERATOR_TOKEN
    assert ui.js("return document.cookie") == ""
    # The session carries over to the other pages of this tab.
    ui.open("index.html")
    ui.wait(lambda: ui.visible("#tasks-summary") and ui.text("#tasks-summary"), "the task list")
    history = ui.js("return window.performance.getEntriesByType('resource')"
                    ".map(e => e.name).concat([location.href])")
    assert not [url for url in history if OPERATOR_TOKEN in url], history
    ui.find("#sign-out").click()
    ui.wait(lambda: ui.visible("#api-token"), "the sign-in form after signing out")
    assert ui.js("return window.sessionStorage.getItem('agata.apiToken')") is None
    assert not ui.visible("#content")
