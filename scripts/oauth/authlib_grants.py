"""Drives the device authorization grant (RFC 8628) and the client credentials grant with authlib.

Run by crates/tidings/tests/oauth_clients.rs against a server it started on loopback. Checks:
the RFC 8414 metadata advertises both grants and the device authorization endpoint and passes
authlib's validate(); a device flow for a public client, polled with authlib's OAuth2Session
(authorization_pending, then slow_down when polling too fast), approved on the verification page
the way a browser would (CSRF cookie and hidden fields, a wrong password first), then collected
once with a refresh token; a denied device flow (access_denied, then the code is gone); a bot
client's client credentials grant with client_secret_basic and client_secret_post (short-lived,
no refresh token, only the scope asked for) and its refusals (wrong secret, wrong scope, a
client that is not a bot, a bot asking for a device code). Prints one "ok: ..." line per check
and the bot's token as "bot_token: ..."; exits non-zero on the first failure.
"""

import argparse
import re
import sys
import time

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"


def ok(message):
    print(f"ok: {message}", flush=True)


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def hidden_fields(html):
    """The form's hidden inputs, as the browser would post them."""
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


def poll(session, token_url, device_code):
    """One poll of the token endpoint with authlib; returns the token or the error code."""
    try:
        return session.fetch_token(token_url, grant_type=DEVICE_CODE, device_code=device_code)
    except OAuthError as e:
        return e.error


