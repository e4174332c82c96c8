//! Signed tokens for the links in mails: confirm, unsubscribe, preferences.
//!
//! A token is base64url of `version | key id | purpose | subscriber id | expiry | MAC`, the
//! MAC an HMAC-SHA256 over all of that *and the subscriber's address*. So a token names one
//! subscriber for one purpose until its expiry, cannot be forged without the secret, cannot
//! be turned into another purpose or address, and does not show the address in any URL.
//! Several secrets may verify (rotation); the first signs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::email::Email;

const VERSION: u8 = 1;
const MAC_LEN: usize = 16;
const BODY_LEN: usize = 1 + 1 + 1 + 4 + 4;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Confirm,
    Unsubscribe,
    Preferences,
}

impl Purpose {
    fn code(self) -> u8 {
        match self {
            Purpose::Confirm => b'c',
            Purpose::Unsubscribe => b'u',
            Purpose::Preferences => b'p',
        }
    }
}

/// The secrets: the first signs, all verify.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<(u8, Vec<u8>)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} secrets)", self.keys.len())
    }
}

/// A token's claims, read before its MAC is checked against the subscriber's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub subscriber: i64,
    /// Unix seconds; 0 for none.
    pub expires: i64,
}

impl Keys {
    /// From one or more secrets (each at least 16 bytes).
    pub fn new(secrets: &[Vec<u8>]) -> Result<Keys, String> {
        if secrets.is_empty() {
            return Err("no secret".into());
        }
        let keys = secrets
            .iter()
            .map(|s| {
                if s.len() < 16 {
                    return Err("a secret must be at least 16 bytes long".to_string());
                }
                Ok((Sha256::digest(s)[0], s.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keys { keys })
    }

    /// Makes a token for `subscriber` with address `email`; `expires` is Unix seconds, or 0.
    pub fn sign(&self, purpose: Purpose, subscriber: i64, email: &Email, expires: i64) -> String {
        let (kid, key) = &self.keys[0];
        let mut body = Vec::with_capacity(BODY_LEN + MAC_LEN);
        body.push(VERSION);
        body.push(*kid);
        body.push(purpose.code());
        // Four bytes each keep links short enough for one line of a plain-text mail.
        body.extend_from_slice(&u32::try_from(subscriber).unwrap_or(u32::MAX).to_be_bytes());
        body.extend_from_slice(
            &u32::try_from(expires.max(0))
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        let mac = mac(key, &body, email);
        body.extend_from_slice(&mac[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// Reads a token's claims if it has the right shape and purpose and has not expired at
    /// `now`. The caller then loads the subscriber and calls [`Keys::verify`].
    pub fn claims(&self, token: &str, purpose: Purpose, now: i64) -> Option<Claims> {
        if token.len() > 64 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() != BODY_LEN + MAC_LEN || raw[0] != VERSION || raw[2] != purpose.code() {
            return None;
        }
        let subscriber = i64::from(u32::from_be_bytes(raw[3..7].try_into().ok()?));
        let expires = i64::from(u32::from_be_bytes(raw[7..11].try_into().ok()?));
        if expires != 0 && expires < now {
            return None;
        }
        Some(Claims {
            subscriber,
            expires,
        })
    }

    /// Whether `token` was signed by one of the keys for this address (constant time).
    pub fn verify(&self, token: &str, email: &Email) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        if raw.len() != BODY_LEN + MAC_LEN {
            return false;
        }
        let (body, given) = raw.split_at(BODY_LEN);
        self.signed(body, email.as_str().as_bytes(), given)
    }

    /// Whether the key named in `body[1]` made `given` over `body` and `bound` (constant time).
    fn signed(&self, body: &[u8], bound: &[u8], given: &[u8]) -> bool {
        self.keys
            .iter()
            .filter(|(kid, _)| *kid == body[1])
            .any(|(_, key)| {
                let mut m =
                    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(body);
                m.update(bound);
                m.verify_truncated_left(given).is_ok()
            })
    }
}

/// A return-path (VERP) token: names one delivery, run and subscriber, in the local part
/// of a mail's envelope sender, so a bounce names what it bounces. Lowercase base32, since
/// some relays fold the case of local parts; 34 characters.
const RETURN_BODY_LEN: usize = 1 + 1 + 1 + 4 + 4;
const RETURN_MAC_LEN: usize = 10;

/// What a return-path token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnToken {
    /// Signed by one of the keys: the delivery (run 0: a confirmation or notice mail).
    Valid { run: i64, subscriber: i64 },
    /// Shaped like a token, but no key signed it.
    Forged,
}

impl Keys {
    /// The token for the mail of `subscriber` in `run` (0 for mails outside a digest).
    pub fn sign_return(&self, run: i64, subscriber: i64) -> String {
        let (kid, key) = &self.keys[0];
        let mut body = Vec::with_capacity(RETURN_BODY_LEN + RETURN_MAC_LEN);
        body.push(VERSION);
        body.push(*kid);
        body.push(b'r');
        body.extend_from_slice(&u32::try_from(run).unwrap_or(u32::MAX).to_be_bytes());
        body.extend_from_slice(&u32::try_from(subscriber).unwrap_or(u32::MAX).to_be_bytes());
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(&body);
        body.extend_from_slice(&m.finalize().into_bytes()[..RETURN_MAC_LEN]);
        base32_encode(&body)
    }

    /// Reads a return-path token (in any case). `None`: not a token at all.
    pub fn verify_return(&self, token: &str) -> Option<ReturnToken> {
        let raw = base32_decode(token)?;
        if raw.len() != RETURN_BODY_LEN + RETURN_MAC_LEN || raw[0] != VERSION || raw[2] != b'r' {
            return None;
        }
        let (body, given) = raw.split_at(RETURN_BODY_LEN);
        if !self.signed(body, b"", given) {
            return Some(ReturnToken::Forged);
        }
        Some(ReturnToken::Valid {
            run: i64::from(u32::from_be_bytes(body[3..7].try_into().ok()?)),
            subscriber: i64::from(u32::from_be_bytes(body[7..11].try_into().ok()?)),
        })
    }
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() > 64 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c.to_ascii_lowercase() {
            c @ b'a'..=b'z' => c - b'a',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

fn mac(key: &[u8], body: &[u8], email: &Email) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(body);
    m.update(email.as_str().as_bytes());
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &[&str]) -> Keys {
        Keys::new(&s.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn round_trip_and_refusals() {
        let k = keys(&["0123456789abcdef-first"]);
        let a = Email::parse("a@x.de").unwrap();
        let b = Email::parse("b@x.de").unwrap();
        let t = k.sign(Purpose::Confirm, 7, &a, 1000);
        assert_eq!(
            k.claims(&t, Purpose::Confirm, 999),
            Some(Claims {
                subscriber: 7,
                expires: 1000
            })
        );
        assert!(k.verify(&t, &a));
        assert!(!k.verify(&t, &b), "bound to the address");
        assert_eq!(
            k.claims(&t, Purpose::Unsubscribe, 999),
            None,
            "bound to the purpose"
        );
        assert_eq!(k.claims(&t, Purpose::Confirm, 1001), None, "expired");
        let other = keys(&["another-secret-0123456789"]);
        assert!(!other.verify(&t, &a), "other secret");
        // Flipping any byte breaks it.
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        for i in 0..raw.len() {
            let mut r = raw.clone();
            r[i] ^= 1;
            let forged = URL_SAFE_NO_PAD.encode(&r);
            let ok = k.claims(&forged, Purpose::Confirm, 0).is_some() && k.verify(&forged, &a);
            assert!(!ok || forged == t, "byte {i}");
        }
        for junk in ["", "x", "!!!!", &"A".repeat(100), &t[..t.len() - 1]] {
            assert!(
                k.claims(junk, Purpose::Confirm, 0).is_none() || !k.verify(junk, &a),
                "{junk}"
            );
        }
    }

    #[test]
    fn return_tokens_name_a_delivery_and_refuse_forgery() {
        let k = keys(&["0123456789abcdef-secret"]);
        let t = k.sign_return(42, 7);
        assert_eq!(t.len(), 34);
        assert!(
            t.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let valid = ReturnToken::Valid {
            run: 42,
            subscriber: 7,
        };
        assert_eq!(k.verify_return(&t), Some(valid));
        assert_eq!(
            k.verify_return(&t.to_uppercase()),
            Some(valid),
            "case folded by a relay"
        );
        // Another subscriber's number with the same signature is forged.
        let other = k.sign_return(42, 8);
        let spliced = format!("{}{}", &other[..18], &t[18..]);
        assert_eq!(k.verify_return(&spliced), Some(ReturnToken::Forged));
        assert_eq!(
            keys(&["another-secret-of-16"]).verify_return(&t),
            Some(ReturnToken::Forged)
        );
        assert_eq!(k.verify_return("not-a-token"), None);
        assert_eq!(k.verify_return(""), None);
        // Rotation: an old key still verifies.
        let rotated = keys(&["a-brand-new-secret-1", "0123456789abcdef-secret"]);
        assert_eq!(rotated.verify_return(&t), Some(valid));
        // Link tokens are no return tokens.
        let e = Email::parse("a@example.org").unwrap();
        assert_eq!(
            k.verify_return(&k.sign(Purpose::Unsubscribe, 7, &e, 0)),
            None
        );
    }

    #[test]
    fn rotation_first_signs_all_verify() {
        let old = keys(&["the-old-secret-0123456789"]);
        let rotated = keys(&["the-new-secret-0123456789", "the-old-secret-0123456789"]);
        let a = Email::parse("a@x.de").unwrap();
        let issued_before = old.sign(Purpose::Unsubscribe, 1, &a, 0);
        assert!(rotated.verify(&issued_before, &a));
        let issued_after = rotated.sign(Purpose::Unsubscribe, 1, &a, 0);
        assert!(!old.verify(&issued_after, &a));
        assert!(Keys::new(&[b"short".to_vec()]).is_err());
    }
}
