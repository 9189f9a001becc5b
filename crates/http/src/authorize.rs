//! The authorization endpoint (`/oauth/authorize`, RFC 6749 section 4.1) and the device
//! verification page (`/oauth/device`, RFC 8628 section 3.3): server-rendered sign-in and
//! consent pages in plain HTML forms, with no script and no inline style (its
//! stylesheet is served from `/oauth/style.css`), so it works under `default-src 'none';
//! style-src 'self'`.
//!
//! Cross-site request forgery is stopped by a double-submit token: the page sets a random
//! `SameSite=Strict`, `HttpOnly` cookie and repeats it in a hidden field, and the form is
//! accepted only when both are present and equal. Every decision (client, redirect URI, scope,
//! PKCE, credentials) is the core's; this module only renders and redirects.

use crate::AppState;
use crate::extract::ClientAddr;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidings_core::oauth::{Authorization, AuthorizeError, AuthorizeRequest, DeviceConsent};

/// The cookie holding the CSRF token of the page.
const CSRF_COOKIE: &str = "tidings_oauth_csrf";
/// The path of the authorization page, which its CSRF cookie is scoped to.
const AUTHORIZE_PATH: &str = "/oauth/authorize";
/// The path of the device verification page, which its CSRF cookie is scoped to.
const DEVICE_PATH: &str = "/oauth/device";

/// The query of `GET /oauth/authorize`, and the fields the form posts back.
#[derive(Deserialize, Default)]
pub struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    // Only in the posted form.
    username: Option<String>,
    password: Option<String>,
    /// The TOTP or recovery code of a two-factor account (docs/accounts.md).
    otp: Option<String>,
    csrf: Option<String>,
    /// `approve` or `deny`.
    decision: Option<String>,
}

impl AuthorizeParams {
    fn request(&self) -> AuthorizeRequest {
        AuthorizeRequest {
            response_type: self.response_type.clone(),
            client_id: self.client_id.clone(),
            redirect_uri: self.redirect_uri.clone(),
            scope: self.scope.clone(),
            state: self.state.clone(),
            code_challenge: self.code_challenge.clone(),
            code_challenge_method: self.code_challenge_method.clone(),
        }
    }
}

/// Escapes text for HTML element content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The security headers of every page this module renders: it may not be framed (clickjacking
/// the approve button), loads nothing but its stylesheet, and is never cached.
fn page(status: StatusCode, body: String, cookie: Option<String>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

fn shell(title: &str, content: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/oauth/style.css\"></head>\
         <body><main>{content}</main></body></html>\n",
        title = escape(title),
    )
}

fn error_page(message: &str) -> Response {
    let body = shell(
        "Sign-in request refused",
        &format!(
            "<h1>This sign-in request cannot continue</h1><p class=\"error\">{}</p>",
            escape(message)
        ),
    );
    page(StatusCode::BAD_REQUEST, body, None)
}

/// Sends the browser back to the client with `params` added to its redirect URI's query.
fn redirect_back(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let query = serde_urlencoded::to_string(params).unwrap_or_default();
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{separator}{query}");
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refused(error: AuthorizeError) -> Response {
    match error {
        AuthorizeError::Page(message) => error_page(&message),
        AuthorizeError::Redirect {
            redirect_uri,
            error,
            description,
            state,
        } => {
            let mut params = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(state) = state.as_deref() {
                params.push(("state", state));
            }
            redirect_back(&redirect_uri, &params)
        }
    }
}

/// The sign-in and consent form for a valid request; `notice` is shown above it (a failed
/// sign-in).
fn consent_form(auth: &Authorization, csrf: &str, notice: Option<&str>) -> String {
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    let scopes: String = auth
        .scope
        .split(' ')
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    let notice = notice
        .map(|n| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(n)))
        .unwrap_or_default();
    let content = format!(
        "<h1>Sign in to authorize {name}</h1>\
         {notice}\
         <p><strong>{name}</strong> asks to access your Tidings account with these \
         permissions:</p><ul class=\"scopes\">{scopes}</ul>\
         <p class=\"small\">You will be sent back to <code>{redirect}</code>.</p>\
         <form method=\"post\" action=\"/oauth/authorize\">\
         {f1}{f2}{f3}{f4}{f5}{f6}{f7}{f8}\
         <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required></label>\
         <label>Two-factor code (if your account uses one) <input name=\"otp\" \
         autocomplete=\"one-time-code\" inputmode=\"numeric\"></label>\
         <div class=\"buttons\"><button type=\"submit\" name=\"decision\" value=\"approve\">\
         Sign in and allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button>\
         </div></form>",
        name = escape(&auth.client_name),
        redirect = escape(&auth.redirect_uri),
        f1 = hidden("response_type", "code"),
        f2 = hidden("client_id", &auth.client_id),
        f3 = hidden("redirect_uri", &auth.redirect_uri),
        f4 = hidden("scope", &auth.scope),
        f5 = hidden("state", auth.state.as_deref().unwrap_or_default()),
        f6 = hidden("code_challenge", &auth.code_challenge),
        f7 = hidden("code_challenge_method", "S256"),
        f8 = hidden("csrf", csrf),
    );
    shell("Authorize application", &content)
}

