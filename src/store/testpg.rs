//! A throw-away PostgreSQL for tests: Debian's PostgreSQL 15, started once per test process
//! as the `postgres` user (initdb refuses root) with its data directory and socket in a
//! temporary directory, `fsync=off`, on a free loopback port; stopped when the process
//! exits. Each caller gets a database of its own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Server {
    dir: PathBuf,
    port: u16,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

fn bin(name: &str) -> PathBuf {
    for v in ["17", "16", "15"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin/{name}"));
        if p.exists() {
            return p;
        }
    }
    panic!("PostgreSQL's {name} is not installed (Debian's postgresql; .ci/run installs it)")
}

fn as_postgres(program: PathBuf) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(program);
    c
}

extern "C" fn stop_server() {
    if let Some(s) = SERVER.get() {
        let _ = as_postgres(bin("pg_ctl"))
            .arg("-D")
            .arg(s.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "herold-pg-{}-{}",
            std::process::id(),
            crate::clock::unix_seconds()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown postgres {}", dir.display());
        let out = as_postgres(bin("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        // A CA made for the test and a certificate for `localhost`, so that TLS can be
        // tried too (plain connections stay allowed).
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=herold test CA"]);
        openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"]);
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.join("server.key"))
            .arg(dir.join("server.pem"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = as_postgres(bin("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c ssl=on -c ssl_cert_file={d}/server.pem -c ssl_key_file={d}/server.key",
                d = dir.display()
            ))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {out:?} {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        unsafe {
            libc::atexit(stop_server);
        }
        Server { dir, port }
    })
}

/// A new, empty database: its URL.
pub fn database() -> String {
    let s = server();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::SeqCst)
    );
    let out = as_postgres(bin("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "-U",
            "postgres",
            "-q",
            "-c",
        ])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "CREATE DATABASE: {out:?}");
    format!("postgres://postgres@127.0.0.1:{}/{name}", s.port)
}

/// A new, empty database reached over TLS (`sslmode=require`, host `localhost`), and the
/// PEM file of the CA that signed the server's certificate (give it as `SSL_CERT_FILE`).
pub fn tls_database() -> (String, PathBuf) {
    let url = database();
    let url = url.replace("@127.0.0.1:", "@localhost:") + "?sslmode=require";
    (url, server().dir.join("ca.pem"))
}

/// The server's data directory (its table files, for tests of erasure).
pub fn data_dir() -> PathBuf {
    server().dir.join("data")
}

/// Runs `sql` on the database at `url` with psql (for tests that look behind the store).
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new(bin("psql"))
        .args(["-X", "-A", "-t", "-q", url, "-c", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql {sql}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
