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
    Rsa(aws_lc_rs::signature::RsaKeyPair),
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
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
    /// A signer from a PEM key: RSA (2048 bits or more) as PKCS#1 or PKCS#8, Ed25519 as
    /// PKCS#8 or the base64 of its 32 raw bytes.
    pub fn from_pem(domain: &str, selector: &str, pem: &str) -> anyhow::Result<Signer> {
        use aws_lc_rs::signature::{Ed25519KeyPair, RsaKeyPair};
        let text = pem.trim();
        let der = || -> anyhow::Result<Vec<u8>> {
            let b64: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::trim)
                .collect();
            Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
        };
        let rsa_error = |e: aws_lc_rs::error::KeyRejected| {
            anyhow::anyhow!("not a usable RSA key ({e}); DKIM keys need 2048 bits or more")
        };
        let key = if text.contains("BEGIN RSA PRIVATE KEY") {
            Key::Rsa(RsaKeyPair::from_der(&der()?).map_err(rsa_error)?)
        } else if text.contains("BEGIN PRIVATE KEY") {
            let der = der()?;
            match Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
                Ok(k) => Key::Ed25519(k),
                Err(_) => Key::Rsa(RsaKeyPair::from_pkcs8(&der).map_err(rsa_error)?),
            }
        } else {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| {
                    anyhow::anyhow!("neither a PEM key nor the base64 of an Ed25519 key")
                })?;
            anyhow::ensure!(raw.len() == 32, "an Ed25519 key has 32 bytes");
            Key::Ed25519(
                Ed25519KeyPair::from_seed_unchecked(&raw)
                    .map_err(|e| anyhow::anyhow!("not an Ed25519 key: {e}"))?,
            )
        };
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
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    &data,
                    &mut sig,
                )
                .expect("an RSA key signs");
                sig
            }
            // RFC 8463: Ed25519 signs the SHA-256 hash of the canonical header fields.
            Key::Ed25519(k) => k.sign(&Sha256::digest(&data)).as_ref().to_vec(),
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
}

impl BodyHasher {
    /// Feeds whole lines (`text` ends with CRLF, or is the end of the body).
    pub fn update(&mut self, text: &str) {
        let (canonical, empty_lines) = canonical_lines(text);
        self.update_canonical(&canonical, empty_lines);
    }

    /// Feeds text already in canonical form (from [`canonical_lines`]), as is.
    pub fn update_canonical(&mut self, canonical: &str, trailing_empty_lines: usize) {
        if !canonical.is_empty() {
            for _ in 0..self.empty_lines {
                self.hash.update(b"\r\n");
            }
            self.empty_lines = 0;
            self.hash.update(canonical.as_bytes());
        }
        self.empty_lines += trailing_empty_lines;
    }

    /// The hash. Trailing empty lines are dropped, so an empty body hashes as the empty
    /// string (RFC 6376 3.4.4).
    pub fn finish(self) -> Vec<u8> {
        self.hash.finalize().to_vec()
    }
}

/// Whole lines in relaxed canonical form, and how many empty lines end them (held back: at
/// the end of a body they are dropped). Feed the result to [`BodyHasher::update_canonical`].
pub fn canonical_lines(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut empty = 0;
    for line in text.split_inclusive('\n') {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let canon = relaxed_line(line);
        if canon.is_empty() {
            empty += 1;
            continue;
        }
        for _ in 0..empty {
            out.push_str("\r\n");
        }
        empty = 0;
        out.push_str(&canon);
        out.push_str("\r\n");
    }
    (out, empty)
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
    fn keys_in_every_form_openssl_writes_load_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let forms: [(&str, &[&str], &str); 3] = [
            ("pkcs1", &["genrsa", "-traditional"], "rsa-sha256"),
            (
                "pkcs8",
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ],
                "rsa-sha256",
            ),
            (
                "ed25519",
                &["genpkey", "-algorithm", "ED25519"],
                "ed25519-sha256",
            ),
        ];
        for (name, args, algorithm) in forms {
            let file = dir.path().join(name);
            let ok = std::process::Command::new("openssl")
                .args(args)
                .arg("-out")
                .arg(&file)
                .args((name == "pkcs1").then_some("2048"))
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "{name}");
            let pem = std::fs::read_to_string(&file).unwrap();
            let signer = Signer::from_pem("fitko.de", "herold", &pem).unwrap();
            assert_eq!(signer.algorithm(), algorithm);
            let header = signer.sign(&[("From", "a@fitko.de")], &[0; 32], 1);
            assert!(header.starts_with("DKIM-Signature: v=1; a="), "{header}");
            assert!(header.contains("h=From;"), "{header}");
        }
        let short = dir.path().join("short");
        std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&short)
            .arg("1024")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let err = Signer::from_pem("x", "y", &std::fs::read_to_string(&short).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("2048 bits"), "{err}");
    }

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
