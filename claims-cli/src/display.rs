//! Human-readable views of claims, shared by every command-line tool that shows them.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::caps;
use crate::error::Result;
use crate::jwt::Claims;
use crate::provider::{ProviderMetadata, VerifiedProviderClaims};
use crate::verify::Inspection;

/// One labelled line (or block, if the value has several lines) of a table.
pub type Row = (&'static str, String);

/// The rows `inspect` shows for an actor module.
pub fn actor_rows(ins: &Inspection, with_jwt: bool) -> Vec<Row> {
    let c = &ins.claims;
    let meta = c.metadata.clone().unwrap_or_default();
    let caps_list = meta
        .caps
        .unwrap_or_default()
        .into_iter()
        .map(|id| match caps::describe(&id) {
            Some(name) => format!("{id} ({name})"),
            None => id,
        })
        .collect::<Vec<_>>();
    let hash_line = if meta.hash == ins.computed_hash {
        format!("{} (matches)", meta.hash)
    } else {
        format!("{} (module hashes to {})", meta.hash, ins.computed_hash)
    };
    let mut rows = vec![
        ("Actor", meta.name.unwrap_or_else(|| "(unnamed)".into())),
        ("Module key", c.subject.clone()),
        ("Issuer", c.issuer.clone()),
        ("Issued", describe_time(Some(c.issued_at), "unknown")),
        ("Expires", describe_time(c.expires, "never")),
        ("Not before", describe_time(c.not_before, "immediately")),
        ("Capabilities", list_or_none(&caps_list)),
        ("Tags", list_or_none(meta.tags.as_deref().unwrap_or(&[]))),
        ("Version", meta.ver.unwrap_or_else(|| "-".into())),
        ("Revision", meta.rev.map_or("-".into(), |r| r.to_string())),
        ("Call alias", meta.call_alias.unwrap_or_else(|| "-".into())),
        ("Module hash", hash_line),
        ("Token id", c.id.clone()),
        ("Section", ins.section.clone()),
        ("Status", status(&ins.verification)),
    ];
    if with_jwt {
        rows.push(("JWT", ins.jwt.clone()));
    }
    rows
}

/// The rows `inspect` shows for a provider token.
pub fn provider_rows(
    claims: &Claims<ProviderMetadata>,
    verification: &Result<VerifiedProviderClaims>,
) -> Vec<Row> {
    let meta = claims.metadata.clone().unwrap_or_default();
    let targets = meta
        .target_hashes
        .iter()
        .map(|(t, h)| format!("{t} {h}"))
        .collect::<Vec<_>>();
    vec![
        ("Provider", meta.name.unwrap_or_else(|| "(unnamed)".into())),
        ("Contract", meta.capid),
        ("Vendor", meta.vendor),
        ("Service key", claims.subject.clone()),
        ("Issuer", claims.issuer.clone()),
        ("Issued", describe_time(Some(claims.issued_at), "unknown")),
        ("Expires", describe_time(claims.expires, "never")),
        (
            "Not before",
            describe_time(claims.not_before, "immediately"),
        ),
        ("Version", meta.ver.unwrap_or_else(|| "-".into())),
        ("Revision", meta.rev.map_or("-".into(), |r| r.to_string())),
        ("Targets", list_or_none(&targets)),
        ("Token id", claims.id.clone()),
        ("Status", status(verification)),
    ]
}

fn status<T>(r: &Result<T>) -> String {
    match r {
        Ok(_) => "valid".into(),
        Err(e) => format!("INVALID: {e}"),
    }
}

/// Formats rows as an aligned two-column table; `bold` makes the labels bold (terminals).
pub fn format_rows(rows: &[Row], bold: bool) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        let _ = if bold {
            writeln!(out, "\x1b[1m{key:<width$}\x1b[0m  {first}")
        } else {
            writeln!(out, "{key:<width$}  {first}")
        };
        for line in lines {
            let _ = writeln!(out, "{:<width$}  {line}", "");
        }
    }
    out
}

/// A Unix time as RFC 3339 plus a rough relative time ("in 3 days"), or `none` if absent.
pub fn describe_time(t: Option<u64>, none: &str) -> String {
    let Some(secs) = t else {
        return none.to_string();
    };
    let at = UNIX_EPOCH + Duration::from_secs(secs.min(253_402_300_799));
    let rel = match at.duration_since(SystemTime::now()) {
        Ok(d) => format!("in {}", rough(d)),
        Err(e) => format!("{} ago", rough(e.duration())),
    };
    format!("{} ({rel})", humantime::format_rfc3339_seconds(at))
}

fn rough(d: Duration) -> String {
    let s = d.as_secs();
    let (unit, name) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(u, _)| s >= *u)
        .unwrap_or((1, "second"));
    let n = s / unit;
    format!("{n} {name}{}", if n == 1 { "" } else { "s" })
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join("\n")
    }
}
