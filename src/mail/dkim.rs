//! DKIM signatures (RFC 6376, relaxed/relaxed) with RSA-SHA256 or Ed25519-SHA256 (RFC 8463),
//! made over bytes herold assembled itself, so a digest's shared body is encoded once and only
//! the signature is made per mail.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The header fields every signature covers, in this order. RFC 8058 requires the two
/// `List-Unsubscribe` fields to be signed.
pub const SIGNED_HEADERS: [&str; 8] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

enum Key {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// A domain's signing key.
pub struct Signer {
    domain: String,
    selector: String,
    key: Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Signer({}, {}, {})",
            self.domain,
            self.selector,
            self.algorithm()
        )
    }
}

impl Signer {
    /// A signer from a PEM key: RSA as PKCS#1 or PKCS#8, Ed25519 as PKCS#8 or the base64
    /// of its 32 raw bytes.
    pub fn from_pem(domain: &str, selector: &str, pem: &str) -> anyhow::Result<Signer> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let text = pem.trim();
        let key = if text.contains("BEGIN RSA PRIVATE KEY") {
            Key::Rsa(Box::new(rsa::RsaPrivateKey::from_pkcs1_pem(text)?))
        } else if text.contains("BEGIN PRIVATE KEY") {
            match rsa::RsaPrivateKey::from_pkcs8_pem(text) {
                Ok(k) => Key::Rsa(Box::new(k)),
                Err(_) => {
                    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
                    let der = base64::engine::general_purpose::STANDARD.decode(b64)?;
                    // PKCS#8 of Ed25519 (OID 1.3.101.112): the last 32 bytes are the seed.
                    anyhow::ensure!(
                        der.len() == 48
                            && der.windows(5).any(|w| w == [0x06, 0x03, 0x2b, 0x65, 0x70]),
                        "neither RSA nor Ed25519"
                    );
                    Key::Ed25519(Box::new(seed_key(&der[16..])?))
                }
            }
        } else {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| {
                    anyhow::anyhow!("neither a PEM key nor the base64 of an Ed25519 key")
                })?;
            Key::Ed25519(Box::new(seed_key(&raw)?))
        };
        if let Key::Rsa(k) = &key {
            use rsa::traits::PublicKeyParts;
            anyhow::ensure!(
                k.size() * 8 >= 1024,
                "an RSA key for DKIM needs at least 1024 bits"
            );
        }
        Ok(Signer {
            domain: domain.to_string(),
            selector: selector.to_string(),
            key,
        })
    }

    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// The `DKIM-Signature` field (with its CRLF) for a message whose header fields are
    /// `fields` (`(name, value)` as written, folded or not) and whose body hash is
    /// `body_hash` (see [`BodyHasher`]). `time` is the `t=` tag.
    pub fn sign(&self, fields: &[(&str, &str)], body_hash: &[u8], time: i64) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut names = Vec::new();
        let mut data = Vec::new();
        for wanted in SIGNED_HEADERS {
            // The last instance of a field is signed first (RFC 6376 5.4.2); herold writes
            // each once.
            if let Some((name, value)) = fields
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
            {
                names.push(*name);
                data.extend_from_slice(relaxed_header(name, value).as_bytes());
                data.extend_from_slice(b"\r\n");
            }
        }
        let tags = format!(
            "v=1; a={}; c=relaxed/relaxed; d={}; s={}; t={time};\r\n h={};\r\n bh={}; b=",
            self.algorithm(),
            self.domain,
            self.selector,
            names.join(":"),
            b64(body_hash),
        );
        data.extend_from_slice(relaxed_header("DKIM-Signature", &tags).as_bytes());
        let signature = match &self.key {
            Key::Rsa(k) => {
                // PKCS#1 v1.5 over SHA-256: the DigestInfo prefix, then the hash.
                const PREFIX: [u8; 19] = [
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ];
                let mut info = PREFIX.to_vec();
                info.extend_from_slice(&Sha256::digest(&data));
                k.sign(rsa::Pkcs1v15Sign::new_unprefixed(), &info)
                    .expect("an RSA key signs a SHA-256 digest")
            }
            Key::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(&Sha256::digest(&data)).to_bytes().to_vec()
            }
        };
        let sig = b64(&signature);
        let mut folded = String::with_capacity(sig.len() + sig.len() / 64 * 3);
        for (i, chunk) in sig.as_bytes().chunks(64).enumerate() {
            if i > 0 {
                folded.push_str("\r\n ");
            }
            folded.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        }
        format!("DKIM-Signature: {tags}{folded}\r\n")
    }
}

fn seed_key(raw: &[u8]) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let seed: [u8; 32] = raw
        .try_into()
        .map_err(|_| anyhow::anyhow!("an Ed25519 key has 32 bytes"))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// A header field in relaxed canonicalisation, without the CRLF: the name in lower case,
/// unfolded, runs of white space as one space, none at the ends of the value.
pub fn relaxed_header(name: &str, value: &str) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 1);
    out.push_str(&name.trim().to_ascii_lowercase());
    out.push(':');
    let (mut space, mut started) = (false, false);
    for c in value.chars() {
        match c {
            '\r' | '\n' => {}
            ' ' | '\t' => space = true,
            c => {
                if space && started {
                    out.push(' ');
                }
                space = false;
                started = true;
                out.push(c);
            }
        }
    }
    out
}

/// The body hash in relaxed canonicalisation, fed line by line. Parts fed must end at line
/// ends (after CRLF), which lets a shared prefix be hashed once and the hasher cloned.
#[derive(Clone, Default)]
pub struct BodyHasher {
    hash: Sha256,
    /// Empty lines seen but not yet hashed: trailing ones are dropped.
    empty_lines: usize,
    any: bool,
}

impl BodyHasher {
    /// Feeds whole lines (`text` ends with CRLF, or is the end of the body).
    pub fn update(&mut self, text: &str) {
        for line in text.split_inclusive('\n') {
            let line = line.strip_suffix('\n').unwrap_or(line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            let canon = relaxed_line(line);
            if canon.is_empty() {
                self.empty_lines += 1;
                continue;
            }
            for _ in 0..self.empty_lines {
                self.hash.update(b"\r\n");
            }
            self.empty_lines = 0;
            self.hash.update(canon.as_bytes());
            self.hash.update(b"\r\n");
            self.any = true;
        }
    }

    pub fn finish(self) -> Vec<u8> {
        // An empty body hashes as CRLF in relaxed canonicalisation... of nothing: RFC 6376
        // 3.4.4 makes it the empty string.
        let _ = self.any;
        self.hash.finalize().to_vec()
    }
}

fn relaxed_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut space = false;
    for c in line.chars() {
        if c == ' ' || c == '\t' {
            space = true;
        } else {
            if space {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_canonicalisation() {
        assert_eq!(
            relaxed_header("Subject", " Hallo\r\n \t Welt  "),
            "subject:Hallo Welt"
        );
        assert_eq!(relaxed_header("X", "a: b"), "x:a: b");
        let hash = |s: &str| {
            let mut h = BodyHasher::default();
            h.update(s);
            h.finish()
        };
        assert_eq!(hash("a  b \r\n\r\n\r\n"), hash("a b\r\n"));
        let mut split = BodyHasher::default();
        split.update("eins\r\n\r\n");
        split.update("zwei\r\n");
        assert_eq!(split.finish(), hash("eins\r\n\r\nzwei\r\n"));
    }
}
