//! Database URLs carry passwords in more places than `user:pass@`: sqlx also reads `?password=`, operators
//! paste libpq key=value strings, and TLS settings add `sslpassword`. Everything that prints a URL goes through
//! [`redact_url`], and nothing that embeds the secret (the raw URL, or an error text of a driver that may quote
//! it) leaves this crate without [`redact_text`].

/// What replaces a secret in printed URLs and messages.
pub const REDACTED: &str = "***";

/// True for a connection parameter that holds a secret: `password`, `sslpassword`, `ssl-password`,
/// `PGPASSWORD`, ... in any case. Matching the substring errs on the side of hiding.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("passwd") || k == "pwd" || k == "pass"
}

/// Percent-decoding of a URL component; `plus_as_space` for `application/x-www-form-urlencoded` queries.
/// Invalid escapes are kept as written (they cannot hide a secret from the comparison below).
pub(crate) fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL split at the places secrets live. `scheme://[userinfo@]authority[/path][?query][#fragment]`.
struct UrlParts<'a> {
    /// `postgres://`, including the separator.
    scheme: &'a str,
    user: Option<&'a str>,
    /// Still percent-encoded.
    password: Option<&'a str>,
    /// Host, port, path: everything up to the query.
    rest: &'a str,
    /// Without the `?`.
    query: Option<&'a str>,
    /// With the `#`.
    fragment: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let sep = url.find("://")?;
    let (scheme, after) = url.split_at(sep + 3);
    let (before_fragment, fragment) = match after.find('#') {
        Some(i) => after.split_at(i),
        None => (after, ""),
    };
    let (main, query) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
        None => (before_fragment, None),
    };
    // The userinfo ends at the last `@` before the query: a password may contain an unescaped `@` or `/`.
    let (user, password, rest) = match main.rfind('@') {
        Some(i) => {
            let userinfo = &main[..i];
            let rest = &main[i + 1..];
            match userinfo.split_once(':') {
                Some((u, p)) => (Some(u), Some(p), rest),
                None => (Some(userinfo), None, rest),
            }
        }
        None => (None, None, main),
    };
    Some(UrlParts {
        scheme,
        user,
        password,
        rest,
        query,
        fragment,
    })
}

/// The query with every secret parameter's value replaced (or, with `drop`, removed).
fn filter_query(query: &str, drop: bool) -> String {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
            if is_secret_key(&percent_decode(k, true)) {
                (!drop).then(|| format!("{k}={REDACTED}"))
            } else {
                Some(pair.to_string())
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn join_url(p: &UrlParts<'_>, password: Option<&str>, query: Option<String>) -> String {
    let mut out = String::from(p.scheme);
    if let Some(u) = p.user {
        out.push_str(u);
        if let Some(pw) = password {
            out.push(':');
            out.push_str(pw);
        }
        out.push('@');
    }
    out.push_str(p.rest);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(&q);
    }
    out.push_str(p.fragment);
    out
}

/// Hides every password of a database URL so it can be logged: the userinfo password (`user:***@host`, shown
/// so even without one), every
/// query parameter named like a password (`password`, `sslpassword`, in any case, percent-encoded or not), and,
/// for a libpq key=value string (`host=db password=secret`), its password values.
pub fn redact_url(url: &str) -> String {
    match split_url(url) {
        Some(p) => {
            let query = p.query.map(|q| filter_query(q, false));
            // `user:***@` whether or not a password was given: a log does not even tell that much.
            join_url(&p, Some(REDACTED), query)
        }
        None => redact_key_values(url).0,
    }
}

/// `key=value` pairs separated by whitespace, values optionally in single quotes (libpq's syntax): the string
/// with secret values replaced, and those values.
fn redact_key_values(s: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(s.len());
    let mut secrets = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let (head, tail) = rest.split_at(eq);
        let key = head
            .trim_end()
            .rsplit(char::is_whitespace)
            .next()
            .unwrap_or("");
        out.push_str(head);
        out.push('=');
        let after = &tail[1..];
        let value = after.trim_start();
        out.push_str(&after[..after.len() - value.len()]);
        let len = value_len(value);
        if is_secret_key(key) {
            out.push_str(REDACTED);
            secrets.push(value[..len].to_string());
        } else {
            out.push_str(&value[..len]);
        }
        rest = &value[len..];
    }
    out.push_str(rest);
    (out, secrets)
}

/// Length of a libpq value at the start of `s`: a quoted string (with `\'` escapes) or up to whitespace.
fn value_len(s: &str) -> usize {
    if let Some(inner) = s.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return i + 2,
                _ => escaped = false,
            }
        }
        s.len()
    } else {
        s.find(char::is_whitespace).unwrap_or(s.len())
    }
}

/// Every secret value a URL carries, as written and decoded, longest first (so a secret that contains
/// another is replaced whole).
fn secret_values(url: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut add = |raw: &str, plus_as_space: bool| {
        let raw = raw.trim_matches('\'');
        if !raw.is_empty() {
            values.push(raw.to_string());
            values.push(percent_decode(raw, plus_as_space));
        }
    };
    match split_url(url) {
        Some(p) => {
            if let Some(pw) = p.password {
                add(pw, false);
            }
            for pair in p.query.unwrap_or("").split('&') {
                if let Some((k, v)) = pair.split_once('=')
                    && is_secret_key(&percent_decode(k, true))
                {
                    add(v, true);
                }
            }
        }
        None => {
            for v in redact_key_values(url).1 {
                add(&v, false);
            }
        }
    }
    values.retain(|v| !v.is_empty());
    values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    values.dedup();
    values
}

