"""Drives the Tidings authorization server with authlib, a third-party OAuth client library.

Run by crates/tidings/tests/oauth_clients.rs against a server it started on loopback. Checks:
the RFC 8414 metadata passes authlib's validate(); the authorization code flow with PKCE (S256)
for a public client, with the sign-in and consent form posted the way a browser would (the page's
CSRF cookie and hidden fields); refresh; a code is single-use; a confidential client with
client_secret_basic, RFC 7662 introspection and RFC 7009 revocation; and the RFC 6749
section 4.1.2.1 error redirects (plain PKCE refused, the user denies) and the error page
(unregistered redirect URI). Prints one "ok: ..." line per check; exits non-zero on the first
failure.
"""

import argparse
import re
import sys
import urllib.parse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata


def ok(message):
    print(f"ok: {message}", flush=True)


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def hidden_fields(html):
    """The form's hidden inputs, as the browser would post them."""
    fields = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html):
        fields[name] = (
            value.replace("&quot;", '"').replace("&#39;", "'").replace("&lt;", "<")
            .replace("&gt;", ">").replace("&amp;", "&")
        )
    return fields


def consent(authorize_url, username, password, decision="approve"):
    """Opens the authorization page like a browser and answers its form; returns the redirect."""
    browser = requests.Session()
    page = browser.get(authorize_url, allow_redirects=False)
    if page.status_code != 200:
        fail(f"authorization page answered {page.status_code}: {page.text[:300]}")
    csp = page.headers.get("Content-Security-Policy", "")
    if "script-src" in csp or "unsafe-inline" in csp or "default-src 'none'" not in csp:
        fail(f"unexpected CSP on the page: {csp}")
    if "<script" in page.text or "style=" in page.text:
        fail("the page has a script or an inline style")
    form = hidden_fields(page.text)
    if "csrf" not in form:
        fail("no CSRF field on the page")
    # Without the cookie (another site posting the form) the answer is refused.
    forged = requests.post(
        page.url.split("?")[0],
        data={**form, "username": username, "password": password, "decision": decision},
        allow_redirects=False,
    )
    if forged.status_code != 400 or "Location" in forged.headers:
        fail(f"a form posted without the CSRF cookie was accepted: {forged.status_code}")
    answer = browser.post(
        page.url.split("?")[0],
        data={**form, "username": username, "password": password, "decision": decision},
        allow_redirects=False,
    )
    if answer.status_code != 303:
        fail(f"the form answered {answer.status_code}: {answer.text[:300]}")
    return answer.headers["Location"]


