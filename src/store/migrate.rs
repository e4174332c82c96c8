//! `herold db migrate --to URL`: the SQLite database copied into an empty PostgreSQL one,
//! table by table with every id, in one transaction that commits only when the counts on
//! both sides agree.

use super::sql::{Conn, Error, Result, Value};
use super::{Db, Store};

/// The tables, parents before children (deliveries need their runs, bounces their
/// subscribers). `leases` is not copied: no node holds anything yet.
const TABLES: [&str; 9] = [
    "meta",
    "subscribers",
    "consent_log",
    "blocked",
    "items_seen",
    "digest_runs",
    "deliveries",
    "bounces",
    "bounce_counts",
];

/// Tables whose ids come from an identity column on PostgreSQL: it continues after the
/// copied ids.
const IDENTITIES: [&str; 4] = ["subscribers", "consent_log", "digest_runs", "bounces"];

/// Rows per INSERT statement.
const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Copies this (SQLite) store into `target` (PostgreSQL, empty); `secret` is the token
    /// secret kept beside the SQLite file, which goes along so links already mailed stay
    /// valid. Gives each table with its row count.
    pub fn copy_to(&self, target: &mut Store, secret: Option<&str>) -> Result<Vec<(String, i64)>> {
        let Db::Sqlite(source) = &self.db else {
            return Err(Error::Other(
                "the source must be the SQLite database".into(),
            ));
        };
        let Db::Postgres(pg) = &target.db else {
            return Err(Error::Other(
                "the target must be a PostgreSQL database".into(),
            ));
        };
        if let Some(run) = self.unfinished_runs()?.first() {
            return Err(Error::Other(format!(
                "run {} of the digest `{}` is unfinished: finish it (herold digest send {}) and migrate then",
                run.id, run.digest, run.digest
            )));
        }
        for table in TABLES.iter().filter(|t| **t != "meta") {
            let n: i64 = pg
                .one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
                .get(0)?;
            if n > 0 {
                return Err(Error::Other(format!(
                    "the target database is not empty ({table} has {n} rows)"
                )));
            }
        }
        let counts = pg.transaction(|tx| {
            // The target made its own address key when it was opened: the source's replaces
            // it, or no hash would match.
            tx.exec("DELETE FROM meta", &[])?;
            let mut counts = Vec::new();
            for table in TABLES {
                let columns = columns(source, table)?;
                let list = columns.join(", ");
                let rows = source.rows(&format!("SELECT {list} FROM {table}"), &[])?;
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    let mut sql = format!("INSERT INTO {table} ({list}) VALUES ");
                    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * columns.len());
                    for (i, row) in chunk.iter().enumerate() {
                        if i > 0 {
                            sql.push(',');
                        }
                        sql.push('(');
                        for (j, v) in row.0.iter().enumerate() {
                            if j > 0 {
                                sql.push(',');
                            }
                            values.push(v.clone());
                            sql.push_str(&format!("?{}", values.len()));
                        }
                        sql.push(')');
                    }
                    tx.exec(&sql, &values)?;
                }
                let copied: i64 = tx
                    .one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
                    .get(0)?;
                let n = rows.len() as i64;
                if copied != n {
                    return Err(Error::Other(format!(
                        "{table}: {n} rows in SQLite, {copied} in PostgreSQL; nothing was committed"
                    )));
                }
                counts.push((table.to_string(), n));
            }
            if let Some(secret) = secret {
                tx.exec(
                    "INSERT INTO meta (key, value) VALUES ('token_secret', ?1) ON CONFLICT (key) DO NOTHING",
                    &[Value::Bytes(secret.trim().as_bytes().to_vec())],
                )?;
            }
            for table in IDENTITIES {
                tx.rows(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false)::bigint FROM {table}"
                    ),
                    &[],
                )?;
            }
            Ok(counts)
        })?;
        target.address_key = self.address_key.clone();
        Ok(counts)
    }
}

/// The column names of a SQLite table.
fn columns(source: &rusqlite::Connection, table: &str) -> Result<Vec<String>> {
    let mut st = source.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = st
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use crate::email::Email;
    use crate::store::tests::stores;

    #[test]
    fn everything_arrives_with_its_ids_and_hashes_still_match() {
        let mut all = stores().into_iter();
        let (_dir, mut sqlite) = all.next().unwrap();
        let (_url, mut pg) = all.next().unwrap();
        let a = Email::parse("anna@example.org").unwrap();
        let b = Email::parse("bernd@example.org").unwrap();
        for e in [&a, &b] {
            sqlite
                .request(e, &crate::store::Choice::default(), "1", None, 10)
                .unwrap();
        }
        let anna = sqlite.by_email(&a).unwrap().unwrap();
        sqlite.confirm(anna.id, None, 20).unwrap();
        sqlite.block(&b, "test", 30).unwrap();
        let run = sqlite
            .start_run("w", 40, 0, &["i".into()], &[(anna.id, "[\"i\"]")])
            .unwrap();
        sqlite
            .record_delivery(run.id, anna.id, "sent", None, 41)
            .unwrap();
        sqlite.finish_run_if_done(run.id, 41).unwrap();
        sqlite.note_seen(&["i"], 5).unwrap();

        let counts = sqlite
            .copy_to(&mut pg, Some("geheim-geheim-geheim\n"))
            .unwrap();
        let get = |t: &str| counts.iter().find(|(n, _)| n == t).unwrap().1;
        assert_eq!(
            (get("subscribers"), get("consent_log"), get("deliveries")),
            (1, 4, 1)
        );
        // The same subscriber under the same id, the block list under the same key.
        assert_eq!(
            pg.by_email(&a).unwrap().unwrap(),
            sqlite.by_email(&a).unwrap().unwrap()
        );
        assert!(pg.is_blocked(&b).unwrap());
        assert_eq!(pg.consent_log(&a).unwrap(), sqlite.consent_log(&a).unwrap());
        assert_eq!(
            pg.last_finished_run("w").unwrap(),
            sqlite.last_finished_run("w").unwrap()
        );
        assert_eq!(
            pg.meta("token_secret").unwrap().as_deref(),
            Some("geheim-geheim-geheim")
        );
        // New rows continue after the copied ids.
        pg.request(
            &Email::parse("clara@example.org").unwrap(),
            &Default::default(),
            "1",
            None,
            50,
        )
        .unwrap();
        let ids: Vec<i64> = pg.list().unwrap().iter().map(|s| s.id).collect();
        assert!(ids.iter().all(|&i| i >= 1) && ids.len() == 2 && ids[0] != ids[1]);
        // A second migration into the same database is refused.
        let err = sqlite.copy_to(&mut pg, None).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
    }

    #[test]
    fn an_unfinished_run_is_finished_first() {
        let mut all = stores().into_iter();
        let (_dir, mut sqlite) = all.next().unwrap();
        let (_url, mut pg) = all.next().unwrap();
        sqlite
            .start_run("w", 40, 0, &["i".into()], &[(1, "[\"i\"]")])
            .unwrap();
        let err = sqlite.copy_to(&mut pg, None).unwrap_err().to_string();
        assert!(err.contains("unfinished"), "{err}");
    }
}
