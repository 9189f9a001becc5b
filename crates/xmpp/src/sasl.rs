//! SASL mechanisms over the client's decoded bytes: SCRAM-SHA-1/-256 with and without
//! channel binding (RFC 5802, RFC 7677, `tls-exporter` of RFC 9266), PLAIN (RFC 4616) and
//! OAUTHBEARER (RFC 7628). Parsing and formatting only; the keys and the proof check are the
//! core's (`tidings_core::scram`).

use tidings_core::scram::ScramHash;

/// The mechanisms offered over TLS, in order of preference. The `-PLUS` ones only when the
/// connection has a `tls-exporter` channel binding (TLS 1.3).
pub fn mechanisms(channel_binding: bool) -> Vec<&'static str> {
    let mut out = Vec::new();
    if channel_binding {
        out.extend(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]);
    }
    out.extend(["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "OAUTHBEARER"]);
    out
}

/// The channel binding type the gateway supports (RFC 9266).
pub const CHANNEL_BINDING: &str = "tls-exporter";

/// A SCRAM mechanism: its hash function, and whether it binds the channel (`-PLUS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scram {
    pub hash: ScramHash,
    pub plus: bool,
}

/// The SCRAM mechanism named `mechanism`, if it is one.
pub fn scram(mechanism: &str) -> Option<Scram> {
    let (name, plus) = match mechanism.strip_suffix("-PLUS") {
        Some(name) => (name, true),
        None => (mechanism, false),
    };
    let hash = match name {
        "SCRAM-SHA-1" => ScramHash::Sha1,
        "SCRAM-SHA-256" => ScramHash::Sha256,
        _ => return None,
    };
    Some(Scram { hash, plus })
}

/// What the client said about channel binding in its GS2 header.
#[derive(Debug, PartialEq, Eq)]
pub enum ChannelBindingFlag {
    /// `n`: the client does not support it.
    No,
    /// `y`: the client supports it but thinks the server does not.
    NotOffered,
    /// `p=<type>`: the client binds to this channel binding type.
    Used(String),
}

/// A SCRAM client-first-message.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The GS2 header exactly as sent (its base64 comes back in the final message's `c=`).
    pub gs2_header: String,
    pub channel_binding: ChannelBindingFlag,
    pub username: String,
    pub nonce: String,
    /// `client-first-message-bare`, the first part of the AuthMessage.
    pub bare: String,
}

/// A SCRAM client-final-message.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFinal {
    /// The decoded `c=`: the GS2 header followed by the channel binding data, if any.
    pub channel_binding: Vec<u8>,
    pub nonce: String,
    pub proof: Vec<u8>,
    /// `client-final-message-without-proof`, the last part of the AuthMessage.
    pub without_proof: String,
}