def query_of(location):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--public-client", required=True)
    parser.add_argument("--confidential-client", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--redirect-uri", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--conversation", required=True, type=int)
    args = parser.parse_args()

    metadata = requests.get(f"{args.base}/.well-known/oauth-authorization-server").json()
    AuthorizationServerMetadata(metadata).validate()
    if "S256" not in metadata["code_challenge_methods_supported"]:
        fail("S256 not advertised")
    ok("metadata passes AuthorizationServerMetadata.validate()")
    authorize, token_url = metadata["authorization_endpoint"], metadata["token_endpoint"]

    # --- Public client: authorization code with PKCE ------------------------------------
    session = OAuth2Session(
        args.public_client,
        redirect_uri=args.redirect_uri,
        scope="messages:read profile",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(64)
    url, state = session.create_authorization_url(authorize, code_verifier=verifier)
    location = consent(url, args.username, args.password)
    params = query_of(location)
    if params.get("state") != state or "code" not in params:
        fail(f"bad redirect {location}")
    token = session.fetch_token(
        token_url, authorization_response=location, code_verifier=verifier
    )
    if token.get("scope") != "messages:read profile":
        fail(f"unexpected scope {token.get('scope')}")
    me = session.get(f"{args.base}/api/v1/account")
    if me.status_code != 200 or me.json()["username"] != args.username:
        fail(f"the token does not work: {me.status_code} {me.text}")
    ok("public client: code + PKCE S256 flow, state returned, token works")

    again = requests.post(
        token_url,
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": args.redirect_uri,
            "client_id": args.public_client,
            "code_verifier": verifier,
        },
    )
    if again.status_code != 400 or again.json()["error"] != "invalid_grant":
        fail(f"a code was accepted twice: {again.status_code} {again.text}")
    ok("a code is single-use")

    old_access = token["access_token"]
    refreshed = session.refresh_token(token_url)
    if refreshed["access_token"] == old_access or refreshed.get("scope") != "messages:read profile":
        fail(f"refresh did not keep the scope: {refreshed}")
    ok("refresh keeps the consented scope")

    history = session.get(f"{args.base}/api/v1/conversations/{args.conversation}/messages")
    if history.status_code != 200:
        fail(f"a messages:read token cannot read history: {history.status_code} {history.text}")
    sent = session.post(
        f"{args.base}/api/v1/conversations/{args.conversation}/messages",
        json={"client_msg_id": "authlib-1", "body": {"kind": "text", "text": "hi"}},
    )
    if sent.status_code != 403 or sent.json().get("code") != "insufficient_scope":
        fail(f"a messages:read token could send: {sent.status_code} {sent.text}")
    devices = session.get(f"{args.base}/api/v1/devices")
    if devices.status_code != 403:
        fail(f"a token without `devices` listed devices: {devices.status_code}")
    ok("scopes: messages:read reads history but cannot send (insufficient_scope) or list devices")
    print(f"scoped_token: {refreshed['access_token']}", flush=True)

    # A stolen code is useless without the verifier.
    session2 = OAuth2Session(
        args.public_client,
        redirect_uri=args.redirect_uri,
        scope="profile",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier2 = generate_token(64)
    url2, _ = session2.create_authorization_url(authorize, code_verifier=verifier2)
    code2 = query_of(consent(url2, args.username, args.password))["code"]
    wrong = requests.post(
        token_url,
        data={
            "grant_type": "authorization_code",
            "code": code2,
            "redirect_uri": args.redirect_uri,
            "client_id": args.public_client,
            "code_verifier": generate_token(64),
        },
    )
    if wrong.status_code != 400 or wrong.json()["error"] != "invalid_grant":
        fail(f"a wrong verifier was accepted: {wrong.status_code} {wrong.text}")
    ok("a wrong code_verifier is refused")

    # --- Confidential client: client_secret_basic, introspection, revocation ----------------
    confidential = OAuth2Session(
        args.confidential_client,
        args.secret,
        redirect_uri=args.redirect_uri,
        scope="messages:read messages:write",
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier3 = generate_token(64)
    url3, state3 = confidential.create_authorization_url(authorize, code_verifier=verifier3)
    location3 = consent(url3, args.username, args.password)
    token3 = confidential.fetch_token(
        token_url, authorization_response=location3, code_verifier=verifier3
    )
    if token3.get("scope") != "messages:read messages:write":
        fail(f"unexpected scope {token3}")
    ok("confidential client: code + PKCE with client_secret_basic")

    bad_secret = requests.post(
        token_url,
        auth=(args.confidential_client, "wrong"),
        data={"grant_type": "refresh_token", "refresh_token": token3["refresh_token"]},
    )
    if bad_secret.status_code != 401 or bad_secret.json()["error"] != "invalid_client":
        fail(f"a wrong secret was accepted: {bad_secret.status_code} {bad_secret.text}")
    ok("a wrong client secret is invalid_client (401)")

    intro = confidential.introspect_token(
        metadata["introspection_endpoint"], token=token3["access_token"]
    ).json()
    if not intro.get("active") or intro.get("scope") != "messages:read messages:write" \
            or intro.get("client_id") != args.confidential_client \
            or intro.get("username") != args.username:
        fail(f"introspection: {intro}")
    ok("introspection reports an active token with scope, client and user")

    confidential.revoke_token(metadata["revocation_endpoint"], token=token3["refresh_token"])
    intro = confidential.introspect_token(
        metadata["introspection_endpoint"], token=token3["access_token"]
    ).json()
    if intro != {"active": False}:
        fail(f"introspection after revocation: {intro}")
    ok("after revocation the token is inactive")

    anonymous = requests.post(
        metadata["introspection_endpoint"], data={"token": token["access_token"]}
    )
    if anonymous.status_code != 401:
        fail(f"introspection without client credentials answered {anonymous.status_code}")
    ok("introspection needs client credentials")

    # --- Errors -----------------------------------------------------------------------------
    plain = requests.get(
        authorize,
        params={
            "response_type": "code",
            "client_id": args.public_client,
            "redirect_uri": args.redirect_uri,
            "state": "s1",
            "code_challenge": verifier,
            "code_challenge_method": "plain",
        },
        allow_redirects=False,
    )
    p = query_of(plain.headers.get("Location", ""))
    if plain.status_code != 303 or p.get("error") != "invalid_request" or p.get("state") != "s1":
        fail(f"plain PKCE: {plain.status_code} {plain.headers.get('Location')}")
    ok("plain PKCE is refused with an error redirect carrying state")

    session4 = OAuth2Session(
        args.public_client,
        redirect_uri=args.redirect_uri,
        code_challenge_method="S256",
    )
    url4, state4 = session4.create_authorization_url(authorize, code_verifier=generate_token(64))
    denied = query_of(consent(url4, args.username, args.password, decision="deny"))
    if denied.get("error") != "access_denied" or denied.get("state") != state4:
        fail(f"deny: {denied}")
    ok("denying redirects with access_denied")

    scope = requests.get(
        authorize,
        params={
            "response_type": "code",
            "client_id": args.public_client,
            "redirect_uri": args.redirect_uri,
            "scope": "admin",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
    )
    if query_of(scope.headers.get("Location", "")).get("error") != "invalid_scope":
        fail(f"a scope beyond the client's was not refused: {scope.headers}")
    ok("a scope beyond the client's is invalid_scope")

    stray = requests.get(
        authorize,
        params={
            "response_type": "code",
            "client_id": args.public_client,
            "redirect_uri": args.redirect_uri + "/elsewhere",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
    )
    if stray.status_code != 400 or "Location" in stray.headers:
        fail(f"an unregistered redirect URI was followed: {stray.status_code}")
    ok("an unregistered redirect URI gets an error page, no redirect")
    print("all authlib checks passed")


if __name__ == "__main__":
    main()
