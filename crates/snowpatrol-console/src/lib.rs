//! The web console: server-rendered HTML pages under `/ui` for the people who operate Snowpatrol and those who
//! act on what it finds, served by the daemon next to the API.
//!
//! Pages: jobs (schedule, last and next run, pending events, why it will or will not run, trigger), a runs grid
//! like Airflow's, run detail (task instances with tries, workers and notes, lineage, logs, and cancel, clear
//! and mark), datasets, models, incidents (filters; each with its daily usage chart, the model's expected band,
//! the anomalous days marked, and acknowledge buttons) and the alert outbox.
//!
//! Why server-rendered HTML (maud) and server-side SVG charts rather than a JavaScript application with a
//! charting library: every page works offline and without a build step, the binary embeds the one stylesheet
//! it needs, a chart is a few kilobytes of SVG that prints and screenshots exactly as it renders, and there is
//! no client code to keep in step with the API. Each point of a chart carries a tooltip (`<title>`).
//!
//! Security: with tokens configured (`[api] read_token`, `operate_token`), a person signs in with one; it is
//! kept in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/ui`. Pages need the read scope, actions the
//! operate scope, and every action form carries a CSRF token derived from the session's token (a page of
//! another site can neither send the cookie nor know the token). Without any token configured, pages are open
//! (the default bind is loopback) and actions are refused, as in the API.

mod chart;
mod pages;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use sha2::{Digest, Sha256};
use snowpatrol_api::{ApiTokens, Scope};
use snowpatrol_engine::Engine;
use snowpatrol_pipeline::PipelineStore;
use std::sync::Arc;

/// The console's stylesheet, embedded.
const CSS: &str = include_str!("../assets/console.css");
/// The console's icon, embedded (pages link it, so browsers do not ask for a missing `/favicon.ico`).
const FAVICON: &str = include_str!("../assets/favicon.svg");
/// The session cookie holding the signed-in token.
const COOKIE: &str = "snowpatrol_session";

/// What the pages read and act through (the API's state: the same engine, store and tokens).
pub type ConsoleState = snowpatrol_api::ApiState;

/// The console's routes, to be mounted at the root of the daemon's HTTP server (they live under `/ui`).
pub fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/jobs") }))
        .route("/ui/console.css", get(css))
        .route("/ui/favicon.svg", get(favicon))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/{job}/trigger", post(pages::trigger))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/{run_id}", get(pages::run))
        .route("/ui/runs/{run_id}/{action}", post(pages::run_action))
        .route("/ui/datasets", get(pages::datasets))
        .route("/ui/models", get(pages::models))
        .route("/ui/incidents", get(pages::incidents))
        .route("/ui/incidents/{incident_id}", get(pages::incident))
        .route("/ui/incidents/{incident_id}/ack", post(pages::ack))
        .route("/ui/alerts", get(pages::alerts))
        .with_state(state)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        FAVICON,
    )
        .into_response()
}

/// Who is looking: the scope their session grants and the CSRF token their forms must carry.
pub(crate) struct Session {
    pub scope: Option<Scope>,
    pub csrf: String,
    /// Tokens are configured (pages need a session).
    pub required: bool,
    /// An operate token is configured (actions are possible at all).
    pub can_operate: bool,
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| {
            form_urlencoded::parse(format!("t={v}").as_bytes())
                .map(|(_, t)| t.into_owned())
                .next()
                .unwrap_or_default()
        })
}

