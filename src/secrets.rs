//! Where the token secret comes from: `HEROLD_SECRET`, `server.secret_file`, the systemd
//! credential `herold-secret`, or, with none of them, a random secret made at first start
//! and kept beside the SQLite database (mode 0600), so a fresh clone runs with no setup; on
//! PostgreSQL in the database itself, so that all nodes share it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::store::Store;
use crate::token::Keys;

/// Where the secrets were found, for the log (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Environment,
    File(PathBuf),
    Credential(PathBuf),
    Generated(PathBuf),
    Existing(PathBuf),
    /// Kept in the PostgreSQL database, so that every node signs and verifies alike.
    Database,
}

/// Loads the secrets. `env_secret` is `$HEROLD_SECRET`, `credentials` `$CREDENTIALS_DIRECTORY`;
/// `store` is the configuration's database, where PostgreSQL keeps a generated secret.
pub fn load(
    config: &Config,
    env_secret: Option<String>,
    credentials: Option<PathBuf>,
    store: &mut Store,
) -> anyhow::Result<(Keys, Source)> {
    let (text, source) = if let Some(s) = env_secret.filter(|s| !s.trim().is_empty()) {
        (s, Source::Environment)
    } else if let Some(f) = &config.server.secret_file {
        (read(f)?, Source::File(f.clone()))
    } else if let Some(c) = credentials
        .map(|d| d.join("herold-secret"))
        .filter(|p| p.exists())
    {
        (read(&c)?, Source::Credential(c))
    } else if config.database.url.is_some() {
        // Several nodes must share the secret: without one configured, it lives in the
        // database (made by the first node that needs it).
        (
            store
                .meta_or_insert("token_secret", &random_hex()?)
                .map_err(|e| anyhow::anyhow!("the token secret in the database: {e}"))?,
            Source::Database,
        )
    } else {
        let path = generated_path(&config.database.path);
        if path.exists() {
            (read(&path)?, Source::Existing(path))
        } else {
            (generate(&path)?, Source::Generated(path))
        }
    };
    let secrets: Vec<Vec<u8>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let keys =
        Keys::new(&secrets).map_err(|e| anyhow::anyhow!("token secret ({source:?}): {e}"))?;
    Ok((keys, source))
}

/// Reads the environment the way [`load`] expects it.
pub fn load_from_env(config: &Config, store: &mut Store) -> anyhow::Result<(Keys, Source)> {
    load(
        config,
        std::env::var("HEROLD_SECRET").ok(),
        std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        store,
    )
}

fn generated_path(database: &Path) -> PathBuf {
    database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("secret")
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))
}

/// 32 random bytes in hex: a new secret.
fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn generate(path: &Path) -> anyhow::Result<String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let hex = random_hex()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(format!("{hex}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: &str) -> Config {
        Config::parse(
            &format!("[site]\ntitle = \"t\"\nbase_url = \"https://x.de\"\n{extra}"),
            "config.toml",
            &[],
            dir,
        )
        .unwrap()
    }

    #[test]
    fn generated_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        let mut st = Store::open(&c.database.path).unwrap();
        let (_, first) = load(&c, None, None, &mut st).unwrap();
        let path = dir.path().join("data/secret");
        assert_eq!(first, Source::Generated(path.clone()));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (_, second) = load(&c, None, None, &mut st).unwrap();
        assert_eq!(second, Source::Existing(path));
    }

    #[test]
    fn precedence_environment_file_credential() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s"),
            "# comment\nfirst-secret-0123456789\nsecond-secret-0123456789\n",
        )
        .unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(creds.join("herold-secret"), "credential-secret-0123456789").unwrap();
        let with_file = config(dir.path(), "[server]\nsecret_file = \"s\"\n");
        let mut st = Store::open(&with_file.database.path).unwrap();
        assert_eq!(
            load(
                &with_file,
                Some("environment-secret-0123".into()),
                None,
                &mut st
            )
            .unwrap()
            .1,
            Source::Environment
        );
        assert_eq!(
            load(&with_file, None, Some(creds.clone()), &mut st)
                .unwrap()
                .1,
            Source::File(dir.path().join("s"))
        );
        let plain = config(dir.path(), "");
        assert_eq!(
            load(&plain, None, Some(creds.clone()), &mut st).unwrap().1,
            Source::Credential(creds.join("herold-secret"))
        );
        assert!(load(&plain, Some("short".into()), None, &mut st).is_err());
    }
}
