//! The dashboard at `/`: server-rendered pages (askama templates, built into the binary with
//! their stylesheet and script), for a person watching lanes. Each page reads what the API
//! reads (the table through an index walk, the active server's Router and Supervisor), and
//! a small script re-fetches the page every 2 s and swaps its `<main>`, so it updates live
//! without a reload. Its buttons (Cancel, Retry, Drain) post to the JSON API.
//!
//! With `LANES_API_TOKEN` set, a browser user gives the token once at `/ui/login`; it is kept
//! in an `HttpOnly`, `SameSite=Strict` cookie. Pages (reads) accept it alone; a write accepts
//! it only with the header `X-Lanes-Dashboard` that the page's script sends, which a form on
//! another site, or on another port of the same host, cannot add.

mod fleet;
mod pages;
mod views;

use super::{asset, may_read, ApiError, ApiState};
use actix_web::{
    cookie::{Cookie, SameSite},
    http::header,
    web, HttpRequest, HttpResponse,
};
use askama::Template;
use serde::Deserialize;

/// The cookie that carries the token for a browser.
pub(super) const TOKEN_COOKIE: &str = "lanes_token";

const CSS: &str = include_str!("app.css");
const JS: &str = include_str!("app.js");

/// Adds the dashboard's routes.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(pages::overview))
        .route("/ui/jobs", web::get().to(pages::jobs))
        .route("/ui/jobs/{id}", web::get().to(pages::job))
        .route("/ui/lanes", web::get().to(fleet::lanes))
        .route("/ui/workers", web::get().to(fleet::workers))
        .route("/ui/resources", web::get().to(fleet::resource))
        .route("/ui/dead", web::get().to(fleet::dead))
        .route("/ui/schedules", web::get().to(fleet::schedules))
        .route("/ui/find", web::get().to(pages::find))
        .route("/ui/login", web::get().to(login_form))
        .route("/ui/login", web::post().to(login))
        .route("/ui/app.css", web::get().to(|| asset(CSS, "text/css", 300)))
        .route(
            "/ui/app.js",
            web::get().to(|| asset(JS, "text/javascript", 300)),
        );
}

/// A rendered page, or the way to the login form when the token is needed.
type Page = Result<HttpResponse, ApiError>;

/// Renders a page.
fn html(page: impl Template) -> Page {
    let body = page
        .render()
        .map_err(|e| ApiError::Unavailable(format!("rendering the page failed: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

/// When the browser may not read: the way to the login form.
fn refused(state: &ApiState, req: &HttpRequest) -> Option<HttpResponse> {
    may_read(state, req).err().map(|_| to_login(req))
}

fn to_login(req: &HttpRequest) -> HttpResponse {
    let next = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let to = format!(
        "/ui/login?next={}",
        percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
    );
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

#[derive(Deserialize)]
struct Login {
    token: Option<String>,
    next: Option<String>,
}

async fn login_form(state: web::Data<ApiState>, query: web::Query<Login>) -> Page {
    html(views::LoginPage {
        c: views::Chrome::new("login", &state),
        next: safe_next(query.next.as_deref()),
        failed: false,
    })
}

/// Takes the token from the form; a right one is kept in the cookie.
async fn login(state: web::Data<ApiState>, form: web::Form<Login>) -> Page {
    let next = safe_next(form.next.as_deref());
    let given = form.token.clone().unwrap_or_default();
    // Any token it knows logs in; what the page lets it do is checked per scope.
    let right = {
        let tokens = state.tokens.read().expect("tokens lock");
        tokens.is_empty() || tokens.holder(&given).is_some()
    };
    if !right {
        return html(views::LoginPage {
            c: views::Chrome::new("login", &state),
            next,
            failed: true,
        });
    }
    let cookie = Cookie::build(TOKEN_COOKIE, given)
        .path("/")
        .http_only(true)
        .secure(state.https)
        .same_site(SameSite::Strict)
        .finish();
    Ok(HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, next))
        .finish())
}

/// Only a path of this server, else the overview: it starts with one `/` followed by a path
/// character, and holds no backslash or control character (browsers read `/\host` and
/// `/<tab>/host` as `//host`).
fn safe_next(next: Option<&str>) -> String {
    let local = |n: &str| {
        n.starts_with('/')
            && !n[1..].starts_with(['/', '\\'])
            && !n.contains('\\')
            && !n.chars().any(char::is_control)
    };
    match next {
        Some(n) if local(n) => n.to_owned(),
        _ => "/".to_owned(),
    }
}

/// Whether the browser holds the token for actions (the buttons show either way; the API
/// answers 401 without it).
fn may_act(state: &ApiState, req: &HttpRequest) -> bool {
    super::check(state, req, super::tokens::Scope::Operate, true).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn login_returns_only_to_this_server() {
        assert_eq!(
            super::safe_next(Some("/ui/jobs?state=failed")),
            "/ui/jobs?state=failed"
        );
        assert_eq!(super::safe_next(Some("//evil.example/x")), "/");
        assert_eq!(super::safe_next(Some("https://evil.example")), "/");
        assert_eq!(super::safe_next(None), "/");
        assert_eq!(super::safe_next(Some("/\\evil.example")), "/");
        assert_eq!(super::safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(super::safe_next(Some("/ui/x\\y")), "/");
        assert_eq!(super::safe_next(Some("/")), "/");
    }
}