def start_device_flow(metadata, client_id, scope):
    answer = requests.post(
        metadata["device_authorization_endpoint"], data={"client_id": client_id, "scope": scope}
    )
    if answer.status_code != 200:
        fail(f"device authorization answered {answer.status_code}: {answer.text}")
    if "no-store" not in answer.headers.get("Cache-Control", ""):
        fail("the device authorization response may be cached")
    grant = answer.json()
    code = grant["user_code"]
    if not re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", code):
        fail(f"user code {code!r} is not XXXX-XXXX of the base-20 alphabet")
    if grant["interval"] != 5 or not 0 < grant["expires_in"] <= 1800:
        fail(f"interval or expires_in: {grant}")
    if not grant["verification_uri_complete"].startswith(grant["verification_uri"] + "?"):
        fail(f"verification URIs: {grant}")
    return grant


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--device-client", required=True)
    parser.add_argument("--device-client-name", required=True)
    parser.add_argument("--bot-client", required=True)
    parser.add_argument("--bot-secret", required=True)
    parser.add_argument("--bot-username", required=True)
    parser.add_argument("--plain-client", required=True)
    parser.add_argument("--plain-secret", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()

    metadata = requests.get(f"{args.base}/.well-known/oauth-authorization-server").json()
    AuthorizationServerMetadata(metadata).validate()
    for grant_type in ("client_credentials", DEVICE_CODE):
        if grant_type not in metadata["grant_types_supported"]:
            fail(f"{grant_type} not advertised: {metadata['grant_types_supported']}")
    if metadata.get("device_authorization_endpoint") != f"{args.base}/oauth/device_authorization":
        fail(f"device_authorization_endpoint: {metadata.get('device_authorization_endpoint')}")
    ok("metadata advertises client_credentials, device_code and the device endpoint")
    token_url = metadata["token_endpoint"]

    # --- Device authorization grant, approved ----------------------------------------------
    grant = start_device_flow(metadata, args.device_client, "messages:read profile")
    device = OAuth2Session(args.device_client, token_endpoint_auth_method="none")
    first = poll(device, token_url, grant["device_code"])
    if first != "authorization_pending":
        fail(f"first poll: {first}")
    second = poll(device, token_url, grant["device_code"])
    if second != "slow_down":
        fail(f"a poll within the interval: {second}")
    ok("polling: authorization_pending, then slow_down when polling too fast")

    browser = requests.Session()
    entry = browser.get(grant["verification_uri"])
    if entry.status_code != 200 or 'name="user_code"' not in entry.text:
        fail(f"the code form: {entry.status_code}")
    if "default-src 'none'" not in entry.headers.get("Content-Security-Policy", ""):
        fail("the verification page has no strict CSP")
    wrong_code = browser.get(grant["verification_uri"], params={"user_code": "BBBB-BBBB"})
    if wrong_code.status_code != 404 or 'name="user_code"' not in wrong_code.text:
        fail(f"an unknown code: {wrong_code.status_code}")
    # The user types the code in lower case without the dash.
    typed = grant["user_code"].replace("-", "").lower()
    page = browser.get(grant["verification_uri"], params={"user_code": typed})
    if page.status_code != 200:
        fail(f"the consent page answered {page.status_code}: {page.text[:300]}")
    for shown in (args.device_client_name, "messages:read", "profile", grant["user_code"]):
        if shown not in page.text:
            fail(f"the consent page does not show {shown!r}")
    if "<script" in page.text or "style=" in page.text:
        fail("the page has a script or an inline style")
    form = hidden_fields(page.text)
    if "csrf" not in form:
        fail("no CSRF field on the page")
    ok("verification page: code form, unknown code refused, consent shows client, scopes, code")

    answer = {**form, "username": args.username, "password": args.password, "decision": "approve"}
    forged = requests.post(grant["verification_uri"], data=answer)
    if forged.status_code != 400:
        fail(f"a form posted without the CSRF cookie was accepted: {forged.status_code}")
    bad = browser.post(grant["verification_uri"], data={**answer, "password": "wrong password"})
    if bad.status_code != 401 or "csrf" not in hidden_fields(bad.text):
        fail(f"a wrong password: {bad.status_code} {bad.text[:300]}")
    approved = browser.post(grant["verification_uri"], data=answer)
    if approved.status_code != 200 or "Device signed in" not in approved.text:
        fail(f"approval: {approved.status_code} {approved.text[:300]}")
    ok("approval: forged form refused, wrong password asks again, right one approves")

    # The early poll made the interval 10 s; wait it out and collect the token. (Polling
    # early again would only add 5 s more each time.)
    token = None
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        time.sleep(11)
        token = poll(device, token_url, grant["device_code"])
        if isinstance(token, dict):
            break
        if token not in ("slow_down", "authorization_pending"):
            fail(f"poll after approval: {token}")
    if not isinstance(token, dict):
        fail(f"no token after approval: {token}")
    if token.get("scope") != "messages:read profile" or not token.get("refresh_token"):
        fail(f"device token: {token}")
    me = device.get(f"{args.base}/api/v1/account")
    if me.status_code != 200 or me.json()["username"] != args.username:
        fail(f"the device token does not work: {me.status_code} {me.text}")
    devices = device.get(f"{args.base}/api/v1/devices")
    if devices.status_code != 403:
        fail(f"a token without `devices` listed devices: {devices.status_code}")
    refreshed = device.refresh_token(token_url)
    if refreshed.get("scope") != "messages:read profile":
        fail(f"refresh: {refreshed}")
    if poll(device, token_url, grant["device_code"]) != "invalid_grant":
        fail("a device code was collected twice")
    ok("device flow: token with the consented scope and a refresh token; the code is single-use")

    # --- Device authorization grant, denied ------------------------------------------------
    grant2 = start_device_flow(metadata, args.device_client, "profile")
    page2 = browser.get(grant2["verification_uri_complete"])
    if page2.status_code != 200:
        fail(f"verification_uri_complete answered {page2.status_code}")
    denied = browser.post(
        grant2["verification_uri"], data={**hidden_fields(page2.text), "decision": "deny"}
    )
    if denied.status_code != 200 or "denied" not in denied.text:
        fail(f"deny: {denied.status_code} {denied.text[:300]}")
    again = browser.get(grant2["verification_uri_complete"])
    if again.status_code != 404:
        fail(f"an answered code can be answered again: {again.status_code}")
    if poll(device, token_url, grant2["device_code"]) != "access_denied":
        fail("a denied device was not told access_denied")
    if poll(device, token_url, grant2["device_code"]) != "invalid_grant":
        fail("a denied device code stayed usable")
    ok("device flow denied: access_denied once, then the code is gone")

    over = requests.post(
        metadata["device_authorization_endpoint"],
        data={"client_id": args.device_client, "scope": "admin"},
    )
    if over.status_code != 400 or over.json()["error"] != "invalid_scope":
        fail(f"a scope beyond the client's: {over.status_code} {over.text}")
    ok("a device authorization beyond the client's scope is invalid_scope")

    # --- Client credentials (bot) ----------------------------------------------------------
    bot = OAuth2Session(
        args.bot_client,
        args.bot_secret,
        scope="messages:write profile",
        token_endpoint_auth_method="client_secret_basic",
    )
    bot_token = bot.fetch_token(token_url, grant_type="client_credentials")
    if bot_token.get("scope") != "messages:write profile" or "refresh_token" in bot_token:
        fail(f"bot token: {bot_token}")
    if not 0 < bot_token["expires_in"] <= 300:
        fail(f"a bot token lives {bot_token['expires_in']} s")
    me = bot.get(f"{args.base}/api/v1/account")
    if me.status_code != 200 or me.json()["username"] != args.bot_username:
        fail(f"the bot token does not act as the bot: {me.status_code} {me.text}")
    listing = bot.get(f"{args.base}/api/v1/conversations")
    if listing.status_code != 403 or listing.json().get("code") != "insufficient_scope":
        fail(f"the bot read conversations without messages:read: {listing.status_code}")
    ok("client credentials (client_secret_basic): short-lived, no refresh token, acts as the bot")

    post = OAuth2Session(
        args.bot_client, args.bot_secret, token_endpoint_auth_method="client_secret_post"
    )
    full = post.fetch_token(token_url, grant_type="client_credentials")
    if full.get("scope") != "messages:read messages:write profile":
        fail(f"without a scope the bot gets all it was granted: {full}")
    intro = requests.post(
        metadata["introspection_endpoint"],
        auth=(args.bot_client, args.bot_secret),
        data={"token": full["access_token"]},
    ).json()
    if not intro.get("active") or intro.get("username") != args.bot_username \
            or intro.get("client_id") != args.bot_client:
        fail(f"introspection of a bot token: {intro}")
    ok("client credentials (client_secret_post): the granted scope; introspection names the bot")

    def refused(client_id, secret, scope, status, error):
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        answer = requests.post(token_url, auth=(client_id, secret), data=data)
        if answer.status_code != status or answer.json().get("error") != error:
            fail(f"expected {status} {error}, got {answer.status_code} {answer.text}")

    refused(args.bot_client, "wrong", None, 401, "invalid_client")
    refused(args.bot_client, args.bot_secret, "admin", 400, "invalid_scope")
    refused(args.bot_client, args.bot_secret, "files", 400, "invalid_scope")
    refused(args.plain_client, args.plain_secret, None, 400, "unauthorized_client")
    no_client = requests.post(token_url, data={"grant_type": "client_credentials"})
    if no_client.status_code != 401:
        fail(f"client credentials without a client: {no_client.status_code}")
    bot_device = requests.post(
        metadata["device_authorization_endpoint"],
        auth=(args.bot_client, args.bot_secret),
        data={"scope": "profile"},
    )
    if bot_device.status_code != 400 or bot_device.json()["error"] != "unauthorized_client":
        fail(f"a bot asked for a device code: {bot_device.status_code} {bot_device.text}")
    ok("refused: wrong secret, scope beyond the grant, a client that is not a bot, a bot's device flow")
    print(f"bot_token: {bot_token['access_token']}", flush=True)
    print("all authlib grant checks passed")


if __name__ == "__main__":
    main()
