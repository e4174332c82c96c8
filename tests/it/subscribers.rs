//! `herold subscribers …`, also while the daemon runs on the same database.

use crate::helpers::*;

fn out(o: &std::process::Output) -> (Option<i32>, String, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn import_list_export_remove_beside_a_running_daemon() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let _daemon = site.start();
    std::fs::write(
        site.path("alt.csv"),
        "email,topics,status,digests,consented_at,source\n\
         Anna@Example.org,OZG;FIM,active,,2024-05-01,Altliste Messe 2024\n\
         \"bert@example.org\",,pending,taeglich,,\n\
         carla@example.org,,unsubscribed,,,\n\
         kaputt,,active,,,\n\
         dora@example.org,,aktiv,,,\n\
         emil@example.org,,active,monatlich,,\n",
    )
    .unwrap();
    let (code, _, err) = out(&site.herold(&["subscribers", "import", "alt.csv"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("alt.csv:5: the address must have the form"),
        "{err}"
    );
    assert!(
        err.contains("alt.csv:6: status `aktiv` is not active, pending or unsubscribed"),
        "{err}"
    );
    assert!(
        err.contains("alt.csv:7: there is no [[digest]] named `monatlich`"),
        "{err}"
    );
    assert!(
        err.contains("added=2") && err.contains("unsubscribed=1"),
        "{err}"
    );

    let (code, list, _) = out(&site.herold(&["subscribers", "list"]));
    assert_eq!(code, Some(0));
    assert_eq!(
        list,
        "anna@example.org\tactive\tOZG;FIM\twoechentlich\nbert@example.org\tpending\t\ttaeglich\n"
    );
    let (_, json, _) = out(&site.herold(&["subscribers", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    let (code, export, _) = out(&site.herold(&["subscribers", "export", "anna@example.org"]));
    assert_eq!(code, Some(0));
    let e: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert_eq!(e["status"], "active");
    assert_eq!(e["consent_log"][0]["event"], "import");
    assert_eq!(e["consent_log"][0]["source"], "Altliste Messe 2024");
    assert_eq!(e["consent_log"][0]["at"], "2024-04-30T22:00:00+00:00");

    // The unsubscribed row blocks the address: a later import does not bring it back.
    std::fs::write(
        site.path("neu.csv"),
        "email,topics,status,digests\ncarla@example.org,,active,\n",
    )
    .unwrap();
    let (_, _, err) = out(&site.herold(&["subscribers", "import", "neu.csv"]));
    assert!(err.contains("skipped_blocked=1"), "{err}");

    let (code, _, _) = out(&site.herold(&["subscribers", "remove", "anna@example.org"]));
    assert_eq!(code, Some(0));
    let (_, list, _) = out(&site.herold(&["subscribers", "list"]));
    assert!(
        !list.contains("anna"),
        "unsubscribed addresses are never shown: {list}"
    );
    let (code, export, _) = out(&site.herold(&["subscribers", "export", "anna@example.org"]));
    assert_eq!(code, Some(0));
    assert!(
        export.contains("\"status\": \"unsubscribed\"") && !export.contains("OZG"),
        "{export}"
    );
    let (code, _, err) = out(&site.herold(&["subscribers", "export", "niemand@example.org"]));
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn add_sends_a_confirmation_mail_or_records_imported_consent() {
    let sink = SmtpSink::start();
    let site = site_with_mail(&sink);
    let (code, _, err) =
        out(&site.herold(&["subscribers", "add", "frieda@example.org", "--topic", "OZG"]));
    assert_eq!(code, Some(0), "{err}");
    let mail = sink.next();
    assert_eq!(mail.to, ["frieda@example.org"]);
    assert!(mail.link("http://").contains("/confirm/"));
    let (code, _, err) = out(&site.herold(&[
        "subscribers",
        "add",
        "gustav@example.org",
        "--consented-at",
        "2025-01-02",
        "--source",
        "Papierformular",
    ]));
    assert_eq!(code, Some(0), "{err}");
    sink.assert_none();
    let (_, list, _) = out(&site.herold(&["subscribers", "list"]));
    assert_eq!(
        list,
        "frieda@example.org\tpending\tOZG\twoechentlich\ngustav@example.org\tactive\t\twoechentlich\n"
    );
    let (code, _, err) = out(&site.herold(&["subscribers", "add", "nicht gültig"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("`nicht gültig`"), "{err}");
}