/// The CSRF cookie for a new page. `Secure` when the server is reached over HTTPS (the issuer
/// says so), so the token never travels in clear text there.
fn csrf_cookie(state: &AppState, token: &str, path: &str) -> String {
    let secure = if state.core.issuer().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{CSRF_COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict{secure}")
}

/// Whether a posted form repeats the page's CSRF cookie.
fn csrf_matches(headers: &HeaderMap, field: Option<&String>) -> bool {
    let cookie = cookie_value(headers, CSRF_COOKIE);
    matches!((&cookie, field), (Some(c), Some(f)) if !c.is_empty() && c == f)
}

pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `GET /oauth/authorize`: checks the request and shows the form.
pub async fn show(
    State(state): State<AppState>,
    query: Result<Query<AuthorizeParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = query else {
        return error_page("the request could not be read");
    };
    match state.core.validate_authorization(&params.request()).await {
        Ok(auth) => {
            let csrf = tidings_core::tokens::random_token();
            let cookie = csrf_cookie(&state, &csrf, AUTHORIZE_PATH);
            page(
                StatusCode::OK,
                consent_form(&auth, &csrf, None),
                Some(cookie),
            )
        }
        Err(error) => refused(error),
    }
}

/// `POST /oauth/authorize`: the user's answer.
pub async fn submit(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: Result<Form<AuthorizeParams>, FormRejection>,
) -> Response {
    let Ok(Form(params)) = form else {
        return error_page("the form could not be read");
    };
    if !csrf_matches(&headers, params.csrf.as_ref()) {
        return error_page("the form expired or came from another site; start again");
    }
    let auth = match state.core.validate_authorization(&params.request()).await {
        Ok(auth) => auth,
        Err(error) => return refused(error),
    };
    let mut back = Vec::new();
    if params.decision.as_deref() != Some("approve") {
        back.push(("error", "access_denied"));
        back.push(("error_description", "the user denied the request"));
        if let Some(s) = auth.state.as_deref() {
            back.push(("state", s));
        }
        return redirect_back(&auth.redirect_uri, &back);
    }
    let username = params.username.clone().unwrap_or_default();
    let password = params.password.clone().unwrap_or_default();
    match state
        .core
        .approve_authorization(&auth, &username, password, params.otp.as_deref(), address)
        .await
    {
        Ok(code) => {
            back.push(("code", code.as_str()));
            if let Some(s) = auth.state.as_deref() {
                back.push(("state", s));
            }
            redirect_back(&auth.redirect_uri, &back)
        }
        Err(e) => {
            // The same page again with the reason; the CSRF token stays valid.
            let csrf = params.csrf.unwrap_or_default();
            let status =
                StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            page(status, consent_form(&auth, &csrf, Some(&e.message)), None)
        }
    }
}

// --- Device verification (RFC 8628 section 3.3) ------------------------------------------------

/// The query of `GET /oauth/device`, and the fields its forms post.
#[derive(Deserialize, Default)]
pub struct DeviceParams {
    user_code: Option<String>,
    // Only in the posted form.
    username: Option<String>,
    password: Option<String>,
    /// The TOTP or recovery code of a two-factor account (docs/accounts.md).
    otp: Option<String>,
    csrf: Option<String>,
    /// `approve` or `deny`.
    decision: Option<String>,
}

fn notice_html(notice: Option<&str>) -> String {
    notice
        .map(|n| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(n)))
        .unwrap_or_default()
}

/// The form asking for the code the device shows. It is a `GET` form: looking a code up
/// changes nothing.
fn code_form(notice: Option<&str>) -> String {
    let content = format!(
        "<h1>Sign in a device</h1>{notice}\
         <p>Enter the code your device shows.</p>\
         <form method=\"get\" action=\"{DEVICE_PATH}\">\
         <label>Code <input name=\"user_code\" autocomplete=\"off\" autocapitalize=\"characters\" \
         spellcheck=\"false\" required></label>\
         <div class=\"buttons\"><button type=\"submit\">Continue</button></div></form>",
        notice = notice_html(notice),
    );
    shell("Sign in a device", &content)
}