/// A `saslname` (RFC 5802 5.1) with `=2C` and `=3D` decoded; other `=` escapes are refused.
fn saslname(text: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let code = rest.get(at..at + 3).ok_or(SaslError::MalformedRequest)?;
        out.push(match code {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err(SaslError::MalformedRequest),
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a client-first-message. `domain` is ours, as for PLAIN: the names may be bare JIDs.
pub fn parse_client_first(response: &[u8], domain: &str) -> Result<ClientFirst, SaslError> {
    let text = std::str::from_utf8(response).map_err(|_| SaslError::MalformedRequest)?;
    let (flag, rest) = text.split_once(',').ok_or(SaslError::MalformedRequest)?;
    let channel_binding = match flag {
        "n" => ChannelBindingFlag::No,
        "y" => ChannelBindingFlag::NotOffered,
        _ => match flag.strip_prefix("p=") {
            Some(kind) if !kind.is_empty() => ChannelBindingFlag::Used(kind.to_owned()),
            _ => return Err(SaslError::MalformedRequest),
        },
    };
    let (authz, bare) = rest.split_once(',').ok_or(SaslError::MalformedRequest)?;
    let gs2_header = format!("{flag},{authz},");
    let mut fields = bare.split(',');
    let user = fields
        .next()
        .and_then(|f| f.strip_prefix("n="))
        .ok_or(SaslError::MalformedRequest)?;
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .filter(|r| !r.is_empty() && r.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
        .ok_or(SaslError::MalformedRequest)?;
    // A mandatory extension (`m=`) is one we do not know (RFC 5802 5.1).
    if bare.starts_with("m=") {
        return Err(SaslError::MalformedRequest);
    }
    let user = saslname(user)?;
    let username = strip_domain(&user, domain).ok_or(SaslError::InvalidAuthzid)?;
    if username.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    if !authz.is_empty() {
        let authzid = saslname(
            authz
                .strip_prefix("a=")
                .ok_or(SaslError::MalformedRequest)?,
        )?;
        if strip_domain(&authzid, domain) != Some(username) {
            return Err(SaslError::InvalidAuthzid);
        }
    }
    Ok(ClientFirst {
        gs2_header,
        channel_binding,
        username: username.to_owned(),
        nonce: nonce.to_owned(),
        bare: bare.to_owned(),
    })
}

/// The server-first-message.
pub fn server_first(nonce: &str, salt: &[u8], iterations: u32) -> String {
    use base64::Engine;
    let salt = base64::engine::general_purpose::STANDARD.encode(salt);
    format!("r={nonce},s={salt},i={iterations}")
}

/// Parses a client-final-message.
pub fn parse_client_final(response: &[u8]) -> Result<ClientFinal, SaslError> {
    use base64::Engine;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let text = std::str::from_utf8(response).map_err(|_| SaslError::MalformedRequest)?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(SaslError::MalformedRequest)?;
    let mut fields = without_proof.split(',');
    let channel_binding = fields
        .next()
        .and_then(|f| f.strip_prefix("c="))
        .ok_or(SaslError::MalformedRequest)?;
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or(SaslError::MalformedRequest)?;
    Ok(ClientFinal {
        channel_binding: b64
            .decode(channel_binding)
            .map_err(|_| SaslError::IncorrectEncoding)?,
        nonce: nonce.to_owned(),
        proof: b64
            .decode(proof)
            .map_err(|_| SaslError::IncorrectEncoding)?,
        without_proof: without_proof.to_owned(),
    })
}

/// The server-final-message for a verified proof.
pub fn server_final(signature: &[u8]) -> String {
    use base64::Engine;
    format!(
        "v={}",
        base64::engine::general_purpose::STANDARD.encode(signature)
    )
}

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
    /// The credentials are wrong (or the channel binding does not match).
    NotAuthorized,
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
            SaslError::NotAuthorized => "not-authorized",
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
    fn scram_messages() {
        assert_eq!(
            scram("SCRAM-SHA-256-PLUS"),
            Some(Scram {
                hash: ScramHash::Sha256,
                plus: true
            })
        );
        assert_eq!(scram("SCRAM-SHA-512"), None);
        let first = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", "x").unwrap();
        assert_eq!(first.gs2_header, "n,,");
        assert_eq!(first.channel_binding, ChannelBindingFlag::No);
        assert_eq!(first.username, "user");
        assert_eq!(first.bare, "n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let first =
            parse_client_first(b"p=tls-exporter,a=al=3Dice@x,n=al=3Dice@x,r=abc,ext=1", "x")
                .unwrap();
        assert_eq!(
            first.channel_binding,
            ChannelBindingFlag::Used("tls-exporter".into())
        );
        assert_eq!(first.username, "al=ice");
        assert_eq!(first.gs2_header, "p=tls-exporter,a=al=3Dice@x,");
        let bad = |m: &[u8]| parse_client_first(m, "x").unwrap_err();
        assert_eq!(bad(b"n,,n=u"), SaslError::MalformedRequest);
        assert_eq!(bad(b"n,,n=u,r="), SaslError::MalformedRequest);
        assert_eq!(bad(b"q,,n=u,r=a"), SaslError::MalformedRequest);
        assert_eq!(bad(b"n,,m=x,n=u,r=a"), SaslError::MalformedRequest);
        assert_eq!(bad(b"n,,n=u=2X,r=a"), SaslError::MalformedRequest);
        assert_eq!(bad(b"n,a=bob,n=alice,r=a"), SaslError::InvalidAuthzid);
        assert_eq!(bad(b"n,,n=alice@other,r=a"), SaslError::InvalidAuthzid);
        assert_eq!(server_first("ab", &[1, 2, 3], 4096), "r=ab,s=AQID,i=4096");
        let last = parse_client_final(b"c=biws,r=abcd,p=AQID").unwrap();
        assert_eq!(last.channel_binding, b"n,,");
        assert_eq!(last.nonce, "abcd");
        assert_eq!(last.proof, vec![1, 2, 3]);
        assert_eq!(last.without_proof, "c=biws,r=abcd");
        assert_eq!(
            parse_client_final(b"c=biws,r=abcd").unwrap_err(),
            SaslError::MalformedRequest
        );
        assert_eq!(
            parse_client_final(b"c=biws,r=abcd,p=!!").unwrap_err(),
            SaslError::IncorrectEncoding
        );
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
