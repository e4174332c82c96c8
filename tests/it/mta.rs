//! Real mail servers for the bounce tests, started by the test on loopback and stopped with
//! it: a private Postfix instance (its own configuration, queue and log) and a Dovecot
//! (its own configuration, one passwd-file user, a maildir).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory others (Postfix's `nobody`, Dovecot's users) can enter.
pub fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Copies the herold binary where an unprivileged user may run it.
pub fn herold_for_others(dir: &Path) -> PathBuf {
    let bin = dir.join("herold");
    std::fs::copy(env!("CARGO_BIN_EXE_herold"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// `chown -R user:group path`.
pub fn chown(path: &Path, owner: &str) {
    let ok = Command::new("chown")
        .args(["-R", owner])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown {owner} {}", path.display());
}

fn wait_port(port: u16, what: &str, log: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A private Postfix: SMTP on a loopback port; `transport` lines route domains (to
/// `herold:`, the pipe into `herold bounce`, or `smtp:[127.0.0.1]:PORT`); mail to
/// `localhost.herold.test` is delivered locally, where every user is unknown.
pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Postfix {
    pub fn start(transport: &str, pipe_argv: &str) -> Postfix {
        assert!(
            Path::new("/usr/sbin/postfix").exists(),
            "Debian's postfix is needed (.ci/run installs it)"
        );
        let dir = open_dir();
        let d = dir.path();
        for sub in ["conf", "queue", "data"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        chown(&d.join("data"), "postfix");
        let port = free_port();
        std::fs::write(
            d.join("conf/main.cf"),
            format!(
                "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.herold.test
mydomain = herold.test
myorigin = herold.test
mydestination = localhost.herold.test
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relay_domains =
smtpd_recipient_restrictions = permit_mynetworks, reject
transport_maps = texthash:{d}/conf/transport
smtputf8_enable = no
biff = no
disable_dns_lookups = yes
smtp_host_lookup = native
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
delay_warning_time = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
",
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(d.join("conf/transport"), transport).unwrap();
        let services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        std::fs::write(
            d.join("conf/master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n{}\nherold unix - n n - - pipe\n  {pipe_argv}\n",
                services.join("\n")
            ),
        )
        .unwrap();
        let pf = Postfix { dir, port };
        let out = pf.postfix("start");
        assert!(out.status.success(), "postfix start: {out:?} {}", pf.log());
        wait_port(port, "postfix", &pf.dir.path().join("maillog"));
        pf
    }

    fn postfix(&self, verb: &str) -> std::process::Output {
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.dir.path().join("conf"))
            .arg(verb)
            .output()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.postfix("stop");
    }
}

/// A Dovecot serving IMAP on a loopback port: user `bounces` (password `geheim-123`) with
/// a maildir; messages are put in with [`Dovecot::deliver`].
pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
    certs: Option<tempfile::TempDir>,
}

impl Dovecot {
    /// With TLS: a certificate for `localhost` from a CA made for the test, whose PEM file
    /// is returned (give it to herold as `SSL_CERT_FILE`); IMAPS on a port of its own
    /// (returned too), STARTTLS on the plain one.
    pub fn start_tls() -> (Dovecot, u16, PathBuf) {
        let certs = open_dir();
        let c = certs.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(c)
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=herold test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            c.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let imaps = free_port();
        let mut dc = Dovecot::start(&format!(
            "ssl = yes
ssl_cert = <{c}/server.pem
ssl_key = <{c}/server.key
ssl_dh = </usr/share/dovecot/dh.pem
# imaps {imaps}",
            c = c.display()
        ));
        wait_port(imaps, "dovecot imaps", &dc.dir.path().join("dovecot.log"));
        let ca = c.join("ca.pem");
        dc.certs = Some(certs);
        (dc, imaps, ca)
    }

    /// `extra` goes into the configuration (e.g. `imap_capability` without MOVE).
    pub fn start(extra: &str) -> Dovecot {
        assert!(
            Path::new("/usr/sbin/dovecot").exists(),
            "Debian's dovecot-imapd is needed (.ci/run installs it)"
        );
        let dir = open_dir();
        let d = dir.path();
        let port = free_port();
        std::fs::create_dir_all(d.join("mail")).unwrap();
        std::fs::create_dir_all(d.join("run")).unwrap();
        chown(&d.join("mail"), "nobody:nogroup");
        std::fs::write(
            d.join("passwd"),
            format!(
                "bounces:{{PLAIN}}geheim-123:65534:65534::{}/mail::\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("dovecot.conf"),
            format!(
                "protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/run
instance_name = herold-test-{port}
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {d}/dovecot.log
mail_location = maildir:{d}/mail/Maildir
mail_uid = 65534
mail_gid = 65534
first_valid_uid = 1
first_valid_gid = 1
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
{extra}
",
                d = d.display(),
                ssl = if extra.contains("ssl = yes") {
                    ""
                } else {
                    "ssl = no"
                },
                imaps = extra.split_once("# imaps ").map_or("0", |(_, p)| p.trim()),
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/dovecot")
            .arg("-F")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let dc = Dovecot {
            dir,
            port,
            child,
            certs: None,
        };
        wait_port(port, "dovecot", &dc.dir.path().join("dovecot.log"));
        dc
    }

    /// Puts a message into `mailbox` of user `bounces` (INBOX, or another folder).
    pub fn deliver(&self, mailbox: &str, message: &[u8]) {
        let d = self.dir.path();
        let root = d.join("mail/Maildir");
        let folder = if mailbox == "INBOX" {
            root.clone()
        } else {
            root.join(format!(".{mailbox}"))
        };
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(folder.join(sub)).unwrap();
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "{}.{}.herold-test",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        std::fs::write(folder.join("tmp").join(&name), message).unwrap();
        std::fs::rename(
            folder.join("tmp").join(&name),
            folder.join("new").join(&name),
        )
        .unwrap();
        chown(&d.join("mail"), "nobody:nogroup");
    }

    /// The messages in `mailbox`: (flags part of the file name, bytes).
    pub fn messages(&self, mailbox: &str) -> Vec<(String, Vec<u8>)> {
        let root = self.dir.path().join("mail/Maildir");
        let folder = if mailbox == "INBOX" {
            root
        } else {
            root.join(format!(".{mailbox}"))
        };
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(folder.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let flags = name
                    .split_once(":2,")
                    .map(|(_, f)| f.to_string())
                    .unwrap_or_default();
                out.push((flags, std::fs::read(e.path()).unwrap()));
            }
        }
        out
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