/// `text` with every secret of `url` replaced by `***`, for messages of drivers that may quote the URL or a
/// password (sqlx's errors, a TLS library's).
pub fn redact_text(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    for secret in secret_values(url) {
        out = out.replace(&secret, REDACTED);
    }
    out
}

/// A PostgreSQL URL without its secrets, and the password it carried, so the driver is handed the password
/// through its API and never sees (or logs: sqlx warns about unknown parameters with their values) the rest.
/// A `password` query parameter (in any case) wins over the userinfo password, as in sqlx; other secret parameters
/// (`sslpassword`, which sqlx does not support) are dropped and named in the returned list.
pub(crate) fn split_password(url: &str) -> (String, Option<String>, Vec<String>) {
    let Some(p) = split_url(url) else {
        return (url.to_string(), None, vec![]);
    };
    let mut password = p.password.map(|pw| percent_decode(pw, false));
    let mut dropped = Vec::new();
    for pair in p.query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k, true);
        if key.eq_ignore_ascii_case("password") {
            password = Some(percent_decode(v, true));
        } else if is_secret_key(&key) {
            dropped.push(key);
        }
    }
    let query = p.query.map(|q| filter_query(q, true));
    (join_url(&p, None, query), password, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t";

    fn assert_hidden(url: &str) -> String {
        let r = redact_url(url);
        assert!(!r.contains(SECRET), "{url} -> {r}");
        assert!(
            !r.contains("s3cr"),
            "a part of the secret is visible: {url} -> {r}"
        );
        r
    }

    #[test]
    fn userinfo_password() {
        assert_eq!(
            assert_hidden("postgres://u:s3cr3t@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        // An unescaped `@` or `/` in the password does not leave a piece of it behind.
        assert_eq!(
            assert_hidden("postgres://u:s3cr3t@x/y@db/x"),
            "postgres://u:***@db/x"
        );
        assert_eq!(
            assert_hidden("postgresql://u:s3cr3t%40%2F@db/x?sslmode=require"),
            "postgresql://u:***@db/x?sslmode=require"
        );
        // No password: the log does not say so either.
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u:***@db/x");
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            redact_url("sqlite:///var/lib/s.db?mode=rwc"),
            "sqlite:///var/lib/s.db?mode=rwc"
        );
    }

    #[test]
    fn query_passwords_in_any_case_position_and_encoding() {
        for url in [
            "postgres://u@db/x?password=s3cr3t",
            "postgres://u@db/x?sslmode=disable&password=s3cr3t&application_name=a",
            "postgres://u@db/x?PASSWORD=s3cr3t",
            "postgres://u@db/x?Password=s3cr3t#frag",
            "postgres://u@db/x?pass%77ord=s3cr3t",
            "postgres://u@db/x?password=s3cr3t%26more",
            "postgres://u@db/x?sslpassword=s3cr3t&sslkey=/k.pem",
            "postgres://u@db/x?ssl-password=s3cr3t",
            "postgres://u:s3cr3t@db/x?password=s3cr3t",
        ] {
            let r = assert_hidden(url);
            assert!(r.contains(REDACTED), "{url} -> {r}");
        }
        assert_eq!(
            redact_url("postgres://u@db/x?sslmode=disable&password=s3cr3t&application_name=a"),
            "postgres://u:***@db/x?sslmode=disable&password=***&application_name=a"
        );
    }

    #[test]
    fn key_value_strings() {
        assert_eq!(
            assert_hidden("host=db user=u password=s3cr3t dbname=x"),
            "host=db user=u password=*** dbname=x"
        );
        assert_eq!(
            assert_hidden("host=db password = 's3cr3t with spaces' sslpassword=s3cr3t2"),
            "host=db password = *** sslpassword=***"
        );
    }

    #[test]
    fn texts_lose_every_form_of_the_secret() {
        let url = "postgres://u:s3cr3t%21@db/x?sslpassword=s3cr3t2";
        let msg = format!("error with {url}: password s3cr3t! rejected; ssl s3cr3t2");
        let r = redact_text(&msg, url);
        assert!(!r.contains("s3cr3t"), "{r}");
        let url = "postgres://u@db/x?password=a+b%20c";
        let r = redact_text("bad password `a b c`", url);
        assert!(!r.contains("a b c"), "{r}");
    }

    #[test]
    fn the_driver_gets_the_password_apart() {
        let (u, p, dropped) = split_password(
            "postgres://u:first@db/x?sslmode=disable&password=s3%2Fcr&sslpassword=k",
        );
        assert_eq!(u, "postgres://u@db/x?sslmode=disable");
        assert_eq!(p.as_deref(), Some("s3/cr"));
        assert_eq!(dropped, vec!["sslpassword".to_string()]);
        let (u, p, _) = split_password("postgres://u:p%40ss@db/x");
        assert_eq!(u, "postgres://u@db/x");
        assert_eq!(p.as_deref(), Some("p@ss"));
    }
}