/// The CSRF token of a session: a digest of its token, which only pages served to that session contain.
fn csrf_for(token: &str) -> String {
    let d = Sha256::digest(format!("snowpatrol-console-csrf:{token}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Session {
    fn of(tokens: &ApiTokens, headers: &HeaderMap) -> Session {
        let token = cookie_token(headers);
        let scope = token.as_deref().and_then(|t| tokens.scope_of(t));
        Session {
            csrf: token.as_deref().map(csrf_for).unwrap_or_default(),
            scope,
            required: tokens.required(),
            can_operate: tokens.can_operate(),
        }
    }

    /// May read pages.
    fn reads(&self) -> bool {
        !self.required || self.scope.is_some()
    }

    /// May act (operate scope) with this CSRF token from the form.
    pub(crate) fn check_action(&self, csrf: &str) -> Result<(), String> {
        if !self.can_operate {
            return Err(
                "actions need an operate token, and none is configured: set [api] operate_token"
                    .into(),
            );
        }
        if self.scope != Some(Scope::Operate) {
            return Err("actions need the operate token: sign in with it".into());
        }
        let same = snowpatrol_api::equal_in_constant_time(self.csrf.as_bytes(), csrf.as_bytes());
        if !same {
            return Err("the form is stale or did not come from this console (CSRF check failed); reload the page".into());
        }
        Ok(())
    }

    pub(crate) fn may_act(&self) -> bool {
        self.scope == Some(Scope::Operate)
    }
}

/// The session of a page request; without the read scope the request is sent to the sign-in page.
pub(crate) struct Reader(pub Session);

impl FromRequestParts<Arc<ConsoleState>> for Reader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Response> {
        let session = Session::of(&state.tokens, &parts.headers);
        if session.reads() {
            Ok(Reader(session))
        } else {
            Err(Redirect::to("/ui/login").into_response())
        }
    }
}

/// The session of an action request (its form is checked by the handler).
pub(crate) struct Actor(pub Session);

impl FromRequestParts<Arc<ConsoleState>> for Actor {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Response> {
        Ok(Actor(Session::of(&state.tokens, &parts.headers)))
    }
}

/// The navigation entries: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/ui/jobs", "Jobs"),
    ("/ui/runs", "Runs"),
    ("/ui/datasets", "Datasets"),
    ("/ui/models", "Models"),
    ("/ui/incidents", "Incidents"),
    ("/ui/alerts", "Alerts"),
];

/// A banner shown at the top of a page after an action (`?msg=` or `?err=`).
#[derive(Default, serde::Deserialize)]
pub(crate) struct Flash {
    pub msg: Option<String>,
    pub err: Option<String>,
}

/// Every page: the header with navigation, the banner, then `body`.
pub(crate) fn layout(
    title: &str,
    here: &str,
    session: &Session,
    flash: &Flash,
    body: Markup,
) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Snowpatrol" }
                link rel="stylesheet" href="/ui/console.css";
                link rel="icon" type="image/svg+xml" href="/ui/favicon.svg";
            }
            body {
                header {
                    a.brand href="/ui/jobs" { "Snowpatrol" }
                    @for (path, label) in NAV {
                        a class=(if *path == here { "here" } else { "" }) href=(path) { (label) }
                    }
                    @if session.scope.is_some() {
                        form.inline method="post" action="/ui/logout" { button type="submit" { "Sign out" } }
                    }
                }
                main {
                    @if let Some(m) = &flash.msg { div.banner.ok role="status" { (m) } }
                    @if let Some(e) = &flash.err { div.banner.err role="alert" { (e) } }
                    (body)
                }
            }
        }
    };
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

/// A state badge.
pub(crate) fn state_badge(state: &str) -> Markup {
    html! { span class={ "state " (state) } { (state) } }
}

/// The hidden CSRF field every action form carries.
pub(crate) fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// Where to go after an action: back to `to` with a banner.
pub(crate) fn back(to: &str, result: Result<String, String>) -> Response {
    let (key, text) = match result {
        Ok(m) => ("msg", m),
        Err(e) => ("err", e),
    };
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(key, &text)
        .finish();
    Redirect::to(&format!("{to}?{q}")).into_response()
}

/// A page that is not there.
pub(crate) fn not_found(session: &Session, what: String) -> Response {
    let mut r = layout(
        "Not found",
        "",
        session,
        &Flash::default(),
        html! { h1 { (what) } },
    );
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// The engine the pages operate.
pub(crate) fn engine(state: &ConsoleState) -> &Engine {
    &state.engine
}

/// The pipeline's tables.
pub(crate) fn store(state: &ConsoleState) -> &PipelineStore {
    &state.store
}