/// The sign-in and consent form for a pending device authorization.
fn device_consent_form(consent: &DeviceConsent, csrf: &str, notice: Option<&str>) -> String {
    let scopes: String = consent
        .scope
        .split(' ')
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    let content = format!(
        "<h1>Sign in {name} on your device</h1>{notice}\
         <p>Check that your device shows the code <strong class=\"code\">{code}</strong>. \
         If you did not start this, choose <strong>Deny</strong>.</p>\
         <p><strong>{name}</strong> asks to access your Tidings account with these \
         permissions:</p><ul class=\"scopes\">{scopes}</ul>\
         <form method=\"post\" action=\"{DEVICE_PATH}\">\
         <input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required></label>\
         <label>Two-factor code (if your account uses one) <input name=\"otp\" \
         autocomplete=\"one-time-code\" inputmode=\"numeric\"></label>\
         <div class=\"buttons\"><button type=\"submit\" name=\"decision\" value=\"approve\">\
         Sign in and allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button>\
         </div></form>",
        name = escape(&consent.client_name),
        notice = notice_html(notice),
        code = escape(&consent.user_code),
        csrf = escape(csrf),
    );
    shell("Authorize device", &content)
}

fn status_of(e: &tidings_core::CoreError) -> StatusCode {
    StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
}

/// `GET /oauth/device`: the code form, or, with `user_code` (typed, or from
/// `verification_uri_complete`), the consent form for that code.
pub async fn device_show(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    query: Result<Query<DeviceParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = query else {
        return error_page("the request could not be read");
    };
    let Some(typed) = params.user_code.filter(|c| !c.trim().is_empty()) else {
        return page(StatusCode::OK, code_form(None), None);
    };
    match state.core.device_consent(&typed, address).await {
        Ok(consent) => {
            let csrf = tidings_core::tokens::random_token();
            let cookie = csrf_cookie(&state, &csrf, DEVICE_PATH);
            page(
                StatusCode::OK,
                device_consent_form(&consent, &csrf, None),
                Some(cookie),
            )
        }
        Err(e) => page(status_of(&e), code_form(Some(&e.message)), None),
    }
}

/// `POST /oauth/device`: the user's answer.
pub async fn device_submit(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: Result<Form<DeviceParams>, FormRejection>,
) -> Response {
    let Ok(Form(params)) = form else {
        return error_page("the form could not be read");
    };
    if !csrf_matches(&headers, params.csrf.as_ref()) {
        return error_page("the form expired or came from another site; start again");
    }
    let typed = params.user_code.clone().unwrap_or_default();
    let approve = params.decision.as_deref() == Some("approve");
    let answer = if approve {
        let username = params.username.clone().unwrap_or_default();
        let password = params.password.clone().unwrap_or_default();
        state
            .core
            .decide_device(
                &typed,
                Some((&username, password, params.otp.as_deref())),
                address,
            )
            .await
    } else {
        state.core.decide_device(&typed, None, address).await
    };
    match answer {
        Ok(()) => {
            let (title, text) = if approve {
                (
                    "Device signed in",
                    "Your device is signed in. You can close this page and return to it.",
                )
            } else {
                (
                    "Request denied",
                    "The device was not signed in. You can close this page.",
                )
            };
            page(
                StatusCode::OK,
                shell(title, &format!("<h1>{title}</h1><p>{text}</p>")),
                None,
            )
        }
        // A wrong password shows the consent form again (the CSRF token stays valid); a code
        // that is gone shows the code form.
        Err((e, Some(consent))) => {
            let csrf = params.csrf.unwrap_or_default();
            page(
                status_of(&e),
                device_consent_form(&consent, &csrf, Some(&e.message)),
                None,
            )
        }
        Err((e, None)) => page(status_of(&e), code_form(Some(&e.message)), None),
    }
}

/// `GET /oauth/style.css`: the page's only resource.
pub async fn stylesheet() -> Response {
    const CSS: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1d2330;\
margin:0}main{max-width:26rem;margin:3rem auto;background:#fff;padding:1.5rem 2rem;\
border-radius:8px;box-shadow:0 1px 4px #0002}h1{font-size:1.3rem}label{display:block;\
margin:.8rem 0}input{display:block;width:100%;box-sizing:border-box;padding:.5rem;\
margin-top:.25rem}.buttons{display:flex;gap:.5rem;margin-top:1rem}button{padding:.5rem 1rem}\
.error{color:#a01b1b}.small{font-size:.85rem;color:#555}.scopes code{background:#eef}\
.code{font-family:monospace;font-size:1.2rem;letter-spacing:.1em}\n";
    let mut response = CSS.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn finds_the_csrf_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tidings_oauth_csrf=xyz"),
        );
        assert_eq!(cookie_value(&headers, CSRF_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie_value(&headers, "b"), None);
    }

    #[test]
    fn redirects_keep_the_clients_query() {
        let r = redirect_back(
            "https://app.example/cb?x=1",
            &[("code", "a b"), ("state", "s&t")],
        );
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://app.example/cb?x=1&code=a+b&state=s%26t"
        );
    }
}
