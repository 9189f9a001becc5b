//! id_token validation (OpenID Connect Core 1.0, section 3.1.3.7): the signature against the
//! provider's JWKS (RS256 and ES256 only, with aws-lc-rs), then `iss`, `aud`, `azp`, `exp`,
//! `iat` and `nonce`.

use crate::OidcError;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// How far the provider's clock may be from ours, in seconds.
pub const CLOCK_SKEW_SECS: i64 = 120;
/// The oldest `iat` accepted: an id_token is used at once after the code exchange.
pub const MAX_AGE_SECS: i64 = 600;

/// A key of the provider's JWKS (RFC 7517); only the members the two algorithms need.
#[derive(Clone, Debug, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

/// A JSON Web Key Set.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// `aud` is one string or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: i64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// The person an id_token names, once every check passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub issuer: String,
    pub subject: String,
    /// A suggestion for the username of an account created on first sign-in (never used to
    /// find an existing account).
    pub preferred_username: Option<String>,
    pub name: Option<String>,
    /// Shown for information only; accounts are never linked by e-mail.
    pub email: Option<String>,
}

/// What the id_token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// Whether the token names a key the set does not have (the provider may have rotated keys:
/// fetch the set again once).
pub fn needs_key_refresh(id_token: &str, jwks: &Jwks) -> bool {
    let Some(header) = id_token.split('.').next() else {
        return false;
    };
    let Ok(header) = decode_json::<Header>(header) else {
        return false;
    };
    select_key(&header, jwks).is_none()
}

/// Validates `id_token` and returns whom it names.
pub fn validate(
    id_token: &str,
    jwks: &Jwks,
    expected: &Expected<'_>,
) -> Result<VerifiedIdentity, OidcError> {
    let mut parts = id_token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a compact JWS"));
    };
    let header: Header = decode_json(header_b64)?;
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| invalid("signature is not base64url"))?;
    let key = select_key(&header, jwks).ok_or_else(|| invalid("no key of the provider fits"))?;
    let signed = &id_token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
    verify_signature(&header.alg, key, signed, &signature)?;

    let claims: Claims = decode_json(claims_b64)?;
    if claims.iss != expected.issuer {
        return Err(invalid("iss is not the provider"));
    }
    let audiences = match &claims.aud {
        Audience::One(a) => vec![a.as_str()],
        Audience::Many(v) => v.iter().map(String::as_str).collect(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(invalid("aud does not name this client"));
    }
    // With several audiences the authorized party must be us (Core 3.1.3.7, steps 4 and 5).
    if (audiences.len() > 1 || claims.azp.is_some())
        && claims.azp.as_deref() != Some(expected.client_id)
    {
        return Err(invalid("azp does not name this client"));
    }
    if claims.exp <= expected.now - CLOCK_SKEW_SECS {
        return Err(invalid("expired"));
    }
    if claims.iat > expected.now + CLOCK_SKEW_SECS || claims.iat < expected.now - MAX_AGE_SECS {
        return Err(invalid("iat is out of range"));
    }
    if claims.nonce.as_deref() != Some(expected.nonce) {
        return Err(invalid("nonce does not match"));
    }
    if claims.sub.is_empty() || claims.sub.len() > 255 {
        return Err(invalid("sub is empty or too long"));
    }
    Ok(VerifiedIdentity {
        issuer: claims.iss,
        subject: claims.sub,
        preferred_username: claims.preferred_username,
        name: claims.name,
        email: claims.email,
    })
}

fn invalid(why: &'static str) -> OidcError {
    OidcError::InvalidIdToken(why)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, OidcError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid("a part is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| invalid("a part is not the expected JSON"))
}

/// The key for the header: by `kid` when given, else the only signing key of the right type.
fn select_key<'a>(header: &Header, jwks: &'a Jwks) -> Option<&'a Jwk> {
    let kty = match header.alg.as_str() {
        "RS256" => "RSA",
        "ES256" => "EC",
        _ => return None,
    };
    let mut candidates = jwks.keys.iter().filter(|k| {
        k.kty == kty
            && k.use_.as_deref().is_none_or(|u| u == "sig")
            && k.alg.as_deref().is_none_or(|a| a == header.alg)
    });
    match &header.kid {
        Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid.as_str())),
        None => {
            let first = candidates.next()?;
            candidates.next().is_none().then_some(first)
        }
    }
}

fn member(value: &Option<String>) -> Result<Vec<u8>, OidcError> {
    let value = value
        .as_deref()
        .ok_or_else(|| invalid("key lacks a member"))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| invalid("key member is not base64url"))
}

