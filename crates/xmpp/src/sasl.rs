//! SASL mechanisms over the client's decoded bytes: PLAIN (RFC 4616) and OAUTHBEARER
//! (RFC 7628). Parsing only; checking the credentials is the core's.

/// The mechanisms offered, in order of preference, over TLS.
pub const MECHANISMS_TLS: &[&str] = &["PLAIN", "OAUTHBEARER"];

/// What a client's initial response says.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// PLAIN: the username and password.
    Password { username: String, password: String },
    /// OAUTHBEARER: a Tidings access token, and the user the client says it is, if it said.
    Bearer {
        authzid: Option<String>,
        token: String,
    },
}

/// Why a response was refused; each maps to a SASL failure condition (RFC 6120 6.5).
#[derive(Debug, PartialEq, Eq)]
pub enum SaslError {
    /// The mechanism is not offered.
    InvalidMechanism,
    /// The response could not be decoded.
    IncorrectEncoding,
    /// An authorization identity other than the authenticated user.
    InvalidAuthzid,
    /// The response decoded but is not what the mechanism takes.
    MalformedRequest,
}

impl SaslError {
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::IncorrectEncoding => "incorrect-encoding",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::MalformedRequest => "malformed-request",
        }
    }
}

/// Decodes the base64 content of `<auth/>` (`=` is an empty response).
pub fn decode_response(text: &str) -> Result<Vec<u8>, SaslError> {
    use base64::Engine;
    let text = text.trim();
    if text == "=" || text.is_empty() {
        return Ok(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| SaslError::IncorrectEncoding)
}

/// Parses an initial response for `mechanism`. `domain` is ours: an authorization identity
/// must name the same user (as `user` or `user@domain`).
pub fn parse(mechanism: &str, response: &[u8], domain: &str) -> Result<Credentials, SaslError> {
    match mechanism {
        "PLAIN" => parse_plain(response, domain),
        "OAUTHBEARER" => parse_oauthbearer(response),
        _ => Err(SaslError::InvalidMechanism),
    }
}

fn parse_plain(response: &[u8], domain: &str) -> Result<Credentials, SaslError> {
    let text = std::str::from_utf8(response).map_err(|_| SaslError::MalformedRequest)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedRequest);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    // Clients send the username or the bare JID.
    let username = strip_domain(authcid, domain).ok_or(SaslError::InvalidAuthzid)?;
    if !authzid.is_empty() && strip_domain(authzid, domain) != Some(username) {
        return Err(SaslError::InvalidAuthzid);
    }
    Ok(Credentials::Password {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// `user` or `user@domain` to `user`; `None` for another domain.
fn strip_domain<'a>(id: &'a str, domain: &str) -> Option<&'a str> {
    match id.split_once('@') {
        None => Some(id),
        Some((user, d)) if d.eq_ignore_ascii_case(domain) => Some(user),
        Some(_) => None,
    }
}

fn parse_oauthbearer(response: &[u8]) -> Result<Credentials, SaslError> {
    let text = std::str::from_utf8(response).map_err(|_| SaslError::MalformedRequest)?;
    // gs2-header: "n," (no channel binding) then "a=<authzid>," or ","; then \x01-separated
    // key=value pairs ending in \x01\x01.
    let rest = text
        .strip_prefix("n,")
        .or_else(|| text.strip_prefix("y,"))
        .ok_or(SaslError::MalformedRequest)?;
    let (authz, rest) = rest.split_once(',').ok_or(SaslError::MalformedRequest)?;
    let authzid = if authz.is_empty() {
        None
    } else {
        let name = authz
            .strip_prefix("a=")
            .ok_or(SaslError::MalformedRequest)?;
        Some(name.replace("=2C", ",").replace("=3D", "="))
    };
    let body = rest
        .strip_prefix('\x01')
        .and_then(|r| r.strip_suffix("\x01\x01"))
        .ok_or(SaslError::MalformedRequest)?;
    let mut token = None;
    for pair in body.split('\x01') {
        if let Some(value) = pair.strip_prefix("auth=") {
            let (scheme, credential) = value.split_once(' ').ok_or(SaslError::MalformedRequest)?;
            if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
                return Err(SaslError::MalformedRequest);
            }
            token = Some(credential.trim().to_owned());
        }
    }
    Ok(Credentials::Bearer {
        authzid,
        token: token.ok_or(SaslError::MalformedRequest)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let ok = |r: &[u8]| parse("PLAIN", r, "example.com");
        assert_eq!(
            ok(b"\0alice\0secret pw"),
            Ok(Credentials::Password {
                username: "alice".into(),
                password: "secret pw".into()
            })
        );
        assert!(ok(b"alice@example.com\0alice@example.com\0pw").is_ok());
        assert_eq!(ok(b"bob\0alice\0pw"), Err(SaslError::InvalidAuthzid));
        assert_eq!(ok(b"\0alice@other.org\0pw"), Err(SaslError::InvalidAuthzid));
        assert_eq!(ok(b"\0alice\0"), Err(SaslError::MalformedRequest));
        assert_eq!(ok(b"alice\0pw"), Err(SaslError::MalformedRequest));
        assert_eq!(ok(b"\0a\0b\0c"), Err(SaslError::MalformedRequest));
        assert_eq!(ok(b"\0\xff\0pw"), Err(SaslError::MalformedRequest));
    }

    #[test]
    fn oauthbearer() {
        let ok = |r: &[u8]| parse("OAUTHBEARER", r, "example.com");
        assert_eq!(
            ok(b"n,a=alice@example.com,\x01host=x\x01auth=Bearer abc.def\x01\x01"),
            Ok(Credentials::Bearer {
                authzid: Some("alice@example.com".into()),
                token: "abc.def".into()
            })
        );
        assert_eq!(
            ok(b"n,,\x01auth=bearer t\x01\x01"),
            Ok(Credentials::Bearer {
                authzid: None,
                token: "t".into()
            })
        );
        assert_eq!(
            ok(b"n,,\x01auth=Basic t\x01\x01"),
            Err(SaslError::MalformedRequest)
        );
        assert_eq!(
            ok(b"n,,\x01host=x\x01\x01"),
            Err(SaslError::MalformedRequest)
        );
        assert_eq!(
            ok(b"p=tls-exporter,,\x01auth=Bearer t\x01\x01"),
            Err(SaslError::MalformedRequest)
        );
        assert_eq!(ok(b"n,,auth=Bearer t"), Err(SaslError::MalformedRequest));
    }

    #[test]
    fn unknown_mechanisms_and_bad_base64() {
        assert_eq!(
            parse("DIGEST-MD5", b"", "x"),
            Err(SaslError::InvalidMechanism)
        );
        assert_eq!(decode_response("!!"), Err(SaslError::IncorrectEncoding));
        assert_eq!(decode_response("="), Ok(Vec::new()));
        assert_eq!(decode_response("AGEAYg=="), Ok(b"\0a\0b".to_vec()));
    }
}
