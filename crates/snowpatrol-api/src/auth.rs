//! Bearer tokens with two scopes. `read` reads everything; `operate` also triggers, cancels, clears, marks,
//! records events and acknowledges incidents.
//!
//! - With no token configured, reads are open (the default bind is loopback) and every mutation is refused
//!   with a problem that says how to configure one: a mutating endpoint always requires a token.
//! - With any token configured, every request needs `Authorization: Bearer <token>`; the operate token also
//!   reads.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither the comparison's timing nor a `Debug`
//! print reveals them (only digests are kept).

use crate::problem::Problem;
use axum::http::{HeaderMap, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// What a request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Operate,
}

/// The configured tokens, as digests.
#[derive(Clone, Default)]
pub struct ApiTokens {
    read: Option<[u8; 32]>,
    operate: Option<[u8; 32]>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokens")
            .field("read", &self.read.map(|_| "[set]"))
            .field("operate", &self.operate.map(|_| "[set]"))
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal digests, compared without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    equal_in_constant_time(a, b)
}

/// Whether two secrets (digests, CSRF tokens) are equal, compared without an early exit so the time taken
/// does not tell how much of a guess was right; only the length may differ in time.
pub fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiTokens {
    /// `[api] read_token` and `operate_token` (each from the environment, a file or the TOML).
    pub fn new(read: Option<&SecretString>, operate: Option<&SecretString>) -> ApiTokens {
        let keep = |t: Option<&SecretString>| {
            t.map(|t| t.expose_secret().trim().to_string())
                .filter(|t| !t.is_empty())
                .map(|t| digest(&t))
        };
        ApiTokens {
            read: keep(read),
            operate: keep(operate),
        }
    }

    fn any(&self) -> bool {
        self.read.is_some() || self.operate.is_some()
    }

    /// The scope the request's bearer token grants (`None` without a valid one).
    fn granted(&self, headers: &HeaderMap) -> Option<Scope> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        self.scope_of(token)
    }

    /// The scope `token` grants, if any (the console reads it from its session cookie).
    pub fn scope_of(&self, token: &str) -> Option<Scope> {
        let d = digest(token.trim());
        if self.operate.as_ref().is_some_and(|o| same(o, &d)) {
            Some(Scope::Operate)
        } else if self.read.as_ref().is_some_and(|r| same(r, &d)) {
            Some(Scope::Read)
        } else {
            None
        }
    }

    /// Whether any token is configured (then every request needs one).
    pub fn required(&self) -> bool {
        self.any()
    }

    /// Whether an operate token is configured (without one, nothing can be changed).
    pub fn can_operate(&self) -> bool {
        self.operate.is_some()
    }

    /// Allows the request or says why not (401 without a valid token, 403 with one of too small a scope).
    pub fn authorize(&self, headers: &HeaderMap, needed: Scope) -> Result<(), Problem> {
        if needed == Scope::Operate && self.operate.is_none() {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "this endpoint changes state and needs an operate token, and none is configured: set [api] \
                 operate_token (or SNOWPATROL__API__OPERATE_TOKEN, or ..._FILE)",
            ));
        }
        if needed == Scope::Read && !self.any() {
            return Ok(());
        }
        match self.granted(headers) {
            Some(scope) if scope >= needed => Ok(()),
            Some(_) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "this endpoint changes state: the read token cannot use it, the operate token can",
            )),
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "send `Authorization: Bearer <token>` with the [api] read_token or operate_token",
            )),
        }
    }
}