fn verify_signature(
    alg: &str,
    key: &Jwk,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), OidcError> {
    let ok = match alg {
        "RS256" => {
            let components = RsaPublicKeyComponents {
                n: member(&key.n)?,
                e: member(&key.e)?,
            };
            components
                .verify(&RSA_PKCS1_2048_8192_SHA256, signed, signature)
                .is_ok()
        }
        "ES256" => {
            if key.crv.as_deref() != Some("P-256") {
                return Err(invalid("EC key is not on P-256"));
            }
            let (x, y) = (member(&key.x)?, member(&key.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(invalid("EC key has the wrong size"));
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, signature)
                .is_ok()
        }
        // "none", HMAC (which would take the client secret as a key) and everything else.
        _ => return Err(invalid("algorithm not accepted")),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid("signature does not verify"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256,
    };
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn claims() -> serde_json::Value {
        json!({"iss": "https://idp.test", "sub": "s-1", "aud": "tidings", "exp": NOW + 300,
               "iat": NOW - 5, "nonce": "n-1", "preferred_username": "ann"})
    }

    struct Rsa(RsaKeyPair);
    impl Rsa {
        fn new() -> Rsa {
            Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
        }
        fn jwk(&self, kid: &str) -> Jwk {
            let public = self.0.public_key();
            serde_json::from_value(json!({"kty": "RSA", "kid": kid, "use": "sig",
                "n": b64(public.modulus().big_endian_without_leading_zero()),
                "e": b64(public.exponent().big_endian_without_leading_zero())}))
            .unwrap()
        }
        fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
            let head = b64(json!({"alg": "RS256", "kid": kid}).to_string().as_bytes());
            let body = b64(claims.to_string().as_bytes());
            let input = format!("{head}.{body}");
            let mut sig = vec![0; self.0.public_modulus_len()];
            self.0
                .sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
            format!("{input}.{}", b64(&sig))
        }
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: "https://idp.test",
            client_id: "tidings",
            nonce: "n-1",
            now: NOW,
        }
    }

    #[test]
    fn rs256_accepts_a_good_token_and_refuses_every_bad_claim() {
        let key = Rsa::new();
        let jwks = Jwks {
            keys: vec![key.jwk("k1")],
        };
        let good = validate(&key.sign("k1", &claims()), &jwks, &expected()).unwrap();
        assert_eq!(good.subject, "s-1");
        assert_eq!(good.preferred_username.as_deref(), Some("ann"));

        let bad = |patch: serde_json::Value| {
            let mut c = claims();
            for (k, v) in patch.as_object().unwrap() {
                c[k] = v.clone();
            }
            validate(&key.sign("k1", &c), &jwks, &expected()).unwrap_err()
        };
        assert!(matches!(
            bad(json!({"iss": "https://evil.test"})),
            OidcError::InvalidIdToken(_)
        ));
        assert!(matches!(
            bad(json!({"aud": "someone-else"})),
            OidcError::InvalidIdToken(_)
        ));
        assert!(matches!(
            bad(json!({"aud": ["tidings", "x"]})),
            OidcError::InvalidIdToken(_)
        ));
        assert!(matches!(
            bad(json!({"exp": NOW - 600})),
            OidcError::InvalidIdToken(_)
        ));
        assert!(matches!(
            bad(json!({"iat": NOW + 600})),
            OidcError::InvalidIdToken(_)
        ));
        assert!(matches!(
            bad(json!({"iat": NOW - 3600})),
            OidcError::InvalidIdToken(_)
        ));
        assert!(matches!(
            bad(json!({"nonce": "n-2"})),
            OidcError::InvalidIdToken(_)
        ));
        // Several audiences are fine when we are the authorized party.
        let mut c = claims();
        c["aud"] = json!(["tidings", "x"]);
        c["azp"] = json!("tidings");
        validate(&key.sign("k1", &c), &jwks, &expected()).unwrap();
    }

    #[test]
    fn tampered_unknown_key_and_unsigned_tokens_are_refused() {
        let key = Rsa::new();
        let other = Rsa::new();
        let jwks = Jwks {
            keys: vec![key.jwk("k1")],
        };
        let token = key.sign("k1", &claims());
        // Change one claim and keep the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims();
        c["sub"] = json!("s-2");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(c.to_string().as_bytes()),
            parts[2]
        );
        assert!(validate(&forged, &jwks, &expected()).is_err());
        // Signed by a key the provider does not publish under that kid.
        assert!(validate(&other.sign("k1", &claims()), &jwks, &expected()).is_err());
        assert!(needs_key_refresh(&other.sign("k2", &claims()), &jwks));
        assert!(!needs_key_refresh(&token, &jwks));
        // alg "none" and HS256 are never accepted.
        for alg in ["none", "HS256"] {
            let head = b64(json!({"alg": alg, "kid": "k1"}).to_string().as_bytes());
            let t = format!("{head}.{}.{}", parts[1], parts[2]);
            assert!(validate(&t, &jwks, &expected()).is_err(), "{alg}");
        }
    }

    #[test]
    fn es256_verifies_with_the_p256_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let jwks: Jwks = serde_json::from_value(json!({"keys": [{"kty": "EC", "crv": "P-256",
            "kid": "e1", "x": b64(&point[1..33]), "y": b64(&point[33..65])}]}))
        .unwrap();
        let head = b64(json!({"alg": "ES256", "kid": "e1"}).to_string().as_bytes());
        let input = format!("{head}.{}", b64(claims().to_string().as_bytes()));
        let sig = pair.sign(&rng, input.as_bytes()).unwrap();
        let token = format!("{input}.{}", b64(sig.as_ref()));
        assert_eq!(validate(&token, &jwks, &expected()).unwrap().subject, "s-1");
        let mut bad_sig = sig.as_ref().to_vec();
        bad_sig[10] ^= 1;
        let token = format!("{input}.{}", b64(&bad_sig));
        assert!(validate(&token, &jwks, &expected()).is_err());
    }
}
